"""Does the harness add anything to distributed training? Suite vs standalone peers, alternated in one run.

    .venv/bin/python scripts/compare-peers.py --world-size 2 --preset small --repeats 3

For ddp and fsdp (peer: peers/ddp_standalone.py under torchrun, ``--wrap fsdp`` for FSDP2) and horovod
(peer: peers/horovod_synthetic.py under horovodrun; scripts/peer_runs.py launches them) it runs `pytest bench/` and the peer in turn, ``--repeats`` times, swapping which
goes first each time so drift on a shared machine hits both alike. Same model, per-device batch,
steps per round, rounds, world size and threads per rank on both sides. Prints every pair, then per
strategy the median samples/s of each side and the median of the pair ratios suite/peer (target:
within 5% of 1).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from peer_runs import ROOT, TIMEOUT_S, peer_rate


def suite_rate(strategy: str, args, workdir: Path) -> float:
    out = workdir / f"suite-{strategy}.json"
    out.unlink(missing_ok=True)
    subprocess.run(
        [sys.executable, "-m", "pytest", str(ROOT / "bench"), "-q", "-p", "no:cacheprovider", "--device", "cpu",
         "--strategies", strategy, "--world-sizes", str(args.world_size), "--presets", args.preset,
         "--precisions", "fp32", "--batch-size", str(args.batch_size), "--steps-per-round", str(args.steps),
         "--rounds", str(args.rounds), "--warmup-rounds", str(args.warmup_rounds), "--benchmark-json", str(out)],
        check=True, cwd=workdir, stdout=subprocess.DEVNULL, timeout=TIMEOUT_S,
    )
    return json.loads(out.read_text())["benchmarks"][0]["extra_info"]["samples_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description="suite vs standalone peers for ddp, fsdp and horovod, alternated")
    parser.add_argument("--strategies", default="ddp,horovod")
    parser.add_argument("--world-size", type=int, default=2)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup-rounds", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    unknown = set(strategies) - {"ddp", "fsdp", "horovod"}
    if unknown:
        parser.error(f"--strategies: unknown {', '.join(sorted(unknown))}; allowed: ddp, fsdp, horovod")

    shape = (args.world_size, args.preset, args.batch_size, args.steps, args.rounds, args.warmup_rounds)
    pairs: dict[str, list[tuple[float, float]]] = {s: [] for s in strategies}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for strategy in strategies:
                if repeat % 2:
                    peer = peer_rate(strategy, *shape)
                    suite = suite_rate(strategy, args, Path(tmp))
                else:
                    suite = suite_rate(strategy, args, Path(tmp))
                    peer = peer_rate(strategy, *shape)
                pairs[strategy].append((suite, peer))
                print(f"{strategy} repeat {repeat + 1}: suite {suite:,.1f} samples/s, peer {peer:,.1f} samples/s, "
                      f"ratio {suite / peer:.3f}", flush=True)
    for strategy, results in pairs.items():
        suites, peers = [s for s, _ in results], [p for _, p in results]
        ratio = statistics.median(s / p for s, p in results)
        print(f"{strategy} world size {args.world_size}: median suite {statistics.median(suites):,.1f} samples/s, "
              f"median peer {statistics.median(peers):,.1f} samples/s, median ratio suite/peer {ratio:.3f}")


if __name__ == "__main__":
    main()
