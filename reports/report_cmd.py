"""``gpusizer report``: result files of any number of machines and runs -> a ranked, explained answer.

    gpusizer report results/ other-machine/*.json --prices prices.csv -o report.html

Writes the HTML report, a Markdown summary beside it (same name, .md) and a CSV of the setups table
(.csv). Inputs are only read; an output path that is one of the inputs is refused.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
from pathlib import Path

from gpusizer_common import link_rates
from gpusizer_common.atomic_file import replacing, write_text
from reports.errors import InputError

DEFAULT_TARGET_SAMPLES = 1_000_000_000  # one large round number; shown in the report
DEFAULT_OUTPUT = "reports-out/report.html"  # the folder `make bench` and `make report` write to


def _positive_number(option: str):
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{option} {raw!r} is not a number; allowed: a number > 0") from None
        if not (math.isfinite(value) and value > 0):
            raise argparse.ArgumentTypeError(f"{option} {raw!r}; allowed: a number > 0")
        return value

    return parse


def _link_rates(raw: str) -> tuple[float, ...]:
    try:
        rates = link_rates.parse_internode_gbps(raw)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error).removeprefix("--internode-gbps: ")) from None
    if not rates:
        raise argparse.ArgumentTypeError(f"empty; allowed: {link_rates.ALLOWED}")
    return rates


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="result files (results/*.json from `pytest bench/`) or folders of them; any number of "
                             "machines and runs")
    parser.add_argument("--prices", metavar="CSV",
                        help="prices you pay: columns match, price_per_hour, per (gpu|instance), source, date "
                             "[, currency]; see examples/prices.example.csv. Without it cost is not judged")
    parser.add_argument("-o", "--output", default=DEFAULT_OUTPUT, metavar="HTML",
                        help=f"the HTML report; the .md summary and .csv table are written beside it "
                             f"(default: {DEFAULT_OUTPUT})")
    parser.add_argument("--force", action="store_true",
                        help="replace the HTML, .md and .csv outputs where they exist (without it, any existing one "
                             "is refused before anything is written)")
    parser.add_argument("--target-samples", type=_positive_number("--target-samples"),
                        default=float(DEFAULT_TARGET_SAMPLES), metavar="N",
                        help=f"samples of a training run to cost and time (default: {DEFAULT_TARGET_SAMPLES:.0e})")
    parser.add_argument("--budget", type=_positive_number("--budget"), metavar="AMOUNT",
                        help="the most to spend on training the target samples, in the prices' currency (a total, "
                             "not per hour); adds the objective 'fastest within the budget'. Needs --prices")
    parser.add_argument("--internode-gbps", type=_link_rates, default=(), metavar="RATES",
                        help="comma-separated inter-node link rates in Gbit/s (> 0, up to 100000) for the scaling "
                             "projection, e.g. 100,400 (default: the rates the runs were given with "
                             "`pytest bench/ --internode-gbps`)")
    parser.add_argument("--fit-gpus", metavar="NAMES",
                        help="comma-separated GPU names (e.g. H100-80GB,L4,A10G): adds a table of whether each "
                             "measured workload is predicted to fit them; `gpusizer fit --help` has the sizing")


def output_paths(html_path: str) -> dict[str, Path]:
    html_file = Path(html_path)
    if html_file.suffix.lower() not in (".html", ".htm"):
        raise InputError(f"output {html_path}: the report is HTML; allowed: a file name ending in .html")
    return {"html": html_file, "markdown": html_file.with_suffix(".md"), "csv": html_file.with_suffix(".csv")}


def _fit_gpus(raw: str | None):
    if raw is None:
        return None
    from sizing.gpus import parse_gpu_names

    try:
        return parse_gpu_names("--fit-gpus", raw)
    except ValueError as error:
        raise InputError(str(error)) from None


def check_outputs(outputs: dict[str, Path], input_files: list[str], force: bool = False) -> None:
    """Refuse to write over an input (or anything that is not a plain file) before any work is done.

    One rule for all three files: one that exists is refused unless --force, since `-o notes.html`
    also writes notes.md and notes.csv, which may well be the user's own files."""
    inputs = {os.path.realpath(path) for path in input_files}
    for path in outputs.values():
        if os.path.realpath(path) in inputs:
            raise InputError(f"output {path}: is one of the input files; choose another -o so inputs stay untouched")
        if path.exists() and not path.is_file():
            raise InputError(f"output {path}: exists and is not a file; allowed: a new or existing file path")
        if path.exists() and not force:
            raise InputError(f"output {path}: exists; -o {outputs['html']} writes {', '.join(map(str, outputs.values()))}: "
                             f"give --force to replace them, or another -o")


def missing_packages() -> list[str]:
    """The report's optional dependencies (the `report` extra) that are not installed; probed, not imported."""
    from importlib.util import find_spec

    return [name for name in ("numpy", "pandas", "plotly") if find_spec(name) is None]


def run(args: argparse.Namespace) -> int:
    missing = missing_packages()
    if missing:  # bad input like any other: exit 2, one line (the command's own imports need none of them)
        raise InputError(f"needs the Python package(s) {', '.join(map(repr, missing))}: "
                         f"pip install 'gpusizer[report]' (or make setup)")
    from reports import step_breakdown
    from reports.analyse import summarise
    from reports.answer import build_answer
    from reports.figures import build_charts
    from reports.load import load_results
    from reports.prices import load_prices
    from reports.recommend import recommend
    from reports.render_html import render_html
    from reports.render_markdown import render_markdown
    from reports.result_files import expand_paths
    from reports.setups_table import write_csv
    from reports.words import ReportContext

    outputs = output_paths(args.output)
    fit_gpus = _fit_gpus(args.fit_gpus)
    if args.budget is not None and not args.prices:
        raise InputError("--budget: needs --prices (a budget can only be checked against priced setups)")
    input_files = expand_paths(args.paths)
    check_outputs(outputs, input_files + ([args.prices] if args.prices else []), force=args.force)
    results = load_results(input_files)
    for ignored in results.ignored:
        print(f"ignored: {ignored}: it measured nothing (every case skipped or failed)")
    prices = load_prices(args.prices) if args.prices else None

    setups = summarise(results, prices, args.target_samples)
    recommendation = recommend(setups, results, priced=prices is not None, budget=args.budget)
    context = ReportContext(
        inputs=tuple(args.paths), files=len(input_files), machines=results.runs["machine"].nunique(),
        cases=len(results.cases), target_samples=args.target_samples, prices_path=args.prices,
        currency=prices.currency if prices else None, budget=args.budget)
    charts = build_charts(recommendation.setups, target_samples=args.target_samples, currency=context.currency)
    charts = step_breakdown.with_step_split(charts, recommendation.setups)  # its chart; what limits each setup

    outputs["html"].parent.mkdir(parents=True, exist_ok=True)
    from reports import memory_section, stack
    from reports.projection import projections_from_payloads, render_projection_html, render_projection_markdown
    from reports.result_files import read_json

    projections = projections_from_payloads([read_json(path) for path in input_files], args.internode_gbps)
    machines = stack.machine_rows(results.machines, set(results.cases["run_id"]))
    extra_sections = "\n".join((stack.render_html(machines), memory_section.render_html(results.cases, fit_gpus),
                                render_projection_html(projections)))
    answer = build_answer(recommendation, context)  # once: the HTML and the Markdown say the same
    different_software = stack.stack_difference_note(machines)
    if different_software and answer.workloads:  # said next to the answer, first of its notes
        answer = dataclasses.replace(answer, notes=(different_software, *answer.notes))
    write_text(outputs["html"], render_html(recommendation, answer, charts, context, extra_sections=extra_sections))
    write_text(outputs["markdown"], render_markdown(recommendation, answer, context, outputs["html"].name)
               + step_breakdown.render_markdown(recommendation.setups) + stack.render_markdown(machines)
               + memory_section.render_markdown(results.cases, fit_gpus) + render_projection_markdown(projections))
    with replacing(outputs["csv"]) as tmp:
        write_csv(recommendation.setups, tmp)
    print(f"report: {outputs['html']}")
    print(f"summary: {outputs['markdown']}")
    print(f"table: {outputs['csv']}")
    return 0
