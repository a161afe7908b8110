"""Harness overhead: `pytest bench/` at world size 1 against the same training without the harness.

    .venv/bin/python scripts/measure-harness-overhead.py --presets tiny,small,medium --pairs 5

For each preset, ``--pairs`` alternated pairs (the order flips every pair, so drift on a shared machine
hits both sides alike), each pair being:

- the suite: one `pytest bench/ --strategies single,ddp,horovod,fsdp --world-sizes 1` run (CPU, fp32);
- each strategy's standalone peer (scripts/peer_runs.py): the seed's plain loop for single, DDP and
  FSDP2 as a user writes them under torchrun, Horovod's synthetic-benchmark recipe under horovodrun,
  each in processes of its own.

Same model, batch, steps per round, rounds and threads on every side. horovod and fsdp are measured at
the presets of ``--every-strategy-at`` (tiny and small: what issue 23 asks; at medium a step takes about
1 s here and each strategy adds minutes per pair); elsewhere single and ddp. Horovod is left out, with
the reason printed, when horovod.torch does not import (`make horovod`).

Printed per preset: the median of suite single / plain loop (the target is >= 0.98); for each other
strategy X, suite X-1 / suite single beside the peer's X / plain loop, which is what X's own work costs at
world size 1 without the harness (the two should agree), and suite X / peer X; what the harness spends
per round outside the ranks' own timing: the controller's command and the channel's reply (controller
round minus the rank's own, median) and the telemetry sampler's CPU time; the 1-minute load average
before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from peer_runs import ROOT, TIMEOUT_S, peer_rate

STRATEGIES = ("single", "ddp", "horovod", "fsdp")
# Steps per round x rounds per preset: the rounds of the seed's loop, shortened for medium (about 1 s a
# step on 2 CPU cores) so a pair stays within minutes.
SHAPES = {"tiny": (10, 10), "small": (10, 10), "medium": (3, 5)}


def load() -> float:
    return os.getloadavg()[0]


def horovod_missing() -> str | None:
    done = subprocess.run([sys.executable, "-c", "import horovod.torch"], check=False, capture_output=True,
                          text=True)
    return None if done.returncode == 0 else "horovod.torch does not import here (make horovod builds it)"


def suite(preset: str, strategies: list[str], steps: int, rounds: int, args, workdir: Path) -> dict:
    """One `pytest bench/` run of ``strategies`` at world size 1: each case's record and controller times."""
    out = workdir / "suite.json"
    out.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "bench"), "-q", "-p", "no:cacheprovider",
         "--strategies", ",".join(strategies), "--world-sizes", "1", "--presets", preset, "--precisions", "fp32",
         "--device", "cpu", "--batch-size", str(args.batch_size), "--steps-per-round", str(steps),
         "--rounds", str(rounds), "--benchmark-json", str(out)],
        check=True, cwd=workdir, stdout=subprocess.DEVNULL, timeout=TIMEOUT_S,
    )
    found = {}
    for bench in json.loads(out.read_text())["benchmarks"]:
        record = bench["extra_info"]
        controller = statistics.median(bench["stats"]["data"])
        rank = statistics.median(record["round_times_s"])
        telemetry = record.get("telemetry") or {}
        found[record["strategy"]] = {
            "samples_per_s": record["samples_per_s"],
            "message_s": controller - rank,  # the command out and the reply back, per round (median)
            "round_s": rank,
            "sampler_cpu_s_per_round": (telemetry.get("sampler_cpu_s") or 0.0) / record["rounds"],
        }
    missing = set(strategies) - set(found)
    if missing:
        raise RuntimeError(f"the suite recorded no {', '.join(sorted(missing))} case at {preset}")
    return found


def measure_preset(preset: str, strategies: list[str], args, workdir: Path) -> dict:
    steps, rounds = SHAPES.get(preset, (10, 10)) if args.steps is None else (args.steps, args.rounds)
    began_load = load()
    pairs = []
    for pair in range(args.pairs):
        sides = [lambda: ("suite", suite(preset, strategies, steps, rounds, args, workdir))]
        sides += [lambda s=s: (s, peer_rate(s, 1, preset, args.batch_size, steps, rounds)) for s in strategies]
        if pair % 2:
            sides.reverse()
        result = dict(side() for side in sides)
        pairs.append({"suite": result.pop("suite"), "peer": result})
        print(f"{preset} pair {pair + 1}: " + "; ".join(
            f"{s} suite {pairs[-1]['suite'][s]['samples_per_s']:,.1f} peer {result[s]:,.1f}" for s in strategies)
            + f" samples/s; load {load():.2f}", flush=True)
    return {"preset": preset, "steps": steps, "rounds": rounds, "strategies": strategies, "pairs": pairs,
            "load_before": began_load, "load_after": load()}


def suite_rate(pair: dict, strategy: str) -> float:
    return pair["suite"][strategy]["samples_per_s"]


def median(pairs: list[dict], key) -> float:
    return statistics.median(key(pair) for pair in pairs)


def table(results: list[dict]) -> list[str]:
    lines = [("| preset | steps x rounds | single / plain loop (median) | pairs | controller + channel per round "
              "| sampler CPU per round | load 1-min before -> after |"),
             "|---|---|---|---|---|---|---|"]
    for r in results:
        pairs = r["pairs"]
        ratios = [suite_rate(p, "single") / p["peer"]["single"] for p in pairs]
        message_s = median(pairs, lambda p: p["suite"]["single"]["message_s"])
        round_s = median(pairs, lambda p: p["suite"]["single"]["round_s"])
        sampler_s = median(pairs, lambda p: p["suite"]["single"]["sampler_cpu_s_per_round"])
        lines.append(
            f"| {r['preset']} | {r['steps']} x {r['rounds']} | **{statistics.median(ratios):.3f}** "
            f"| {', '.join(format(x, '.3f') for x in ratios)} "
            f"| {message_s * 1e6:,.0f} us ({100 * message_s / round_s:.2f} % of a {round_s * 1e3:,.1f} ms round) "
            f"| {sampler_s * 1e6:,.0f} us | {r['load_before']:.2f} -> {r['load_after']:.2f} |")
    lines += ["", ("| preset | strategy at world size 1 | suite X / suite single | its own cost: peer X / plain loop "
                   "| suite X / peer X |"), "|---|---|---|---|---|"]
    for r in results:
        pairs = r["pairs"]
        for x in r["strategies"][1:]:
            over_single = statistics.median(suite_rate(p, x) / suite_rate(p, "single") for p in pairs)
            own_cost = statistics.median(p["peer"][x] / p["peer"]["single"] for p in pairs)
            over_peer = statistics.median(suite_rate(p, x) / p["peer"][x] for p in pairs)
            lines.append(f"| {r['preset']} | {x} | {over_single:.3f} | {own_cost:.3f} | {over_peer:.3f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="harness overhead: suite vs standalone peers at world size 1, alternated")
    parser.add_argument("--presets", default="tiny,small,medium")
    parser.add_argument("--strategies", default=",".join(STRATEGIES),
                        help="at world size 1; single (the plain loop's pair) is always measured")
    parser.add_argument("--every-strategy-at", default="tiny,small",
                        help="presets measured with every strategy of --strategies; the others with single and ddp")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, help="steps per round for every preset (default: per preset)")
    parser.add_argument("--rounds", type=int, default=10, help="with --steps: rounds for every preset")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--json", help="also write every pair's numbers here")
    args = parser.parse_args()
    wanted = ["single"] + [s.strip() for s in args.strategies.split(",") if s.strip() and s.strip() != "single"]
    unknown = set(wanted) - set(STRATEGIES)
    if unknown:
        parser.error(f"--strategies: unknown {', '.join(sorted(unknown))}; allowed: {', '.join(STRATEGIES)}")
    if "horovod" in wanted and (reason := horovod_missing()):
        print(f"horovod left out: {reason}", flush=True)
        wanted.remove("horovod")
    every_at = {p.strip() for p in args.every_strategy_at.split(",")}
    print(f"harness overhead: {args.pairs} alternated pairs per preset, batch {args.batch_size}, "
          f"{len(os.sched_getaffinity(0))} cores, load {load():.2f}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            strategies = wanted if preset in every_at else [s for s in wanted if s in ("single", "ddp")]
            results.append(measure_preset(preset, strategies, args, Path(tmp)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
