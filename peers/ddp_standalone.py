"""DDP training as a user would write it, without gpusizer's harness: the peer of `pytest bench/ --strategies ddp`.

    torchrun --standalone --nproc-per-node 2 peers/ddp_standalone.py --preset small --batch-size 256
    torchrun --standalone --nproc-per-node 1 peers/ddp_standalone.py --wrap fsdp   # the peer of --strategies fsdp

With ``--wrap fsdp`` the model is sharded with FSDP2 as its tutorial writes it (``fully_shard`` on each
Linear, then on the root, the optimizer made after sharding) instead of wrapped in DDP.

Same model, per-rank data, train step, per-device batch and steps per round as the suite. Each rank
times its rounds with perf_counter; the slowest rank's time per round counts (gathered after the
timed loop), and rank 0 prints one JSON line with the global samples/s of the median round.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from reference_model import Precision, TrainState, build_model, make_batches, make_optimizer, preset, train_step


def wrap(model: torch.nn.Module, how: str) -> torch.nn.Module:
    if how == "ddp":
        return DistributedDataParallel(model)
    from torch.distributed.fsdp import fully_shard  # public since torch 2.6

    for layer in model.modules():
        if isinstance(layer, torch.nn.Linear):
            fully_shard(layer)
    return fully_shard(model)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=256, help="per rank")
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup-rounds", type=int, default=2)
    parser.add_argument("--wrap", choices=("ddp", "fsdp"), default="ddp")
    args = parser.parse_args()

    # One share of the cores per rank, as torchrun's OMP_NUM_THREADS asks.
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    dist.init_process_group("gloo")
    rank, world_size = dist.get_rank(), dist.get_world_size()

    config = preset(args.preset)
    model = wrap(build_model(config), args.wrap)
    state = TrainState(model, make_optimizer(model), Precision("fp32", "cpu"))
    batches = make_batches(config, args.batch_size, seed=0, rank=rank, device="cpu")

    round_times_s = []
    step = 0
    for round_index in range(args.warmup_rounds + args.rounds):
        began = time.perf_counter()
        for _ in range(args.steps):
            train_step(state, *batches[step % len(batches)])
            step += 1
        if round_index >= args.warmup_rounds:
            round_times_s.append(time.perf_counter() - began)

    slowest = torch.tensor(round_times_s, dtype=torch.float64)
    dist.all_reduce(slowest, op=dist.ReduceOp.MAX)
    if rank == 0:
        median_s = statistics.median(slowest.tolist())
        print(json.dumps({"peer": f"{args.wrap}_standalone", "world_size": world_size,
                          "samples_per_s": args.batch_size * world_size * args.steps / median_s,
                          "round_times_s": slowest.tolist()}), flush=True)
    dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
