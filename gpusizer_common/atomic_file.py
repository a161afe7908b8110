"""Writing a file so that it appears whole or not at all, readable by others.

The one writer for result files (bench/record/results.py, for results/ and --benchmark-json) and the report's outputs
(reports/): a reader, or a CI step that posts the file, never sees half of it, and a failed write
leaves the file that was there before (if any) as it was.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class replacing:
    """``with replacing(path) as tmp: <write tmp>``: a temporary file beside ``path`` (the same folder,
    so the rename is atomic) that replaces ``path`` on success and is removed on an error. Whether an
    existing ``path`` may be replaced at all is the caller's rule, checked before writing."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(name, 0o644)  # files for reading and sharing, not private like mkstemp's 0600
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
