"""Entry point of every launched rank: ``python -m bench.launch.worker_main`` under torchrun or horovodrun.

Connects back to the controller, builds the same TrainingWorker the in-process strategies use, then
serves commands until told to close: ``run_round`` (K steps, answers this rank's own seconds),
``peak_memory``, ``parameters`` (full tensors; rank 0 sends them) and ``close``.

Any exception is sent to the controller as one line before the process exits, so the case fails
with the rank and the cause. A rank whose controller went away exits at once.

Test hook (read here and nowhere else): ``GPUSIZER_FAULT=rank<R>:<kind>@round<N>`` makes rank R
misbehave when its N-th round command arrives (warm-up rounds count): ``crash`` sends itself
SIGKILL (as the OOM killer would), ``hang`` sleeps forever, ``raise`` raises RuntimeError.
tests/test_faults.py uses it to kill and hang real workers at a known point.
"""

from __future__ import annotations

import faulthandler
import io
import json
import os
import re
import signal
import sys
import time
import traceback
from dataclasses import dataclass

FAULT_ENV = "GPUSIZER_FAULT"
FAULT_KINDS = ("crash", "hang", "raise")


@dataclass(frozen=True)
class Fault:
    rank: int
    kind: str
    round: int

    @classmethod
    def parse(cls, text: str | None) -> Fault | None:
        if not text:
            return None
        match = re.fullmatch(r"rank(\d+):(\w+)@round(\d+)", text.strip())
        if match is None or match.group(2) not in FAULT_KINDS:
            raise ValueError(f"{FAULT_ENV}={text!r}; allowed: rank<R>:<{'|'.join(FAULT_KINDS)}>@round<N>")
        return cls(int(match.group(1)), match.group(2), int(match.group(3)))

    def fire_if_due(self, rank: int, round_number: int) -> None:
        if rank != self.rank or round_number != self.round:
            return
        if self.kind == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "hang":
            while True:
                time.sleep(3600)
        raise RuntimeError(f"injected fault ({FAULT_ENV}) in round {round_number}")


def _one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())[:500]


def _serialise(tensors) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def _serve(conn, worker, rank: int, fault: Fault | None) -> None:
    from bench.launch.channel import ChannelClosed

    rounds = 0
    while True:
        try:
            message, _ = conn.recv()
        except ChannelClosed:
            os._exit(1)  # the controller is gone: nobody will ever read our results
        command = message.get("cmd")
        if command == "run_round":
            rounds += 1
            if fault is not None:
                fault.fire_if_due(rank, rounds)
            conn.send({"event": "done", "seconds": worker.run_round(int(message["steps"]))})
        elif command == "peak_memory":
            conn.send({"event": "done", "peak_memory_bytes": worker.peak_memory_bytes()})
        elif command == "parameters":
            tensors = worker.parameters_snapshot()  # a collective for sharded strategies: every rank calls it
            conn.send({"event": "done"}, _serialise(tensors) if rank == 0 else b"")
        elif command == "close":
            return
        else:
            raise ValueError(f"unknown command {command!r}")


def main() -> None:
    from bench.cases import BenchCase
    from bench.launch.channel import ADDRESS_ENV, TOKEN_ENV, connect
    from bench.launch.remote import CASE_ENV, DUMP_DIR_ENV, RANK_ENV, STACK_SIGNAL

    rank_var, local_rank_var = os.environ[RANK_ENV].split(",")
    rank, local_rank = int(os.environ[rank_var]), int(os.environ[local_rank_var])
    # The controller asks a late rank where it is stuck; faulthandler answers even inside C code.
    dump = open(os.path.join(os.environ[DUMP_DIR_ENV], f"rank{rank}.txt"), "w")  # noqa: SIM115 (lives until exit)
    faulthandler.register(STACK_SIGNAL, file=dump, all_threads=False)
    conn = connect(os.environ[ADDRESS_ENV], os.environ[TOKEN_ENV], rank, {"pid": os.getpid()})
    worker = None
    try:
        fault = Fault.parse(os.environ.get(FAULT_ENV))
        case = BenchCase(**json.loads(os.environ[CASE_ENV]))
        from bench.worker import TrainingWorker

        worker = TrainingWorker(case, rank=rank, local_rank=local_rank)
        conn.send({"event": "ready", "threads": worker.threads})
        _serve(conn, worker, rank, fault)
        # The clean exit of DESIGN.md: barrier, drop model and optimizer, leave the group, flush, _exit.
        worker.strategy.barrier(worker.ctx)
        worker.close()
    except BaseException as error:  # noqa: BLE001 - every failure must reach the controller as one line
        traceback.print_exc()
        try:
            conn.send({"event": "error", "message": _one_line(error)})
        except OSError:
            pass
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    conn.close()
    sys.stdout.flush()
    sys.stderr.flush()
    # Skips interpreter shutdown, where CPU gloo now and then aborts in its destructors.
    os._exit(0)


if __name__ == "__main__":
    main()
