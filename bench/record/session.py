"""One run of ``pytest bench/``: what happened to each case, and the result file that says so."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from bench.config.cases import BenchCase
from bench.config.options import BenchOptions
from bench.record.record import SCHEMA_VERSION
from bench.record.results import ResultFile
from bench.run import interrupts


def _one_line(text: str) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return lines[0] if lines else ""


def report_reason(report: pytest.TestReport) -> str:
    """The one-line why of a skip or a failure."""
    longrepr = report.longrepr
    if isinstance(longrepr, tuple):  # skip: (path, line, "Skipped: why")
        return _one_line(longrepr[2]).removeprefix("Skipped: ")
    crash = getattr(longrepr, "reprcrash", None)
    if crash is not None:  # pytest.fail's message reads "Failed: why"
        return _one_line(crash.message).removeprefix("Failed: ")
    return _one_line(str(longrepr))


class BenchSession:
    def __init__(self, config: pytest.Config, options: BenchOptions, json_path: Path | None = None) -> None:
        self.config = config
        self.options = options
        self.cases: dict[str, dict] = {}
        # pytest-benchmark's fixtures of the cases run so far, in order: the result file is built from
        # their stats through pytest-benchmark's public hooks, never from its session object.
        self.fixtures: list = []
        self._machine_info = None
        self._commit_info = None
        if json_path is not None:
            # --benchmark-json: that file (refused before the run when it exists, bench/conftest.py) is
            # this run's result file, written whole after every case as results/ files are.
            self.result_file = ResultFile(json_path.parent, json_path.name, exact=True)
        else:
            self.result_file = ResultFile(options.results_dir)
        self.complete = False
        self.unstable_line: str | None = None
        self.write_error: str | None = None  # set once a write failed; the run then stops

    # -- case outcomes ---------------------------------------------------------------------

    def on_report(self, case: BenchCase, report: pytest.TestReport) -> None:
        # "running" until the call phase reports: a case cut short by Ctrl-C never gets that report.
        entry = self.cases.setdefault(case.case_id, {**case.identity(), "status": "running", "reason": None})
        if report.skipped:
            entry.update(status="skipped", reason=report_reason(report))
        elif report.failed:
            phase = "" if report.when == "call" else f" (in {report.when})"
            entry.update(status="failed", reason=report_reason(report) + phase)
        elif report.when == "call":
            entry["status"] = "passed"
        if report.when == "teardown":
            self.write()

    def summary_section(self) -> dict:
        # measured: cases with a record. A run that measured nothing (every case skipped or failed)
        # still keeps its reasons here; reports and compare ignore it and say so.
        measured = sum(1 for entry in self.cases.values() if entry["status"] == "passed")
        return {"schema_version": SCHEMA_VERSION, "complete": self.complete, "measured": measured,
                "cases": list(self.cases.values())}

    # -- the result file -------------------------------------------------------------------

    @property
    def writes_own_file(self) -> bool:
        # --collect-only runs nothing, so it writes nothing.
        return not self.config.option.collectonly

    def keep(self, fixture) -> None:
        """Remember a case's ``benchmark`` fixture (bench/conftest.py's ``case_benchmark``)."""
        self.fixtures.append(fixture)

    def benchmarks(self) -> list:
        """The statistics pytest-benchmark made for the cases run so far (none for a case skipped first)."""
        return [fixture.stats for fixture in self.fixtures if fixture.stats is not None]

    def failed_benchmark_names(self) -> set[str]:
        return {fixture.fullname for fixture in self.fixtures if fixture.has_error}

    def payload(self) -> dict:
        # The same documented hooks, in the same order, as pytest-benchmark's own --benchmark-json writer.
        hook, benchmarks = self.config.hook, self.benchmarks()
        if self._machine_info is None:
            self._machine_info = hook.pytest_benchmark_generate_machine_info(config=self.config)
            hook.pytest_benchmark_update_machine_info(config=self.config, machine_info=self._machine_info)
            self._commit_info = hook.pytest_benchmark_generate_commit_info(config=self.config)
            hook.pytest_benchmark_update_commit_info(config=self.config, commit_info=self._commit_info)
        payload = hook.pytest_benchmark_generate_json(
            config=self.config,
            benchmarks=benchmarks,
            include_data=True,
            machine_info=self._machine_info,
            commit_info=self._commit_info,
        )
        hook.pytest_benchmark_update_json(config=self.config, benchmarks=benchmarks, output_json=payload)
        return payload

    def write(self) -> None:
        if not self.writes_own_file or self.write_error is not None:
            return
        try:
            self.result_file.write(self.payload())
        except OSError as error:
            # The folder became unwritable (removed, read-only, full): say so in one line and stop the
            # run; the file as last written stays, with every case finished before.
            where = self.result_file.path or self.result_file.directory
            kept = f"; {self.result_file.path} keeps the cases finished before" if self.result_file.path else ""
            self.write_error = f"gpusizer: cannot write the result file {where}: {error.strerror or error}{kept}"
            print(self.write_error, file=sys.stderr)

    def settle(self, interrupted: bool) -> None:
        """The run is over: say so, and what became of a case cut short."""
        for entry in self.cases.values():
            if entry["status"] == "running":
                # Reported as failed (the record's three statuses), with why, rather than lost.
                entry.update(status="failed", reason=f"interrupted ({interrupts.cause()}) before this case finished")
        self.complete = not interrupted
        if not interrupted:
            self._close_stability()

    def _close_stability(self) -> None:
        """The end-of-session peak probe; every record's ``unstable`` flag is judged again with it."""
        from bench.record.stability import close_session, unstable_line

        records = [bench.extra_info for bench in self.benchmarks()
                   if isinstance(bench.extra_info, dict) and "case_id" in bench.extra_info]
        peaks = close_session(records)
        self.unstable_line = unstable_line(records, peaks)

    def finish(self) -> None:
        if self.cases or self.result_file.path is not None:
            self.write()

    def print_summary(self, terminal) -> None:
        counts: dict[str, int] = {}
        for entry in self.cases.values():
            counts[entry["status"]] = counts.get(entry["status"], 0) + 1
        if not self.cases:
            return
        terminal.section("gpusizer")
        for entry in self.cases.values():
            if entry["status"] != "passed":
                terminal.write_line(f"{entry['case_id']}: {entry['status']}: {entry['reason']}")
        summary = ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
        if self.unstable_line:
            terminal.write_line(self.unstable_line)
        if self.write_error is not None:
            terminal.write_line(f"gpusizer: {summary}; {self.write_error}")
            return
        # Before any case finished (Ctrl-C in the first case) nothing has claimed the name yet; the
        # summary is printed just before the final write, so claim it now to name it.
        try:
            path = self.result_file.path or (self.result_file.claim() if self.writes_own_file else None)
        except OSError as error:
            path = f"none ({self.result_file.directory}: {error.strerror or error})"
        terminal.write_line(f"gpusizer: {summary}; result file: {path}")
