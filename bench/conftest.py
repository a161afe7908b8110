# The harness's entry point, not a test of the product: pytest only loads plugin code from a file of
# this name. `pytest bench/` is the benchmark; the product's tests are in tests/.
"""pytest wiring of the benchmark: options, the case matrix, the result file and its path."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from bench.config.cases import build_cases
from bench.config.options import add_options, options_from_config
from bench.config.sizing_options import SIZING_KEY, add_sizing_options, sizing_options_from_config
from bench.hardware.devices import device_count, resolve_device_type
from bench.record.results import benchmark_json_problem
from bench.record.session import BenchSession
from bench.run import interrupts

SESSION_KEY = pytest.StashKey[BenchSession]()


def pytest_addoption(parser: pytest.Parser) -> None:
    add_options(parser)
    add_sizing_options(parser)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    json_path = take_benchmark_json(config)  # first: its refusal must not wait on other options
    if config.getoption("benchmark_disable", False):
        # pytest-benchmark would run each round function once, untimed: there would be nothing to record.
        raise pytest.UsageError("--benchmark-disable: pytest bench/ is the benchmark, it cannot run untimed; "
                                "allowed: leave it out (--plan lists the cases without running them)")
    try:
        options = options_from_config(config)
        config.stash[SIZING_KEY] = sizing_options_from_config(config)
    except ValueError as error:
        raise pytest.UsageError(str(error)) from None
    # Per-round data is what reports and regression checks are built on: always keep it.
    config.option.benchmark_save_data = True
    if not options.plan and json_path is None:  # --plan writes nothing, so it makes no folder either
        check_results_dir(config, options.results_dir)
    config.stash[SESSION_KEY] = BenchSession(config, options, json_path)
    interrupts.install()  # SIGTERM, SIGHUP: handled as Ctrl-C
    from bench.config.hosts import set_active_cluster

    set_active_cluster(options.cluster)  # read by the multi-node launchers


def take_benchmark_json(config: pytest.Config) -> Path | None:
    """``--benchmark-json PATH``: checked before anything runs (an existing PATH is refused, exit 4,
    the file untouched), then written by this run itself, whole after every case. pytest-benchmark is
    told there is no such option value, so it does not write the file once more at the end by opening
    and filling it in place (a reader could see it half-written)."""
    value = config.getoption("benchmark_json", None)
    if value is None:
        return None
    problem = benchmark_json_problem(value)
    if problem:
        raise pytest.UsageError(problem)
    config.option.benchmark_json = None  # read by pytest-benchmark's own pytest_configure, which runs last
    return Path(value)


def check_results_dir(config: pytest.Config, results_dir: str) -> None:
    """--results-dir must be a folder this run can create a file in, found before any case runs."""
    if config.option.collectonly:
        return  # nothing is written there
    from bench.record.results import writable_folder_problem

    problem = writable_folder_problem(results_dir)
    if problem:
        raise pytest.UsageError(f"--results-dir {results_dir}: {problem}; allowed: a folder this run can write to")


def pytest_collection_modifyitems(session: pytest.Session, config: pytest.Config, items) -> None:
    bench_session = config.stash.get(SESSION_KEY, None)
    if bench_session is None:
        return
    from bench.run.controller import skip_reason
    from bench.run.plan import Progress, make_plan

    cases = [item.callspec.params["case"] for item in items
             if "case" in getattr(getattr(item, "callspec", None), "params", {})]
    bench_session.plan = make_plan(cases, bench_session.options, skip_reason)
    bench_session.progress = Progress(bench_session.plan, time.monotonic)


@pytest.hookimpl(tryfirst=True)
def pytest_runtestloop(session: pytest.Session):
    """--plan: print the plan instead of running anything."""
    bench_session = session.config.stash.get(SESSION_KEY, None)
    if bench_session is None or not bench_session.options.plan or session.config.option.collectonly:
        return None
    terminal = session.config.pluginmanager.get_plugin("terminalreporter")
    for line in bench_session.plan.lines(bench_session.options.price_per_hour):
        terminal.write_line(line)
    return True


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "case" not in metafunc.fixturenames:
        return
    session = metafunc.config.stash[SESSION_KEY]
    options = session.options
    device_type = resolve_device_type(options.device)
    cases = build_cases(options, device_type, device_count(device_type))
    metafunc.parametrize("case", cases, ids=[case.case_id for case in cases])


@pytest.fixture
def case_benchmark(benchmark, request):
    """pytest-benchmark's ``benchmark`` fixture, kept by the session, which writes the result file from it."""
    request.config.stash[SESSION_KEY].keep(benchmark)
    return benchmark


@pytest.hookimpl(hookwrapper=True)
def pytest_benchmark_group_stats(config, benchmarks, group_by):
    # A failed case's partial statistics stay out of pytest-benchmark's terminal table, as they stay
    # out of the result file (its JSON writer leaves out benchmarks with an error).
    session = config.stash.get(SESSION_KEY, None)
    failed = session.failed_benchmark_names() if session is not None else set()
    if failed:
        benchmarks[:] = [bench for bench in benchmarks if bench["fullname"] not in failed]
    yield


@pytest.fixture
def bench_options(request):
    return request.config.stash[SESSION_KEY].options


@pytest.fixture
def sizing_options(request):
    return request.config.stash[SIZING_KEY]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call):
    outcome = yield
    session = item.config.stash.get(SESSION_KEY, None)
    case = getattr(getattr(item, "callspec", None), "params", {}).get("case")
    if session is not None and case is not None:
        report = outcome.get_result()
        session.on_report(case, report)
        if session.write_error is not None:
            item.session.shouldstop = session.write_error  # nothing more could be saved: end cleanly
        progress = getattr(session, "progress", None)
        if report.when == "teardown" and progress is not None:
            terminal = item.config.pluginmanager.get_plugin("terminalreporter")
            if terminal is not None:
                terminal.write_line("")
                terminal.write_line(progress.line(case.case_id, session.cases[case.case_id]["status"]))


def pytest_benchmark_update_json(config, benchmarks, output_json) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        output_json["gpusizer"] = session.summary_section()
        output_json["gpusizer"]["internode_gbps"] = list(session.options.internode_gbps)  # for the projection
    # Ceilings (matmul peaks, all-reduce bandwidth) are measured as cases run, after machine_info
    # was first taken: refresh them on every write.
    from bench.hardware.inventory import ceilings

    output_json.get("machine_info", {}).setdefault("gpusizer", {})["ceilings"] = ceilings()
    from bench.hardware.multinode_bandwidth import measured_internode_ceilings

    output_json.get("machine_info", {}).setdefault("gpusizer", {})["ceilings"]["allreduce_across_hosts"] = (
        measured_internode_ceilings())


def pytest_benchmark_update_machine_info(config, machine_info) -> None:
    from bench.hardware.inventory import machine_inventory  # late: may probe CUDA and NVML

    machine_info["gpusizer"] = machine_inventory()
    session = config.stash.get(SESSION_KEY, None)
    if session is not None and session.options.cluster is not None:
        from bench.hardware.multinode_inventory import hosts_inventory

        machine_info["gpusizer"]["hosts"] = hosts_inventory(session.options.cluster)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus):
    # Outermost wrapper: the run's final state is settled before pytest-benchmark's own wrapper
    # saves --benchmark-json / --benchmark-autosave files, and our file is written after it.
    bench_session = session.config.stash.get(SESSION_KEY, None)
    from bench.run.group_pool import SESSION_POOL

    # The worker group kept for a next case that will not come; killed at once after an interrupt.
    SESSION_POOL.close_held(abort=exitstatus == pytest.ExitCode.INTERRUPTED)
    if bench_session is not None:
        bench_session.settle(interrupted=exitstatus == pytest.ExitCode.INTERRUPTED)
    yield
    if bench_session is not None:
        bench_session.finish()


def pytest_unconfigure(config: pytest.Config) -> None:
    # Worker processes of a case that never reached its close (an internal error, Ctrl-C at a bad
    # moment) die with the run, not after it; atexit does the same for exits that skip this hook.
    from bench.launch.processes import kill_all
    from bench.run.group_pool import SESSION_POOL

    SESSION_POOL.close_held(abort=True)  # normally closed at sessionfinish already
    kill_all()
    interrupts.uninstall()


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:
    session = config.stash.get(SESSION_KEY, None)
    if session is not None:
        session.print_summary(terminalreporter)
