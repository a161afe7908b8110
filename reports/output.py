"""Writing the command's outputs: each file appears whole or not at all, readable by others."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path


class replacing:
    """A temporary file beside ``path`` that replaces it on success: no half-written output is left,
    and a CI step that posts the file never sees half of it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def __enter__(self) -> Path:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(name, 0o644)  # outputs are for reading and sharing, not private like mkstemp's 0600
        self.tmp = Path(name)
        return self.tmp

    def __exit__(self, exc_type, *_) -> None:
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            self.tmp.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
