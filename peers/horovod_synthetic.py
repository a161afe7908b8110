"""Horovod's synthetic-benchmark recipe on the reference model: the peer of `pytest bench/ --strategies horovod`.

    horovodrun -np 2 -H localhost:2 --gloo python peers/horovod_synthetic.py --preset small --batch-size 256

Written the way Horovod's own PyTorch synthetic benchmark goes: hvd.init, DistributedOptimizer,
broadcast of parameters and optimizer state, a ``benchmark_step`` (zero_grad, forward, loss, backward,
step) timed with timeit for N batches per iteration. The step is spelled out here instead of calling
``reference_model.train_step`` because that is what a Horovod user writes (and Horovod's zero_grad
takes no set_to_none); the arithmetic is the same. Horovod's recipe reports rank 0's mean rate times
the world size; this script prints that and, for the comparison, the median-round rate from the
slowest rank, as gpusizer measures it.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import timeit

import horovod.torch as hvd
import torch
import torch.nn.functional as F

from reference_model import LEARNING_RATE, build_model, make_batches, preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=256, help="per rank")
    parser.add_argument("--steps", type=int, default=10, help="batches per timed iteration")
    parser.add_argument("--rounds", type=int, default=10, help="timed iterations")
    parser.add_argument("--warmup-rounds", type=int, default=2)
    args = parser.parse_args()

    hvd.init()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    config = preset(args.preset)
    model = build_model(config)
    optimizer = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
    optimizer = hvd.DistributedOptimizer(optimizer, named_parameters=model.named_parameters())
    hvd.broadcast_parameters(model.state_dict(), root_rank=0)
    hvd.broadcast_optimizer_state(optimizer, root_rank=0)
    batches = make_batches(config, args.batch_size, seed=0, rank=hvd.rank(), device="cpu")
    step = 0

    def benchmark_step() -> None:
        nonlocal step
        inputs, targets = batches[step % len(batches)]
        optimizer.zero_grad()
        loss = F.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        step += 1

    timeit.timeit(benchmark_step, number=args.warmup_rounds * args.steps)
    round_times_s = [timeit.timeit(benchmark_step, number=args.steps) for _ in range(args.rounds)]

    slowest = hvd.allreduce(torch.tensor(round_times_s, dtype=torch.float64), op=hvd.Max, name="round_times")
    if hvd.rank() == 0:
        rates = [args.batch_size * args.steps / seconds for seconds in round_times_s]
        print(json.dumps({
            "peer": "horovod_synthetic", "world_size": hvd.size(),
            "samples_per_s": args.batch_size * hvd.size() * args.steps / statistics.median(slowest.tolist()),
            "horovod_style_total_samples_per_s": hvd.size() * statistics.mean(rates),
            "round_times_s": slowest.tolist(),
        }), flush=True)
    hvd.shutdown()


if __name__ == "__main__":
    main()
