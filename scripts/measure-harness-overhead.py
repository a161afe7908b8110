"""Harness overhead: `pytest bench/` single and ddp-1 against the same training without the harness.

    .venv/bin/python scripts/measure-harness-overhead.py --presets tiny,small,medium --pairs 5

For each preset, ``--pairs`` alternated pairs (the order flips every pair, so drift on a shared machine
hits both sides alike), each pair being:

- the suite: one `pytest bench/ --strategies single,ddp --world-sizes 1` run (CPU, fp32);
- the seed's plain loop (peers/plain_loop.py) in a process of its own;
- DDP as a user writes it at world size 1 (peers/ddp_standalone.py under torchrun), which is what DDP's
  own work at world size 1 costs over the plain loop, without the harness.

Same model, batch, steps per round, rounds and threads on every side. Printed per preset: the median
of suite single / plain loop (the target is >= 0.98), suite ddp-1 / suite single beside DDP's own cost
(ddp peer / plain loop: the two should agree), and what the harness spends per round outside the ranks'
own timing: the controller's command and the channel's reply (controller round minus the rank's own,
median) and the telemetry sampler's CPU time, with the 1-minute load average before and after.
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

ROOT = Path(__file__).resolve().parent.parent
TIMEOUT_S = 1800
# Steps per round x rounds per preset: the rounds of the seed's loop, shortened for medium (about 1 s a
# step on 2 CPU cores) so a pair stays within minutes.
SHAPES = {"tiny": (10, 10), "small": (10, 10), "medium": (3, 5)}


def load() -> float:
    return os.getloadavg()[0]


def suite(preset: str, steps: int, rounds: int, args, workdir: Path) -> dict:
    """One `pytest bench/` run of single and ddp at world size 1: each case's record and controller times."""
    out = workdir / "suite.json"
    out.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "bench"), "-q", "-p", "no:cacheprovider",
         "--strategies", "single,ddp", "--world-sizes", "1", "--presets", preset, "--precisions", "fp32",
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
    return found


def peer(command: list[str], env: dict | None = None) -> float:
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=TIMEOUT_S, env=env,
                          start_new_session=True)
    for line in reversed(done.stdout.splitlines()):
        if line.startswith('{"peer"'):
            return json.loads(line)["samples_per_s"]
    raise RuntimeError(f"no result line from {command[-1]}:\n{done.stdout[-2000:]}")


def plain(preset: str, steps: int, rounds: int, args) -> float:
    # The same thread settings as the suite's rank, which is started with OMP_NUM_THREADS = its threads.
    env = {**os.environ, "OMP_NUM_THREADS": str(len(os.sched_getaffinity(0)))}
    return peer([sys.executable, str(ROOT / "peers" / "plain_loop.py"), "--preset", preset,
                 "--batch-size", str(args.batch_size), "--steps", str(steps), "--rounds", str(rounds)], env)


def ddp_peer(preset: str, steps: int, rounds: int, args) -> float:
    threads = len(os.sched_getaffinity(0))  # world size 1: the one rank gets every core, as in the suite
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GLOO_SOCKET_IFNAME": "lo", "PYTHONPATH": str(ROOT)}
    return peer([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "1",
                 str(ROOT / "peers" / "ddp_standalone.py"), "--preset", preset, "--batch-size", str(args.batch_size),
                 "--steps", str(steps), "--rounds", str(rounds)], env)


def measure_preset(preset: str, args, workdir: Path) -> dict:
    steps, rounds = SHAPES.get(preset, (10, 10)) if args.steps is None else (args.steps, args.rounds)
    began_load = load()
    pairs = []
    for pair in range(args.pairs):
        sides = [lambda: ("suite", suite(preset, steps, rounds, args, workdir)),
                 lambda: ("plain", plain(preset, steps, rounds, args)),
                 lambda: ("ddp_peer", ddp_peer(preset, steps, rounds, args))]
        if pair % 2:
            sides.reverse()
        result = dict(side() for side in sides)
        single, ddp = result["suite"]["single"], result["suite"]["ddp"]
        pairs.append({"single_over_plain": single["samples_per_s"] / result["plain"],
                      "ddp_over_single": ddp["samples_per_s"] / single["samples_per_s"],
                      "ddp_peer_over_plain": result["ddp_peer"] / result["plain"],
                      "single": single, "ddp": ddp, "plain": result["plain"], "ddp_peer": result["ddp_peer"]})
        print(f"{preset} pair {pair + 1}: suite single {single['samples_per_s']:,.1f}, plain {result['plain']:,.1f} "
              f"samples/s, ratio {pairs[-1]['single_over_plain']:.3f}; ddp-1/single {pairs[-1]['ddp_over_single']:.3f}, "
              f"ddp peer/plain {pairs[-1]['ddp_peer_over_plain']:.3f}; load {load():.2f}", flush=True)
    return {"preset": preset, "steps": steps, "rounds": rounds, "pairs": pairs,
            "load_before": began_load, "load_after": load()}


def median(pairs: list[dict], key) -> float:
    return statistics.median(key(pair) for pair in pairs)


def table(results: list[dict]) -> list[str]:
    lines = [("| preset | steps x rounds | single / plain loop (median) | pairs | ddp-1 / single | DDP's own: ddp peer / plain "
             "| controller + channel per round | sampler CPU per round | load 1-min before -> after |"),
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        pairs = r["pairs"]
        message_s = median(pairs, lambda p: p["single"]["message_s"])
        round_s = median(pairs, lambda p: p["single"]["round_s"])
        sampler_s = median(pairs, lambda p: p["single"]["sampler_cpu_s_per_round"])
        lines.append(
            f"| {r['preset']} | {r['steps']} x {r['rounds']} | **{median(pairs, lambda p: p['single_over_plain']):.3f}** "
            f"| {', '.join(format(p['single_over_plain'], '.3f') for p in pairs)} "
            f"| {median(pairs, lambda p: p['ddp_over_single']):.3f} | {median(pairs, lambda p: p['ddp_peer_over_plain']):.3f} "
            f"| {message_s * 1e6:,.0f} us ({100 * message_s / round_s:.2f} % of a {round_s * 1e3:,.1f} ms round) "
            f"| {sampler_s * 1e6:,.0f} us | {r['load_before']:.2f} -> {r['load_after']:.2f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description="harness overhead: suite vs plain loop (and DDP at 1), alternated")
    parser.add_argument("--presets", default="tiny,small,medium")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, help="steps per round for every preset (default: per preset)")
    parser.add_argument("--rounds", type=int, default=10, help="with --steps: rounds for every preset")
    parser.add_argument("--pairs", type=int, default=5)
    parser.add_argument("--json", help="also write every pair's numbers here")
    args = parser.parse_args()
    print(f"harness overhead: {args.pairs} alternated pairs per preset, batch {args.batch_size}, "
          f"{len(os.sched_getaffinity(0))} cores, load {load():.2f}", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for preset in args.presets.split(","):
            results.append(measure_preset(preset, args, Path(tmp)))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    print("\n".join(table(results)))


if __name__ == "__main__":
    main()
