"""The result file: claimed without ever replacing an existing file, rewritten atomically after each case."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from datetime import datetime, timezone
from pathlib import Path

from gpusizer_common.atomic_file import replacing


def default_result_name(now: datetime | None = None, host: str | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    host = host or socket.gethostname()
    safe_host = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in host) or "host"
    return f"{now.strftime('%Y%m%dT%H%M%SZ')}_{safe_host}.json"


def _json_default(value):
    """Objects pytest puts in a benchmark's params (a BenchCase) are written as their identity."""
    identity = getattr(value, "identity", None)
    return identity() if callable(identity) else repr(value)


def writable_folder_problem(directory: str | os.PathLike) -> str | None:
    """Why no file can be created in ``directory`` (made if missing), or None. Tried for real, by
    creating and removing a temporary file: permission bits say nothing for root or a read-only mount."""
    path = Path(directory)
    if path.exists() and not path.is_dir():
        return "is a file, not a folder"
    try:
        path.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=path, prefix=".gpusizer-write-check.")
        os.close(fd)
        os.unlink(probe)
    except OSError as error:
        return f"cannot create a file there ({error.strerror or error})"
    return None


class ResultFile:
    """A result file this run owns. The name is claimed with O_EXCL, so an existing file (from
    another run, or a concurrent one) is never touched: a taken name gets a -1, -2 ... suffix."""

    def __init__(self, directory: str | os.PathLike, name: str | None = None, exact: bool = False) -> None:
        self.directory = Path(directory)
        self.name = name or default_result_name()
        self.exact = exact  # --benchmark-json: that very name or nothing, never a suffixed one
        self.path: Path | None = None

    def claim(self) -> Path:
        if self.path is None:
            self.directory.mkdir(parents=True, exist_ok=True)
            stem, suffix = os.path.splitext(self.name)
            attempt = 0
            while True:
                candidate = self.directory / (f"{stem}-{attempt}{suffix}" if attempt else self.name)
                try:
                    os.close(os.open(candidate, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
                except FileExistsError:
                    if self.exact:
                        raise FileExistsError(f"{candidate} appeared during the run; it is left untouched") from None
                    attempt += 1
                    continue
                self.path = candidate
                break
        return self.path

    def write(self, payload: dict) -> Path:
        """Replace this run's file with ``payload`` in one step: a reader never sees half a file."""
        path = self.claim()
        with replacing(path) as tmp, open(tmp, "w", encoding="utf-8") as handle:
            json.dump(payload, handle, indent=2, ensure_ascii=True, default=_json_default)
            handle.write("\n")
        return path


BENCHMARK_JSON_OPTION = "--benchmark-json"


def benchmark_json_problem(value) -> str | None:
    """Why ``--benchmark-json VALUE`` cannot be this run's result file, or None.

    pytest-benchmark >= 5.3 declares the option as a plain path and opens nothing while the command
    line is parsed, so the check runs before anything is written: an existing file is refused (a
    result file is never overwritten, as in ``results/``) and the folder must exist. Older releases
    open (and so empty) the file during parsing; they are below the declared floor, and are named
    here rather than trusted.
    """
    if not isinstance(value, (str, os.PathLike)):
        return (f"{BENCHMARK_JSON_OPTION}: this pytest-benchmark opens the file while parsing the command line "
                "(releases before 5.3 do); allowed: pytest-benchmark >= 5.3 (pip install -U pytest-benchmark)")
    raw = os.fspath(value)
    if os.path.lexists(raw):
        return (f"{BENCHMARK_JSON_OPTION}: {raw} exists; an existing result file is never overwritten: "
                "give a new path (or remove it first)")
    directory = os.path.dirname(os.path.abspath(raw))
    if not os.path.isdir(directory):
        return f"{BENCHMARK_JSON_OPTION}: {raw}: folder {directory} does not exist; allowed: a new file in an existing folder"
    return None
