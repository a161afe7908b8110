"""The scaling projection (reports/projection.py) on made-up records whose answer is known."""

from __future__ import annotations

import pytest

from reports.projection import MAX_MODEL_ERROR, model_step_s, project, render_projection_html, ring_comm_s

PARAMS = 1_000_000
GRAD_BYTES = 4 * PARAMS


def record(world_size: int, step_s: float, nodes: int = 1, hosts=()) -> dict:
    rec = {"case_id": f"ddp-{world_size}-tiny-fp32" + (f"-{nodes}nodes" if nodes > 1 else ""),
           "strategy": "ddp", "preset": "tiny", "precision": "fp32", "per_device_batch_size": 64,
           "device_type": "cpu", "scaling": "weak", "world_size": world_size, "num_params": PARAMS,
           "steps_per_round": 10, "round_times_s": [step_s * 10] * 3}
    if nodes > 1:
        rec.update(nodes=nodes, hosts=list(hosts), slots_per_node=[world_size // nodes] * nodes)
    return rec


CEILINGS = {"allreduce": [],
            "allreduce_across_hosts": [{"hosts": ["a", "b"], "busbw_bytes_per_s": 50e6}]}


def test_multinode_projection_fits_overlap_and_projects_at_the_given_rates():
    compute_s, overlap = 0.1, 0.25
    measured = model_step_s(compute_s, ring_comm_s(2, GRAD_BYTES, 50e6), overlap)
    [proj] = project([record(1, compute_s), record(2, measured, 2, ("a:1", "b:1"))], CEILINGS, (100.0, 400.0))
    assert proj.overlap == pytest.approx(overlap)
    assert proj.points[0].error == pytest.approx(0.0, abs=1e-9)
    assert proj.withheld_reason is None
    row = next(r for r in proj.rows if r.nodes == 4 and r.internode_gbps == 100.0)
    expected = model_step_s(compute_s, ring_comm_s(4, GRAD_BYTES, 100e9 / 8), overlap)
    assert row.step_s == pytest.approx(expected)
    assert row.scaling_efficiency == pytest.approx(compute_s / expected)
    assert "PROJECTION" in render_projection_html([proj])


def test_multinode_projection_withheld_when_the_model_misses_a_measured_point():
    # Two multi-node points no single overlap can fit: one needs far more communication time.
    comm = ring_comm_s(2, GRAD_BYTES, 50e6)
    records = [record(1, 0.1), record(2, 0.1 + comm, 2, ("a:1", "b:1")), record(4, 0.1 + 4 * comm, 2, ("a:2", "b:2"))]
    ceilings = {"allreduce_across_hosts": [{"hosts": ["a", "b"], "busbw_bytes_per_s": 50e6}]}
    [proj] = project(records, ceilings, (100.0,))
    assert max(p.error for p in proj.points) > MAX_MODEL_ERROR
    assert proj.rows == ()
    assert proj.withheld_reason.startswith("not projected: the model is off by")


def test_multinode_projection_fits_compute_from_one_link_at_two_rates():
    # comm 0.08 s (less than compute) and 0.32 s (more): both unknowns are pinned down.
    compute_s, overlap = 0.2, 0.4
    hosts = ("a:1", "b:1")
    points = [{**record(2, model_step_s(compute_s, ring_comm_s(2, GRAD_BYTES, bw), overlap), 2, hosts),
               "_busbw_bytes_per_s": bw} for bw in (50e6, 12.5e6)]
    [proj] = project(points, {}, (1.0,))  # no world-size-1 case needed
    assert proj.compute_s == pytest.approx(compute_s, rel=0.02)  # the fit's grid step
    assert proj.overlap == pytest.approx(overlap, abs=0.03)
    assert max(p.error for p in proj.points) < 0.01
    assert "compute fitted" in proj.label
