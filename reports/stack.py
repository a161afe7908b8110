"""Each machine's software stack beside its hardware, and whether the machines ranked against each other
ran different stacks: a buyer comparing two GPUs must know when the software differed too.

Read from ``machine_info["gpusizer"]["software"]`` (bench/hardware/software.py); a result file from
before that key still gives torch, CUDA, NCCL, the driver, Horovod and Python from the inventory's own keys.
"""

from __future__ import annotations

import html

from reports.derived import cpu_model, inventory, inventory_gpus
from reports.tables import html_table, markdown_table

# Component -> (its label, the inventory's older key holding the same version).
COMPONENTS = {
    "torch": ("torch", "torch_version"),
    "cuda_runtime": ("CUDA", "cuda_version"),
    "cudnn": ("cuDNN", None),
    "nccl": ("NCCL", "nccl_version"),
    "driver": ("driver", "driver_version"),
    "horovod": ("Horovod", "horovod_version"),
    "python": ("Python", "python_version"),
    "numpy": ("numpy", None),
    "pytest_benchmark": ("pytest-benchmark", None),
    "gpusizer": ("gpusizer", None),
    "gpusizer_commit": ("gpusizer commit", None),
}
# The components that can move a training number between two machines: a difference in one of these is
# said next to the answer. (pytest, numpy or gpusizer's commit move no kernel.)
DECISIVE = ("torch", "cuda_runtime", "cudnn", "nccl", "driver", "horovod")
UNKNOWN = "-"  # absent (no CUDA, no Horovod) or not recorded by an older file
NOTE = ("Every version that can move a number; the answer says when machines ranked against each other "
        "differ in torch, CUDA, cuDNN, NCCL, the driver or Horovod.")


def software_of(machine_info: dict) -> dict[str, str | None]:
    found = inventory(machine_info)
    recorded = found.get("software") if isinstance(found.get("software"), dict) else {}
    stack = {}
    for component, (_, older_key) in COMPONENTS.items():
        value = recorded.get(component, found.get(older_key) if older_key else None)
        stack[component] = None if value is None else str(value)
    return stack


def hardware_of(machine_info: dict) -> str:
    names = [gpu.get("name") for gpu in inventory_gpus(machine_info) if isinstance(gpu, dict) and gpu.get("name")]
    if names:
        return ", ".join(f"{names.count(name)}x {name}" for name in dict.fromkeys(names))
    cores = inventory(machine_info).get("cpu_cores")
    return f"{cpu_model(machine_info) or 'unknown CPU'}" + (f", {cores} cores" if cores else "")


def machine_rows(machines: dict[str, dict], measured_runs: set[str]) -> list[dict]:
    """One row per machine and stack among the runs that measured something (a machine measured twice on
    the same stack is one row; on two stacks, two)."""
    rows: dict[tuple, dict] = {}
    for run_id, machine_info in machines.items():
        if run_id not in measured_runs:
            continue
        name = str(machine_info.get("node") or "unknown-host")
        stack = software_of(machine_info)
        row = {"machine": name, "hardware": hardware_of(machine_info),
               **{label: stack[component] or UNKNOWN for component, (label, _) in COMPONENTS.items()}}
        rows.setdefault((name, *stack.values()), row)
    return list(rows.values())


def _labels(rows: list[dict]) -> list[str]:
    """Each row's machine: its host name, with its hardware where two machines share a name (localhost)."""
    hardware_by_name: dict[str, set] = {}
    for row in rows:
        hardware_by_name.setdefault(row["machine"], set()).add(row["hardware"])
    return [row["machine"] if len(hardware_by_name[row["machine"]]) == 1 else f"{row['machine']} ({row['hardware']})"
            for row in rows]


def stack_difference_note(rows: list[dict]) -> str | None:
    """One sentence naming each decisive component whose version differs between the measured machines,
    or None when they ran the same stack (or only one machine was measured). A version a file did not
    record (an older file has no cuDNN) is not a difference."""
    labels = _labels(rows)
    if len(set(labels)) < 2:
        return None
    differences = []
    for component in DECISIVE:
        label = COMPONENTS[component][0]
        by_version: dict[str, list[str]] = {}
        for row, machine in zip(rows, labels):
            if row[label] == UNKNOWN:
                continue
            names = by_version.setdefault(row[label], [])
            if machine not in names:
                names.append(machine)
        if len(by_version) > 1:
            differences.append(f"{label} " + " vs ".join(f"{version} on {', '.join(names)}"
                                                         for version, names in by_version.items()))
    if not differences:
        return None
    return ("The machines compared here ran different software (" + "; ".join(differences) + "): part of any "
            "difference between them may come from the software, not the hardware; see \"Machines and software\".")


def render_html(rows: list[dict]) -> str:
    return "\n".join(["<h2>Machines and software</h2>", f'<p class="note">{html.escape(NOTE)}</p>',
                      html_table(rows) or "<p>No machine measured a case.</p>"])


def render_markdown(rows: list[dict]) -> str:
    lines = ["", "## Machines and software", "", NOTE, ""]
    lines += markdown_table(rows) or ["No machine measured a case."]
    return "\n".join(lines) + "\n"
