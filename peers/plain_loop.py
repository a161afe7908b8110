"""The seed's plain training loop, written as a user would, without the harness.

The peer for the harness-overhead check: same model, batch, thread count and steps as
`pytest bench/ --strategies single`; it prints one JSON line with its median samples/s.

    python peers/plain_loop.py --preset small --batch-size 256 --steps 10 --rounds 10
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from torch import nn

from reference_model import build_model, make_batches, preset


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--warmup-rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    config = preset(args.preset)
    model = build_model(config)
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    batches = make_batches(config, args.batch_size, seed=0, rank=0, device="cpu")

    round_times_s = []
    step = 0
    for round_index in range(args.warmup_rounds + args.rounds):
        began = time.perf_counter()
        for _ in range(args.steps):
            inputs, targets = batches[step % len(batches)]
            outputs = model(inputs)
            loss = criterion(outputs, targets)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            step += 1
        if round_index >= args.warmup_rounds:
            round_times_s.append(time.perf_counter() - began)
    samples_per_s = args.batch_size * args.steps / statistics.median(round_times_s)
    print(json.dumps({"peer": "plain_loop", "samples_per_s": samples_per_s, "round_times_s": round_times_s}))


if __name__ == "__main__":
    main()
