"""``--benchmark-json PATH``: an existing PATH is refused before anything runs; the file is written whole.

pytest-benchmark (5.2.x) declares the option with ``argparse.FileType('wb')``, which opens, and so
empties, the file while pytest parses the command line: before any conftest or hook of ours runs,
even when the run is then refused. This plugin is loaded early (``-p bench.json_guard`` in
pyproject.toml's addopts), and as soon as pytest-benchmark has declared the option it swaps that
type for ``json_output_path``, which opens nothing: it refuses a path that exists (a result file is
never overwritten, as for ``results/``) and returns a ``JsonOutput`` that writes atomically.
"""

from __future__ import annotations

import argparse
import os

from gpusizer_common.atomic_file import replacing

OPTION = "--benchmark-json"


class JsonOutput:
    """What pytest-benchmark gets instead of an open file: ``with output as fh: fh.write(bytes)``
    writes a temporary file beside the path and renames it over the path on success only."""

    def __init__(self, path: str) -> None:
        self.name = path

    def __str__(self) -> str:
        return self.name

    def __fspath__(self) -> str:
        return self.name

    def __enter__(self):
        self._replacing = replacing(self.name)
        self._handle = open(self._replacing.__enter__(), "wb")
        return self._handle

    def __exit__(self, exc_type, *details) -> None:
        self._handle.close()
        self._replacing.__exit__(exc_type, *details)


def json_output_path(raw: str) -> JsonOutput:
    if os.path.lexists(raw):
        raise argparse.ArgumentTypeError(
            f"{raw} exists; an existing result file is never overwritten: give a new path (or remove it first)")
    directory = os.path.dirname(os.path.abspath(raw))
    if not os.path.isdir(directory):
        raise argparse.ArgumentTypeError(f"{raw}: folder {directory} does not exist; allowed: a new file in an existing folder")
    return JsonOutput(raw)


def _swap_type(parser) -> bool:
    # pytest keeps each declared option as an Argument (older pytest builds a fresh argparse parser
    # from them for every parse) and, since pytest 8.4, also in one argparse parser built as options
    # are declared: change the type in both, before the first parse that sees the option.
    swapped = False
    for group in [parser._anonymous, *parser._groups]:
        for argument in group.options:
            if OPTION in argument.names() and argument.type is not json_output_path:
                argument.type = argument._attrs["type"] = json_output_path
                swapped = True
    action = getattr(getattr(parser, "optparser", None), "_option_string_actions", {}).get(OPTION)
    if action is not None and action.type is not json_output_path:
        action.type = json_output_path
        swapped = True
    return swapped


def pytest_plugin_registered(plugin, manager) -> None:
    # Called for each plugin as it registers (and replayed for those before us): pytest-benchmark's
    # options exist right after its own registration, before pytest parses the command line with them.
    config = manager.get_plugin("pytestconfig")
    if config is not None:
        _swap_type(config._parser)
