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

Where the multi-device cases recorded a measured step split (the record's ``step_breakdown``, issue 20),
nothing is fitted: ``compute_s`` is the measured compute, the work that does not communicate (compute,
other, idle) is kept as measured, the communication is the measured one (exposed + overlapped) scaled by
the ring factor and the bus bandwidth, and the overlap is the measured overlapped share of it
(``step_s = work_s + comm_s - overlap * min(compute_s, comm_s)``), all in the profiled round's own seconds.
A split whose overlapped communication was not seen (Horovod on CPU) is not used: the fit is.

The model's error is shown at every measured point, and nothing is projected from a model whose
error at any measured point exceeds MAX_MODEL_ERROR. It is a projection, labelled so everywhere.
"""

from __future__ import annotations

import html
import statistics
from dataclasses import dataclass

from gpusizer_common import metrics
from reports.schema import is_number

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
class MeasuredSplit:
    """A multi-device case's measured step split, as the projection uses it (seconds per step)."""

    case_id: str
    world_size: int
    busbw_bytes_per_s: float
    compute_s: float
    work_s: float  # compute + other + idle: what does not wait for the link
    comm_s: float  # exposed + overlapped
    overlap: float  # overlapped / min(compute, comm): the share the step hid

    @classmethod
    def of(cls, record: dict, busbw_bytes_per_s: float) -> MeasuredSplit:
        split = record["step_breakdown"]
        # In the profiled round's own seconds (the record states its shares on the timed step): at its own
        # point the model then predicts the profiled step, so its error there is how far that round strayed
        # from the timed ones, a real test even where only one multi-device case was measured.
        scale = split["profiled_step_s"] / split["step_s"]
        compute_s, hidden = split["compute_s"] * scale, split["overlapped_comm_s"] * scale
        comm_s = split["exposed_comm_s"] * scale + hidden
        shorter = min(compute_s, comm_s)
        return cls(record["case_id"], record["world_size"], busbw_bytes_per_s, compute_s,
                   compute_s + (split["other_s"] + split["idle_s"]) * scale, comm_s,
                   min(1.0, hidden / shorter) if shorter > 0 else 0.0)

    def step_at(self, world_size: int, busbw_bytes_per_s: float) -> float:
        """The step at another world size and bus bandwidth: the measured communication scaled by both."""
        comm_s = self.comm_s * (ring_comm_s(world_size, 1.0, busbw_bytes_per_s)
                                / ring_comm_s(self.world_size, 1.0, self.busbw_bytes_per_s))
        return self.work_s + comm_s - self.overlap * min(self.compute_s, comm_s)


@dataclass(frozen=True)
class Projection:
    label: str  # strategy / preset / precision / batch
    compute_s: float
    gradient_bytes: int
    overlap: float
    points: tuple[MeasuredPoint, ...]
    rows: tuple[ProjectedRow, ...]
    withheld_reason: str | None  # why nothing is projected (model error too large, no rates given)
    split: MeasuredSplit | None = None  # the measured step split it is built on; None: fitted

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
    # A split whose overlapped communication was not seen (Horovod on CPU: its all-reduces run where the
    # profiler does not look) measured only the exposed wait: too little to scale, so the fit is used.
    split_points = [(r, bw) for r, bw in multi if isinstance(r.get("step_breakdown"), dict)
                    and is_number(r["step_breakdown"].get("overlapped_comm_s"))]
    if split_points:  # measured compute and communication: nothing to fit
        return _project_from_split(key, split_points, gradient_bytes, ceilings, internode_gbps)
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
    slots, within = _node_slots(multi, ceilings, device_type)
    if compute_s <= 0:
        return Projection(label, 0.0, gradient_bytes, overlap, points, (),
                          "not projected: the fitted compute time per step is not positive")
    rows = _projected_rows(lambda devices, busbw: model_step_s(compute_s, ring_comm_s(devices, gradient_bytes, busbw),
                                                               overlap), slots, within, internode_gbps, batch, compute_s)
    return Projection(label, compute_s, gradient_bytes, overlap, points, tuple(rows), None)


def _project_from_split(key, multi: list[tuple[dict, float]], gradient_bytes: int, ceilings: dict,
                        internode_gbps: tuple[float, ...]) -> Projection:
    """The projection on the measured split of the largest multi-device case; every other measured case is
    a real test of it, and at the basis itself the error is how far its profiled round strayed from its timed
    rounds (MeasuredSplit.of)."""
    strategy, preset, precision, batch, device_type = key
    basis_record, basis_bw = max(multi, key=lambda point: point[0]["world_size"])
    split = MeasuredSplit.of(basis_record, basis_bw)
    points = tuple(MeasuredPoint(r["case_id"], r["world_size"], r.get("nodes", 1), bw, step_s(r),
                                 split.step_at(r["world_size"], bw)) for r, bw in multi)
    label = (f"{strategy} / {preset} / {precision} / batch {batch} per device ({device_type}); compute and "
             f"communication measured (step split of {split.case_id})")
    worst = max(points, key=lambda p: p.error)
    reason = None
    if worst.error > MAX_MODEL_ERROR:
        reason = (f"not projected: the model is off by {worst.error:.0%} at {worst.case_id} "
                  f"(more than {MAX_MODEL_ERROR:.0%})")
    elif not internode_gbps:
        reason = "not projected: no --internode-gbps was given for the run"
    rows = ()
    if reason is None:
        slots, within = _node_slots(multi, ceilings, device_type)
        rows = tuple(_projected_rows(lambda devices, busbw: split.step_at(devices, busbw), slots, within,
                                     internode_gbps, batch, split.work_s))
    return Projection(label, split.compute_s, gradient_bytes, split.overlap, points, rows, reason, split)


def _node_slots(multi: list[tuple[dict, float]], ceilings: dict, device_type: str) -> tuple[int, float | None]:
    """Devices per node in the projection (the most any case had on one node) and their measured bus bandwidth."""
    slots = max([max(r.get("slots_per_node", [r["world_size"]])) for r, _ in multi])
    within = next((e.get("busbw_bytes_per_s") for e in ceilings.get("allreduce", [])
                   if (e.get("device_type"), e.get("world_size")) == (device_type, slots)), None)
    return slots, within


def _projected_rows(step_at, slots: int, within: float | None, internode_gbps: tuple[float, ...], batch: int,
                    one_device_step_s: float):
    """Rows at 1..16 nodes of ``slots`` devices: within one host at its measured bandwidth, across hosts
    at each given rate. The 1-device baseline trains one batch in ``one_device_step_s``."""
    for nodes in PROJECTED_NODES:
        devices = nodes * slots
        if devices < 2:
            continue
        rates = [(None, within)] if nodes == 1 else [(gbps, gbps * 1e9 / 8) for gbps in internode_gbps]
        for gbps, busbw in rates:
            if not busbw:
                continue
            step = step_at(devices, busbw)
            # A projected step is a round of one step (weak scaling: every device trains its batch).
            projected = metrics.samples_per_s_at(devices * batch, step)
            efficiency = metrics.scaling_efficiency(projected, devices, metrics.samples_per_s_at(batch, one_device_step_s))
            yield ProjectedRow(nodes, devices, gbps, step, efficiency, projected)


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
            "comm = 2(N-1)/N x gradient bytes / bus bandwidth, the overlap fitted to the cases that ran; where the "
            "cases recorded a measured step split, compute, communication and overlap are the measured ones instead "
            "(communication scaled by 2(N-1)/N and the bus bandwidth). "
            f"Nothing is projected where the model is off by more than {MAX_MODEL_ERROR:.0%} at a measured point.")


def _fit_note(proj: Projection) -> str:
    split = proj.split
    if split is not None:
        return (f"measured at {split.case_id}: compute {split.compute_s * 1e3:.3g} ms/step, work that does not "
                f"communicate (compute, other, idle) {split.work_s * 1e3:.3g} ms, communication "
                f"{split.comm_s * 1e3:.3g} ms of which {split.overlap:.0%} of the shorter of the two hidden")
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
