"""The scaling projection (reports/projection.py) on made-up records whose answer is known."""

from __future__ import annotations

import pytest

from reports.projection import (
    MAX_MODEL_ERROR,
    model_step_s,
    project,
    projections_from_payloads,
    render_projection_html,
    render_projection_markdown,
    ring_comm_s,
)

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


def payload(records: list[dict], internode_gbps=()) -> dict:
    """A result file as `pytest bench/` writes it, with only what the projection reads."""
    return {"machine_info": {"gpusizer": {"ceilings": CEILINGS}}, "gpusizer": {"internode_gbps": list(internode_gbps)},
            "benchmarks": [{"extra_info": rec} for rec in records]}


def test_multinode_projection_markdown_says_what_the_html_says():
    compute_s, overlap = 0.1, 0.25
    measured = model_step_s(compute_s, ring_comm_s(2, GRAD_BYTES, 50e6), overlap)
    [proj] = projections_from_payloads([payload([record(1, compute_s), record(2, measured, 2, ("a:1", "b:1"))],
                                                (0.5,))])
    markdown = render_projection_markdown([proj])
    assert "## Scaling projection (a model, not a measurement)" in markdown and "PROJECTION" in markdown
    row = next(r for r in proj.rows if r.nodes == 8)
    assert 0.2 < row.scaling_efficiency < 0.9  # a row where the link matters
    cells = ["8", "8", "0.5 Gbit/s", f"{row.step_s * 1e3:.3g} ms", f"{row.scaling_efficiency:.0%}"]
    assert "| " + " | ".join(cells) + " |" in markdown
    assert "<td>" + "</td><td>".join(cells) + "</td>" in render_projection_html([proj])
    assert "| ddp-2-tiny-fp32-2nodes | 0.4 Gbit/s |" in markdown  # the model's error at the measured point
    withheld = projections_from_payloads([payload([record(1, compute_s), record(2, measured, 2, ("a:1", "b:1"))])])
    assert "**not projected: no --internode-gbps was given for the run**" in render_projection_markdown(withheld)
    assert render_projection_markdown([]) == ""


def test_multinode_report_internode_gbps_projects_at_the_rates_given_to_the_report(tmp_path, capsys):
    import json

    from reports.cli import main as gpusizer

    compute_s = 0.1
    measured = model_step_s(compute_s, ring_comm_s(2, GRAD_BYTES, 50e6), 0.25)
    data = payload([record(1, compute_s), record(2, measured, 2, ("a:1", "b:1"))], (100.0,))
    [proj] = projections_from_payloads([data], (25.0, 400.0))
    assert {r.internode_gbps for r in proj.rows if r.nodes > 1} == {25.0, 400.0}  # the report's rates win
    source = tmp_path / "run.json"
    source.write_text(json.dumps(data))
    with pytest.raises(SystemExit) as exit_info:
        gpusizer(["report", str(source), "--internode-gbps", "100,-1", "-o", str(tmp_path / "r.html")])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1 and "--internode-gbps" in error and "'-1'" in error, error
    assert not (tmp_path / "r.html").exists()  # nothing written on bad input
