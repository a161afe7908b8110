"""Finding and reading result files: every way a path or a file can be wrong, as one-line ``InputError``s.

A folder means the ``*.json`` directly inside it, in name order; nothing here is ever written.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from reports.errors import InputError


def expand_paths(paths: list[str]) -> list[str]:
    """Files as given, folders as their ``*.json`` in name order; each file once, in first-seen order."""
    if not paths:
        raise InputError("no result files given; pass result files or folders (e.g. results/)")
    files: list[str] = []
    seen: set[str] = set()
    for raw in paths:
        path = Path(raw)
        if not path.exists():
            raise InputError(f"path {raw}: does not exist; expected a result file or a folder of them")
        if path.is_dir():
            found = sorted(child for child in path.glob("*.json") if child.is_file())
            if not found:
                raise InputError(f"folder {raw}: has no *.json result files in it")
            candidates = [str(child) for child in found]
        elif path.is_file():
            candidates = [str(path)]
        else:
            raise InputError(f"path {raw}: is not a regular file or a folder")
        for candidate in candidates:
            key = os.path.realpath(candidate)
            if key not in seen:
                seen.add(key)
                files.append(candidate)
    return files


def read_json(path: str) -> object:
    try:
        raw = Path(path).read_bytes()
    except OSError as error:
        raise InputError(f"file {path}: cannot be read ({error.strerror or error})") from None
    if not raw.strip():
        raise InputError(f"file {path}: is empty; expected a result JSON written by `pytest bench/`")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"file {path}: is not JSON (not UTF-8 text); expected a result JSON from `pytest bench/`") \
            from None
    try:
        return json.loads(text)
    except RecursionError:
        raise InputError(f"file {path}: is nested too deeply to be a result file; expected a result JSON "
                         f"from `pytest bench/`") from None
    except json.JSONDecodeError as error:
        # A parse error at the very end of the text (or a string never closed) means the file stops
        # early: a copy cut short, rather than something that was never JSON.
        if error.pos >= len(text.rstrip()) or error.msg.startswith("Unterminated string"):
            raise InputError(f"file {path}: truncated JSON (the text ends at byte {len(raw)} before the "
                             f"document is closed); copy the file again") from None
        raise InputError(f"file {path}: is not JSON ({error.msg} at line {error.lineno} column {error.colno})") \
            from None
