"""A scaling projection: step time and scaling efficiency at more devices and nodes than were measured.

Model (ring all-reduce, per step):
``step_s = compute_s + comm_s - overlap * min(compute_s, comm_s)``, ``comm_s = 2(N-1)/N * gradient_bytes / busbw``

- ``compute_s``: fitted together with the overlap where cases ran at clearly different communication
  times (one link at two rates), else the measured step of the same strategy, preset, precision and
  per-device batch at world size 1 (weak scaling keeps the per-device work the same);
- ``gradient_bytes``: 4 bytes (fp32 gradients) per parameter;
- ``busbw``: the measured all-reduce bus bandwidth of the devices that ran (machine_info ceilings:
  within one host, or across the hosts for a multi-node case), and for the projection the
  inter-node bandwidth the user gave (``--internode-gbps``, Gbit/s of bus bandwidth);
- ``overlap``: the fraction of the shorter of compute and communication hidden behind the other
  (0: they add up; 1: a step takes the longer of the two), fitted to the cases that ran (least
  squares of the relative error).

The model's error is shown at every measured point, and nothing is projected from a model whose
error at any measured point exceeds MAX_MODEL_ERROR. It is a projection, labelled so everywhere.
"""

from __future__ import annotations

import html
import statistics
from dataclasses import dataclass

from gpusizer_common import metrics

MAX_MODEL_ERROR = 0.15
GRADIENT_BYTES_PER_PARAM = 4
PROJECTED_NODES = (1, 2, 4, 8, 16)


@dataclass(frozen=True)
class MeasuredPoint:
    case_id: str
    world_size: int
    nodes: int
    busbw_bytes_per_s: float
    measured_step_s: float
    predicted_step_s: float

    @property
    def error(self) -> float:
        return abs(self.predicted_step_s - self.measured_step_s) / self.measured_step_s


@dataclass(frozen=True)
class ProjectedRow:
    nodes: int
    devices: int
    internode_gbps: float | None  # None: one node, its measured within-host bandwidth
    step_s: float
    scaling_efficiency: float
    samples_per_s: float


@dataclass(frozen=True)
class Projection:
    label: str  # strategy / preset / precision / batch
    compute_s: float
    gradient_bytes: int
    overlap: float
    points: tuple[MeasuredPoint, ...]
    rows: tuple[ProjectedRow, ...]
    withheld_reason: str | None  # why nothing is projected (model error too large, no rates given)

    def __post_init__(self) -> None:
        if not 0.0 <= self.overlap <= 1.0:
            raise ValueError(f"Projection.overlap: {self.overlap!r}; allowed: 0..1")
        if self.rows and self.withheld_reason:
            raise ValueError("Projection: rows and a withheld reason together")


def ring_comm_s(world_size: int, gradient_bytes: float, busbw_bytes_per_s: float) -> float:
    return 2.0 * (world_size - 1) / world_size * gradient_bytes / busbw_bytes_per_s


def step_s(record: dict) -> float:
    return statistics.median(record["round_times_s"]) / record["steps_per_round"]


def _group_key(record: dict) -> tuple:
    return (record["strategy"], record["preset"], record["precision"], record["per_device_batch_size"],
            record["device_type"])


def _busbw(record: dict, ceilings: dict) -> float | None:
    """The measured bus bandwidth the case's all-reduce ran at."""
    if record.get("nodes", 1) > 1:
        names = [spec.rsplit(":", 1)[0] for spec in record["hosts"]]
        for entry in ceilings.get("allreduce_across_hosts", []):
            if entry.get("hosts") == names and entry.get("busbw_bytes_per_s"):
                return float(entry["busbw_bytes_per_s"])
        return None
    for entry in ceilings.get("allreduce", []):
        if (entry.get("device_type"), entry.get("world_size")) == (record["device_type"], record["world_size"]):
            return entry.get("busbw_bytes_per_s") or None
    return None


def model_step_s(compute_s: float, comm_s: float, overlap: float) -> float:
    return compute_s + comm_s - overlap * min(compute_s, comm_s)


OVERLAP_GRID = tuple(i / 100 for i in range(101))
COMPUTE_GRID_POINTS = 400


def _relative_sse(compute_s: float, overlap: float, comm_s: list[float], measured_s: list[float]) -> float:
    return sum(((model_step_s(compute_s, c, overlap) - m) / m) ** 2 for c, m in zip(comm_s, measured_s))


def fit_overlap(compute_s: float, comm_s: list[float], measured_s: list[float]) -> float:
    """The overlap (0..1, in steps of 0.01) that best fits the measured steps for a known compute time."""
    return min(OVERLAP_GRID, key=lambda o: _relative_sse(compute_s, o, comm_s, measured_s))


def fit_compute_and_overlap(comm_s: list[float], measured_s: list[float]) -> tuple[float, float]:
    """Compute time and overlap together, on a grid (the model is piecewise linear in them); needs
    points at clearly different communication times."""
    top = max(measured_s)
    best = (float("inf"), 0.0, 0.0)
    for i in range(1, COMPUTE_GRID_POINTS + 1):
        compute_s = top * i / COMPUTE_GRID_POINTS
        overlap = fit_overlap(compute_s, comm_s, measured_s)
        best = min(best, (_relative_sse(compute_s, overlap, comm_s, measured_s), compute_s, overlap))
    return best[1], best[2]


# Points this far apart in communication time pin down compute and overlap together.
DISTINCT_COMM_RATIO = 2.0


def project(records: list[dict], ceilings: dict | None, internode_gbps: tuple[float, ...]) -> list[Projection]:
    """One projection per strategy/preset/precision/batch with at least one multi-device case with a
    measured bus bandwidth (weak scaling only). Compute per step: fitted together with the overlap
    when the cases ran at clearly different communication times (e.g. one link at two rates), else
    the world-size-1 case's step. A record may carry its own ``_busbw_bytes_per_s`` (pooled runs)."""
    groups: dict[tuple, list[dict]] = {}
    for record in records:
        if record.get("scaling") == "weak" and record.get("round_times_s"):
            groups.setdefault(_group_key(record), []).append(record)
    projections = []
    for key, group in sorted(groups.items()):
        base = [r for r in group if r["world_size"] == 1]
        multi = [(r, r.get("_busbw_bytes_per_s") or _busbw(r, ceilings or {})) for r in group if r["world_size"] > 1]
        multi = [(r, bw) for r, bw in multi if bw]
        if not multi:
            continue
        projection = _project_group(key, base[0] if base else None, multi, ceilings or {}, internode_gbps)
        if projection is not None:
            projections.append(projection)
    return projections


def _project_group(key, base: dict | None, multi: list[tuple[dict, float]], ceilings: dict,
                   internode_gbps: tuple[float, ...]) -> Projection | None:
    strategy, preset, precision, batch, device_type = key
    gradient_bytes = int(multi[0][0]["num_params"]) * GRADIENT_BYTES_PER_PARAM
    comm = [ring_comm_s(r["world_size"], gradient_bytes, bw) for r, bw in multi]
    measured = [step_s(r) for r, _ in multi]
    if max(comm) >= DISTINCT_COMM_RATIO * min(comm):
        compute_s, overlap = fit_compute_and_overlap(comm, measured)
        compute_from = "fitted"
    elif base is not None:
        compute_s = step_s(base)
        overlap = fit_overlap(compute_s, comm, measured)
        compute_from = f"measured at world size 1 ({base['case_id']})"
    else:
        return None
    points = tuple(
        MeasuredPoint(r["case_id"], r["world_size"], r.get("nodes", 1), bw, m, model_step_s(compute_s, c, overlap))
        for (r, bw), c, m in zip(multi, comm, measured))
    label = f"{strategy} / {preset} / {precision} / batch {batch} per device ({device_type}); compute {compute_from}"
    worst = max(points, key=lambda p: p.error)
    if worst.error > MAX_MODEL_ERROR:
        reason = (f"not projected: the model is off by {worst.error:.0%} at {worst.case_id} "
                  f"(more than {MAX_MODEL_ERROR:.0%})")
        return Projection(label, compute_s, gradient_bytes, overlap, points, (), reason)
    if not internode_gbps:
        return Projection(label, compute_s, gradient_bytes, overlap, points, (),
                          "not projected: no --internode-gbps was given for the run")
    slots = max([max(r.get("slots_per_node", [r["world_size"]])) for r, _ in multi])
    within = next((e.get("busbw_bytes_per_s") for e in ceilings.get("allreduce", [])
                   if (e.get("device_type"), e.get("world_size")) == (device_type, slots)), None)
    rows = []
    if compute_s <= 0:
        return Projection(label, 0.0, gradient_bytes, overlap, points, (),
                          "not projected: the fitted compute time per step is not positive")
    for nodes in PROJECTED_NODES:
        devices = nodes * slots
        if devices < 2:
            continue
        rates = [(None, within)] if nodes == 1 else [(gbps, gbps * 1e9 / 8) for gbps in internode_gbps]
        for gbps, busbw in rates:
            if not busbw:
                continue
            step = model_step_s(compute_s, ring_comm_s(devices, gradient_bytes, busbw), overlap)
            # A projected step is a round of one step (weak scaling: every device trains its batch); the
            # 1-device baseline trains one batch in the compute time alone.
            projected = metrics.samples_per_s_at(devices * batch, step)
            efficiency = metrics.scaling_efficiency(projected, devices, metrics.samples_per_s_at(batch, compute_s))
            rows.append(ProjectedRow(nodes, devices, gbps, step, efficiency, projected))
    return Projection(label, compute_s, gradient_bytes, overlap, points, tuple(rows), None)


def projections_from_payloads(payloads: list[dict], internode_gbps: tuple[float, ...] | None = None) -> list[Projection]:
    """Projections from the runs' cases pooled, each case with the bus bandwidth its own run measured
    (the within-one-host bandwidth for the projected one-node row: the last run's). The inter-node
    rates: ``internode_gbps`` (the report's --internode-gbps) when given, else those the runs were given."""
    pooled, rates, ceilings = [], set(), {}
    for payload in payloads:
        ceilings = payload.get("machine_info", {}).get("gpusizer", {}).get("ceilings", {}) or {}
        rates |= set(payload.get("gpusizer", {}).get("internode_gbps", ()) or ())
        for bench in payload.get("benchmarks", []):
            record = bench.get("extra_info", {})
            if "round_times_s" not in record:
                continue
            try:
                pooled.append({**record, "_busbw_bytes_per_s": _busbw(record, ceilings)})
            except (KeyError, TypeError, ValueError):
                continue  # a record without the keys the model needs (older schema)
    if internode_gbps:
        rates = set(internode_gbps)
    try:
        return project(pooled, ceilings, tuple(sorted(rates)))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return []  # files without what the model needs: no projection rather than a broken report


TITLE = "Scaling projection (a model, not a measurement)"
POINT_HEADER = ("measured case", "bus bandwidth", "measured step", "model", "model error")
ROW_HEADER = ("nodes", "devices", "inter-node", "projected step", "projected scaling efficiency",
              "projected samples/s")


def _explanation() -> str:
    return ("PROJECTION from a ring all-reduce model: step = compute + comm - overlap x min(compute, comm), "
            "comm = 2(N-1)/N x gradient bytes / bus bandwidth, the overlap fitted to the cases that ran. "
            f"Nothing is projected where the model is off by more than {MAX_MODEL_ERROR:.0%} at a measured point.")


def _fit_note(proj: Projection) -> str:
    return (f"compute {proj.compute_s * 1e3:.3g} ms/step, gradients {proj.gradient_bytes / 1e6:.3g} MB, "
            f"fitted overlap {proj.overlap:.0%}")


def _point_cells(proj: Projection) -> list[tuple[str, ...]]:
    """The model's error at every measured point: one row of cells per point."""
    return [(p.case_id, f"{p.busbw_bytes_per_s / 1e9 * 8:.3g} Gbit/s", f"{p.measured_step_s * 1e3:.3g} ms",
             f"{p.predicted_step_s * 1e3:.3g} ms", f"{p.error:.1%}") for p in proj.points]


def _row_cells(proj: Projection) -> list[tuple[str, ...]]:
    """The projected rows, as cells."""
    return [(str(row.nodes), str(row.devices),
             "within one host (measured)" if row.internode_gbps is None else f"{row.internode_gbps:g} Gbit/s",
             f"{row.step_s * 1e3:.3g} ms", f"{row.scaling_efficiency:.0%}", f"{row.samples_per_s:.4g}")
            for row in proj.rows]


def render_projection_html(projections: list[Projection]) -> str:
    """The report section; empty when there is nothing to project from."""
    if not projections:
        return ""
    esc = html.escape

    def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> str:
        head = "".join(f"<th>{esc(cell)}</th>" for cell in header)
        body = "".join("<tr>" + "".join(f"<td>{esc(cell)}</td>" for cell in row) + "</tr>" for row in rows)
        return f"<table><tr>{head}</tr>{body}</table>"

    parts = [f"<h2>{esc(TITLE)}</h2>", f'<p class="note">{esc(_explanation())}</p>']
    for proj in projections:
        parts += [f"<h3>{esc(proj.label)}: projection</h3>", f'<p class="note">{esc(_fit_note(proj))}</p>',
                  table(POINT_HEADER, _point_cells(proj))]
        if proj.withheld_reason:
            parts.append(f'<p class="note">{esc(proj.withheld_reason)}</p>')
        else:
            parts.append(table(ROW_HEADER, _row_cells(proj)))
    return "\n".join(parts)


def render_projection_markdown(projections: list[Projection]) -> str:
    """The same section for the Markdown summary; empty when there is nothing to project from."""
    if not projections:
        return ""

    def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        return lines + ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows] + [""]

    lines = ["", f"## {TITLE}", "", _explanation(), ""]
    for proj in projections:
        lines += [f"### {proj.label}: projection", "", _fit_note(proj), ""]
        lines += table(POINT_HEADER, _point_cells(proj))
        if proj.withheld_reason:
            lines += [f"**{proj.withheld_reason}**", ""]
        else:
            lines += table(ROW_HEADER, _row_cells(proj))
    return "\n".join(lines)
