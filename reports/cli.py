"""The ``gpusizer`` command. Each subcommand lives in its own module with ``add_arguments`` and ``run``."""

from __future__ import annotations

import argparse
import importlib
import sys

from reports.errors import EXIT_BAD_INPUT, InputError

# name -> (module, one-line help). A module provides add_arguments(parser) and run(args) -> int.
SUBCOMMANDS = {
    "report": ("reports.report_cmd", "build the HTML/Markdown/CSV report from result files"),
    "compare": ("reports.compare_cmd", "regression verdict: compare a current run against a baseline"),
    "fit": ("reports.fit_cmd", "will the model fit: GPUs x strategies x precisions, predicted peak memory per device"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's usage errors are bad input too: exit 2, one line
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {message}\n")


def _needs_package(package: str):
    def run(args: argparse.Namespace) -> int:
        raise InputError(f"needs the Python package {package!r}: pip install 'gpusizer[report]' (or make setup)")

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="gpusizer",
        description="Turn gpusizer result files (from `pytest bench/`) into answers: which GPU and setup to choose.",
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (module_name, help_text) in SUBCOMMANDS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as error:
            # An optional package (the `report` extra) is missing: say how to get it, in one line,
            # when that subcommand is used; the other subcommands and --help still work.
            sub.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
            sub.set_defaults(run=_needs_package(error.name))
            continue
        module.add_arguments(sub)
        sub.set_defaults(run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "run", None) is None:
        parser.print_help()
        return 0
    try:
        return args.run(args)
    except InputError as error:
        print(f"gpusizer {args.command}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
