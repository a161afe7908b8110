"""The software stack: what set-up installs (scripts/project_deps.py), what a run records
(bench/hardware/software.py), and what the report says when machines ran different stacks (reports/stack.py)."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from bench.hardware.software import gpusizer_commit, software_stack

REPO = Path(__file__).resolve().parent.parent


def _project_deps():
    spec = importlib.util.spec_from_file_location("project_deps", REPO / "scripts" / "project_deps.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_declared_floors_are_the_proven_ones():
    deps = _project_deps()
    reqs = deps.requirements()
    floors = {deps.name_of(req): deps.floor_of(req) for req in reqs}
    # pytest-benchmark 5.3 is the first that does not open --benchmark-json while parsing; it needs pytest 8.1.
    assert floors["torch"] == "2.6" and floors["pytest-benchmark"] == "5.3" and floors["pytest"] == "8.1"
    assert "gpusizer" not in floors  # the "all" extra names the project itself; it adds nothing
    upgraded = subprocess.run([sys.executable, REPO / "scripts" / "project_deps.py", "--all-but-torch"],
                              capture_output=True, text=True, check=True).stdout.split()
    assert "pytest>=8.1" in upgraded and not [req for req in upgraded if deps.name_of(req) == "torch"]


# NVIDIA's containers carry pre-releases (2.6.0a0+ecf3bae40a): by PEP 440 below 2.6, which pip would refuse.
@pytest.mark.parametrize("installed, refused", [("2.5.1+cu124", True), ("2.6.0+cu124", False), ("2.13.0+cpu", False),
                                                ("2.10.0", False), ("1.13.1", True), ("2.6.0a0+ecf3bae40a", True),
                                                ("2.6.0rc1", True), ("2.6", False), ("2.7.0a0+git1234", False)])
def test_an_installed_torch_below_the_floor_stops_set_up_instead_of_being_replaced(installed, refused):
    deps = _project_deps()
    problem = deps.check_torch(installed)
    assert (problem is not None) == refused, problem
    if refused:
        assert f"torch {installed} is installed" in problem and "torch>=2.6" in problem and "\n" not in problem


def test_check_torch_exits_1_with_one_line():
    done = subprocess.run([sys.executable, REPO / "scripts" / "project_deps.py", "--check-torch", "2.1.0"],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "2.1.0" in done.stderr


def test_the_recorded_stack_is_what_is_installed():
    stack = software_stack(driver_version=None)
    for component, package in (("pytest", "pytest"), ("pytest_benchmark", "pytest-benchmark"), ("numpy", "numpy")):
        assert stack[component] == importlib.metadata.version(package)
    import torch

    assert stack["torch"] == torch.__version__ and stack["cuda_runtime"] == torch.version.cuda
    if torch.version.cuda is None:  # a CPU torch links neither cuDNN nor NCCL
        assert stack["cudnn"] is None and stack["nccl"] is None
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True, check=False)
    if head.returncode == 0:
        assert stack["gpusizer_commit"].removesuffix("+dirty") == head.stdout.strip()


def test_the_commit_says_dirty_and_is_none_outside_a_checkout(tmp_path):
    assert gpusizer_commit(tmp_path) is None
    git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
    subprocess.run([*git, "init", "-q"], check=True)
    (tmp_path / "f.py").write_text("x = 1\n")
    subprocess.run([*git, "add", "f.py"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    clean = gpusizer_commit(tmp_path)
    assert clean is not None and len(clean) == 40
    (tmp_path / "f.py").write_text("x = 2\n")
    assert gpusizer_commit(tmp_path) == clean + "+dirty"
    (tmp_path / "installed").mkdir()  # a copy installed inside another repository is not its checkout
    assert gpusizer_commit(tmp_path / "installed") is None


def _machine(node: str, torch_version: str, nccl: str | None = "2.21.5", gpu: str = "NVIDIA H100 80GB HBM3") -> dict:
    return {"node": node, "gpusizer": {
        "gpus": [{"name": gpu}] * 2, "cpu_model": "Xeon", "cpu_cores": 8,
        "software": {"torch": torch_version, "cuda_runtime": "12.4", "cudnn": "9.1.0", "nccl": nccl,
                     "driver": "570.86.15", "horovod": None, "python": "3.11.7", "numpy": "2.4.6",
                     "pytest_benchmark": "5.3.1", "gpusizer": "0.1.0", "gpusizer_commit": "abc"}}}


def test_machines_on_different_stacks_are_said_so_next_to_the_answer():
    from reports.stack import machine_rows, stack_difference_note

    machines = {"a.json": _machine("h100-box", "2.13.0"), "b.json": _machine("h200-box", "2.14.1", nccl="2.27.3",
                                                                           gpu="NVIDIA H200"),
                "c.json": _machine("idle-box", "2.1.0")}
    rows = machine_rows(machines, measured_runs={"a.json", "b.json"})  # c measured nothing: not compared
    assert [row["machine"] for row in rows] == ["h100-box", "h200-box"]
    assert rows[1]["hardware"] == "2x NVIDIA H200" and rows[1]["torch"] == "2.14.1"
    note = stack_difference_note(rows)
    assert "torch 2.13.0 on h100-box vs 2.14.1 on h200-box" in note
    assert "NCCL 2.21.5 on h100-box vs 2.27.3 on h200-box" in note
    assert "CUDA" not in note and "2.1.0" not in note  # same CUDA; the idle machine is not in the comparison


def test_same_stack_or_one_machine_says_nothing():
    from reports.stack import machine_rows, stack_difference_note

    same = {"a.json": _machine("a", "2.13.0"), "b.json": _machine("b", "2.13.0")}
    assert stack_difference_note(machine_rows(same, {"a.json", "b.json"})) is None
    twice = {"a.json": _machine("a", "2.13.0"), "b.json": _machine("a", "2.14.1")}  # one machine, two runs
    rows = machine_rows(twice, {"a.json", "b.json"})
    assert len(rows) == 2 and stack_difference_note(rows) is None


def test_an_unrecorded_version_is_no_difference_and_shared_host_names_are_told_apart():
    from reports.stack import machine_rows, stack_difference_note

    old = _machine("a", "2.13.0")
    del old["gpusizer"]["software"]  # an older file: no cuDNN recorded
    old["gpusizer"]["torch_version"] = "2.13.0"
    assert stack_difference_note(machine_rows({"a.json": old, "b.json": _machine("b", "2.13.0")},
                                              {"a.json", "b.json"})) is None
    twins = {"a.json": _machine("localhost", "2.13.0"), "b.json": _machine("localhost", "2.14.1", gpu="NVIDIA H200")}
    note = stack_difference_note(machine_rows(twins, {"a.json", "b.json"}))
    assert "2.13.0 on localhost (2x NVIDIA H100 80GB HBM3) vs 2.14.1 on localhost (2x NVIDIA H200)" in note


def test_an_older_result_file_gives_its_versions_from_the_inventory_keys():
    from reports.stack import software_of

    old = {"gpusizer": {"torch_version": "2.12.0", "cuda_version": None, "nccl_version": None,
                        "driver_version": None, "horovod_version": "0.28.1", "python_version": "3.11.7"}}
    stack = software_of(old)
    assert stack["torch"] == "2.12.0" and stack["horovod"] == "0.28.1" and stack["gpusizer_commit"] is None
