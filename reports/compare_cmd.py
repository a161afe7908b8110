"""``gpusizer compare BASELINE CURRENT``: did the current run get slower than the baseline?

BASELINE is a result file, or a folder of earlier runs (a rolling baseline: the latest
``--baseline-runs`` runs with the current run's hardware fingerprint, pooled; the report then also
shows each case's throughput over time). A pytest-benchmark storage folder
(``--benchmark-autosave``'s ``.benchmarks/``) works too. Exit status: 0 nothing regressed, 1 something
regressed (named on stderr), 2 bad input (including a baseline from other hardware), 3 nothing was
compared (every case new or missing, or CURRENT measured nothing) unless ``--allow-missing``.
"""

from __future__ import annotations

import argparse
import os
import sys
from importlib.util import find_spec
from pathlib import Path

import pandas as pd

from gpusizer_common.atomic_file import write_text
from reports import compare_render
from reports.compare import (
    CompareConfig,
    CompareReport,
    case_history,
    choose_baseline_runs,
    compare_cases,
    explain_missing,
    hardware_fingerprint,
)
from reports.errors import InputError
from reports.load import ResultSet, load_results

EXIT_OK, EXIT_REGRESSED, EXIT_NOTHING_COMPARED = 0, 1, 3
DEFAULT_BASELINE_RUNS = CompareConfig.baseline_runs


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("baseline", metavar="BASELINE",
                        help="a result file, or a folder of earlier runs (rolling baseline + history)")
    parser.add_argument("current", metavar="CURRENT",
                        help="the run to judge: a result file (a folder means its latest run)")
    parser.add_argument("--threshold", default="5%", metavar="CHANGE",
                        help="smallest throughput change that counts, as 5%% or 0.05; default: 5%%")
    parser.add_argument("--alpha", default="0.01", metavar="P",
                        help="significance level of the Mann-Whitney test, between 0 and 0.5; default: 0.01")
    parser.add_argument("--baseline-runs", default=str(DEFAULT_BASELINE_RUNS), metavar="N",
                        help=f"with a BASELINE folder, pool the latest N runs of the same hardware; "
                             f"default: {DEFAULT_BASELINE_RUNS}")
    parser.add_argument("--round-quantile", default=str(CompareConfig.round_quantile), metavar="Q",
                        help=f"which quantile of the round times to compare, between 0 and 1; default: "
                             f"{CompareConfig.round_quantile} (lower quartile: robust to preempted rounds; 0.5 = median)")
    parser.add_argument("--allow-different-hardware", action="store_true",
                        help="compare even when GPU, driver, CUDA, torch (or CPU) differ; the report says what")
    parser.add_argument("--allow-missing", action="store_true",
                        help="exit 0 (not 3) when no case could be compared or decided: every case new, "
                             "missing or inconclusive, or CURRENT measured nothing")
    parser.add_argument("--markdown", metavar="FILE", help="also write the report as Markdown (a PR comment)")
    parser.add_argument("--json", metavar="FILE", help="also write the verdicts as JSON")
    parser.add_argument("--html", metavar="FILE",
                        help="also write a chart of each case's throughput over time (needs plotly)")


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    baseline_files = result_files(args.baseline, "BASELINE")
    current_files = result_files(args.current, "CURRENT")
    outputs = {"--markdown": args.markdown, "--json": args.json, "--html": args.html}
    check_outputs(outputs, {args.baseline: baseline_files, args.current: current_files})

    current_set = load_results(current_files)
    if current_set.runs.empty:  # every CURRENT file measured nothing: the loader set them aside
        print(f"gpusizer compare: nothing compared: CURRENT {args.current} measured nothing (every case skipped "
              f"or failed; ignored {', '.join(current_set.ignored)})", file=sys.stderr)
        return EXIT_OK if args.allow_missing else EXIT_NOTHING_COMPARED
    current_run = latest_run(current_set)
    if os.path.isdir(args.baseline):
        # The current run may sit in the baseline folder (`compare results/ results/new.json`): it must
        # not pool into its own baseline. A file given as both is compared with itself, as asked.
        current_real = {os.path.realpath(path) for path in current_files}
        baseline_files = [path for path in baseline_files if os.path.realpath(path) not in current_real]
    if not baseline_files:
        raise InputError(f"BASELINE {args.baseline}: holds no run other than CURRENT; give earlier result files")
    baseline_set = load_results(baseline_files)
    if baseline_set.runs.empty:
        print(f"gpusizer compare: nothing compared: BASELINE {args.baseline} measured nothing (every case skipped "
              f"or failed; ignored {', '.join(baseline_set.ignored)})", file=sys.stderr)
        return EXIT_OK if args.allow_missing else EXIT_NOTHING_COMPARED
    report = build_report(baseline_set, current_set, current_run, args.baseline,
                          os.path.isdir(args.baseline), config, args.allow_different_hardware)

    print(compare_render.terminal(report))
    write_outputs(outputs, report)
    if not report.comparable:
        raise InputError(f"not comparable: the baseline runs are from other hardware or software "
                         f"({'; '.join(report.differences)}); pass --allow-different-hardware to compare anyway")
    if report.regressed:
        print(f"gpusizer compare: regressed: {', '.join(report.regressed)}", file=sys.stderr)
        return EXIT_REGRESSED
    if not report.decided:
        print(f"gpusizer compare: nothing compared: {compare_render.nothing_compared_reason(report)}"
              + ("" if args.allow_missing else "; pass --allow-missing to accept this"), file=sys.stderr)
        return EXIT_OK if args.allow_missing else EXIT_NOTHING_COMPARED
    return EXIT_OK


def build_report(baseline_set: ResultSet, current_set: ResultSet, current_run: str, baseline_source: str,
                 with_history: bool, config: CompareConfig, allow_different_hardware: bool) -> CompareReport:
    fingerprints = {run_id: hardware_fingerprint(info) for run_id, info in baseline_set.machines.items()}
    current_fingerprint = hardware_fingerprint(current_set.machines[current_run])
    current_datetime = current_set.runs.set_index("run_id").loc[current_run, "run_datetime"]
    # A rolling baseline (a folder) pools only runs older than the current one; a file is taken as given.
    eligible, differences = choose_baseline_runs(baseline_set.runs, fingerprints, current_fingerprint,
                                                 config.baseline_runs, allow_different_hardware,
                                                 current_datetime if with_history else None)
    current_cases = current_set.cases[current_set.cases["run_id"] == current_run]
    if current_cases.empty:
        raise InputError(f"CURRENT {current_run}: has no finished benchmark cases; nothing to compare")
    baseline_cases = baseline_set.cases[baseline_set.cases["run_id"].isin(eligible)]
    current_outcomes = current_set.outcomes[current_set.outcomes["run_id"] == current_run]
    comparison = explain_missing(compare_cases(baseline_cases, current_cases, config), current_outcomes)
    # The runs some case actually pooled (each case takes the latest runs that measured it).
    used = {run_id for run_ids in comparison["baseline_run_ids"] for run_id in run_ids}
    chosen = [run_id for run_id in eligible if run_id in used] or eligible[-config.baseline_runs:]

    history = case_history(current_cases.iloc[0:0])
    if with_history and chosen:
        # History shows every run of the chosen runs' hardware, not only the pooled few.
        chosen_fingerprint = fingerprints[chosen[-1]]
        same = [run_id for run_id, fingerprint in fingerprints.items() if fingerprint == chosen_fingerprint]
        history = case_history(pd.concat([baseline_set.cases[baseline_set.cases["run_id"].isin(same)],
                                          current_cases]))
    run_times = dict(zip(baseline_set.runs["run_id"], baseline_set.runs["run_datetime"]))
    return CompareReport(
        config=config,
        baseline_source=baseline_source,
        current_run=current_run,
        current_datetime=current_datetime,
        current_fingerprint=current_fingerprint,
        baseline_runs=chosen,
        baseline_datetimes=[run_times[run_id] for run_id in chosen],
        differences=differences,
        other_hardware_runs=sum(1 for fingerprint in fingerprints.values() if fingerprint != current_fingerprint),
        comparable=bool(eligible),
        comparison=comparison,
        history=history,
        ignored=tuple(baseline_set.ignored) + tuple(current_set.ignored),
    )


# -- input -----------------------------------------------------------------------------------------


def config_from_args(args: argparse.Namespace) -> CompareConfig:
    try:
        return CompareConfig(
            threshold=parse_fraction(args.threshold, "--threshold"),
            alpha=_parse(args.alpha, "--alpha", float, "between 0 and 0.5 (e.g. 0.01)"),
            baseline_runs=_parse(args.baseline_runs, "--baseline-runs", int, "an integer >= 1"),
            round_quantile=_parse(args.round_quantile, "--round-quantile", float, "between 0 and 1"),
        )
    except ValueError as error:  # CompareConfig's own check: "<field>: <value>; allowed: ..."
        name, rest = str(error).split(":", 1)
        raise InputError(f"--{name.replace('_', '-')}:{rest}") from None


def _parse(raw: str, option: str, convert: type, allowed: str) -> float | int:
    try:
        return convert(raw)
    except ValueError:
        kind = "an integer" if convert is int else "a number"
        raise InputError(f"{option}: {raw!r} is not {kind}; allowed: {allowed}") from None


def parse_fraction(raw: str, option: str) -> float:
    """``5%`` -> 0.05 and ``0.05`` -> 0.05; a bare ``5`` is refused rather than read as 500%."""
    text = str(raw).strip()
    allowed = "allowed: a percentage such as 5% or a fraction such as 0.05, from 0 to below 100%"
    try:
        value = float(text[:-1]) / 100 if text.endswith("%") else float(text)
    except ValueError:
        raise InputError(f"{option}: {raw!r} is not a number; {allowed}") from None
    if not 0 <= value < 1:
        raise InputError(f"{option}: {raw!r} is out of range; {allowed}")
    return value


def result_files(raw: str, what: str) -> list[str]:
    """A file as given; a folder's ``*.json``; a pytest-benchmark storage folder (no JSON of its own,
    one folder per machine key under it) as the JSON files one level down."""
    path = Path(raw)
    if not path.exists():
        raise InputError(f"{what} {raw}: does not exist; expected a result file or a folder of them")
    if not path.is_dir():
        return [raw]
    files = sorted(child for child in path.glob("*.json") if child.is_file())
    if not files:
        files = sorted(child for child in path.glob("*/*.json") if child.is_file())
    if not files:
        raise InputError(f"{what} {raw}: folder has no *.json result files (nor a pytest-benchmark storage "
                         f"folder of them)")
    return [str(child) for child in files]


def latest_run(result_set: ResultSet) -> str:
    runs = result_set.runs.sort_values(["run_datetime", "run_id"], na_position="first")
    return str(runs["run_id"].iloc[-1])


def check_outputs(outputs: dict[str, str | None], inputs: dict[str, list[str]]) -> None:
    """Refuse, before anything is written, an output that would replace an input, be written twice,
    or land as a .json in an input folder (where the next compare would read it as a result file).
    ``inputs``: each BASELINE/CURRENT path as given -> the result files found under it."""
    input_real = {os.path.realpath(path) for files in inputs.values() for path in files}
    input_folders = {os.path.dirname(os.path.realpath(path))
                     for raw, files in inputs.items() if os.path.isdir(raw) for path in files}
    written: dict[str, str] = {}
    for option, raw in outputs.items():
        if raw is None:
            continue
        real = os.path.realpath(raw)
        if real in input_real:
            raise InputError(f"{option} {raw}: is one of the input files; choose another output path")
        if os.path.isdir(raw):
            raise InputError(f"{option} {raw}: is a folder; give a file path")
        if real in written:
            raise InputError(f"{option} {raw}: is also the {written[real]} output; give each output its own file")
        if real.endswith(".json") and os.path.dirname(real) in input_folders:
            raise InputError(f"{option} {raw}: is inside an input folder, where the next compare would read it "
                             f"as a result file; write it elsewhere")
        written[real] = option
    if outputs.get("--html") and find_spec("plotly") is None:
        raise InputError("--html: needs plotly, which is not installed; pip install 'gpusizer[report]'")


def write_outputs(outputs: dict[str, str | None], report: CompareReport) -> None:
    renderers = {"--markdown": compare_render.markdown, "--json": compare_render.to_json,
                 "--html": compare_render.html}
    for option, path in outputs.items():
        if path is not None:
            write_text(Path(path), renderers[option](report))
