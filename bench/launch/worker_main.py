"""Entry point of every launched rank: ``python -m bench.launch.worker_main``, under torchrun or horovodrun,
or started alone as the one rank of ``single`` and ``dp`` (bench/launch/plain.py).

Connects back to the controller, builds the TrainingWorker every strategy trains with, then serves
commands until told to close: ``run_round`` (K steps, answers this rank's own seconds),
``profiled_round`` (K more steps under torch.profiler after the timed rounds: the step's parts in seconds,
bench/run/step_profile.py),
``peak_memory``, ``facts`` (every device's peak and what the strategy measured in the rank: the
record's keys of docs/record.md), ``reset_peak_memory``, ``accounted_step_peak`` (one more step under
the Ledger of sizing/accounting.py: its peak bytes, the CPU's measured step peak), ``parameters`` (full
tensors; rank 0 sends them), ``try_batch`` (--find-max-batch: drop this case's model, build it at another
per-device batch, run one step, answer whether it fit and its peak; an out-of-memory error is caught
in the rank, which stays up and holds no model until ``new_case``), ``release_case`` (drop this case's
model, optimizer, batches and matmul mode and give the memory back; the process group stays),
``new_case`` (release, then build the case sent with it and answer ``ready``: the controller keeps a
group up across the cases of its strategy and world size, see bench/run/group_pool.py) and ``close``.
The fault hook's round count starts afresh with every case.

Any exception is sent to the controller as one line before the process exits, so the case fails
with the rank and the cause. A rank whose controller went away exits at once.

Test hook (parsed here; read by every rank and by the all-reduce ceiling): ``GPUSIZER_FAULT`` holds
comma-separated items.

- ``[<case id>:]rank<R>:<kind>@round<N>`` makes rank R misbehave when its N-th round command arrives
  (calibration and warm-up rounds count, and with --step-breakdown the profiled round after the last timed
  one), in every case or only in the named one: ``crash`` sends itself
  SIGKILL (as the OOM killer would), ``hang`` sleeps forever, ``raise`` raises RuntimeError, ``oom``
  raises torch.OutOfMemoryError. ``single`` and ``dp`` run in a rank 0 of their own like the others, so
  every kind applies to them too.
- ``allreduce[<W>]:<fail|hang>`` makes the all-reduce ceiling (bench/hardware/bandwidth.py) at world size W
  (every world size without W) raise in its ranks or never answer.
- ``[<case id>:]comm:delay<MS>`` makes every gradient all-reduce of the case's training finish MS
  milliseconds later, as over a slower link (the strategy's ``delay_communication``: ddp only), so a test
  can watch the step breakdown's exposed communication grow.

tests/test_faults.py uses it to kill, hang and exhaust real workers at a known point.
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
HOST_ENV = "GPUSIZER_HOST"  # set by node_main: the host name of a multi-node case, sent in the hello
FAULT_KINDS = ("crash", "hang", "raise", "oom")
CEILING_FAULT_KINDS = ("fail", "hang")
FAULT_GRAMMAR = (f"comma-separated [<case id>:]rank<R>:<{'|'.join(FAULT_KINDS)}>@round<N>, "
                 f"allreduce[<W>]:<{'|'.join(CEILING_FAULT_KINDS)}> or [<case id>:]comm:delay<MS>")
_RANK_FAULT = re.compile(r"(?:(?P<case>[A-Za-z0-9_.-]+):)?rank(?P<rank>\d+):(?P<kind>\w+)@round(?P<round>\d+)")
_CEILING_FAULT = re.compile(r"allreduce(?P<world>\d+)?:(?P<kind>\w+)")
_COMM_DELAY = re.compile(r"(?:(?P<case>[A-Za-z0-9_.-]+):)?comm:delay(?P<ms>\d+)")


@dataclass(frozen=True)
class Fault:
    rank: int
    kind: str
    round: int
    case_id: str | None = None  # None: every case

    @classmethod
    def parse(cls, text: str | None) -> Fault | None:
        """The first rank fault of ``text`` (kept for callers that inject one)."""
        faults = parse_faults(text)[0]
        return faults[0] if faults else None

    def applies_to(self, case_id: str) -> bool:
        return self.case_id is None or self.case_id == case_id

    def fire_if_due(self, rank: int, round_number: int) -> None:
        if rank != self.rank or round_number != self.round:
            return
        if self.kind == "crash":
            os.kill(os.getpid(), signal.SIGKILL)
        if self.kind == "hang":
            while True:
                time.sleep(3600)
        if self.kind == "oom":
            import torch

            raise torch.OutOfMemoryError(f"injected out of memory ({FAULT_ENV}) in round {round_number}")
        raise RuntimeError(f"injected fault ({FAULT_ENV}) in round {round_number}")


@dataclass(frozen=True)
class CeilingFault:
    kind: str  # fail | hang
    world_size: int | None = None  # None: every world size

    def applies_to(self, world_size: int) -> bool:
        return self.world_size is None or self.world_size == world_size


def parse_faults(text: str | None) -> tuple[list[Fault], list[CeilingFault]]:
    """Every item of ``GPUSIZER_FAULT``; ValueError names a malformed item and the grammar."""
    rank_faults: list[Fault] = []
    ceiling_faults: list[CeilingFault] = []
    for item in (part.strip() for part in (text or "").split(",")):
        if not item:
            continue
        if _COMM_DELAY.fullmatch(item):
            continue  # read by comm_delay_s
        ceiling = _CEILING_FAULT.fullmatch(item)
        if ceiling is not None and ceiling["kind"] in CEILING_FAULT_KINDS:
            world = ceiling["world"]
            ceiling_faults.append(CeilingFault(ceiling["kind"], int(world) if world else None))
            continue
        match = _RANK_FAULT.fullmatch(item)
        if match is None or match["kind"] not in FAULT_KINDS:
            raise ValueError(f"{FAULT_ENV}={text!r}: item {item!r} is malformed; allowed: {FAULT_GRAMMAR}")
        rank_faults.append(Fault(int(match["rank"]), match["kind"], int(match["round"]), match["case"]))
    return rank_faults, ceiling_faults


def case_faults(case_id: str, text: str | None = None) -> list[Fault]:
    """The rank faults that apply to this case (``text`` defaults to the environment's)."""
    text = os.environ.get(FAULT_ENV) if text is None else text
    return [fault for fault in parse_faults(text)[0] if fault.applies_to(case_id)]


def comm_delay_s(case_id: str, text: str | None = None) -> float:
    """Seconds every all-reduce of this case is delayed by (``comm:delay<MS>``; 0: none)."""
    text = os.environ.get(FAULT_ENV) if text is None else text
    parse_faults(text)  # a malformed item is refused here too
    delays = [match for part in (text or "").split(",") if (match := _COMM_DELAY.fullmatch(part.strip()))]
    return sum(int(m["ms"]) / 1000.0 for m in delays if m["case"] in (None, case_id))


def _one_line(error: BaseException) -> str:
    text = f"{type(error).__name__}: {error}"
    return " ".join(text.split())[:500]


def _serialise(tensors) -> bytes:
    import torch

    buffer = io.BytesIO()
    torch.save(tensors, buffer)
    return buffer.getvalue()


def _serve(conn, worker, rank: int, faults: list[Fault]) -> dict | None:
    """Serve one case's commands; returns the next case's fields on ``new_case``, None on ``close``."""
    from bench.launch.channel import ChannelClosed

    rounds = 0
    while True:
        try:
            message, _ = conn.recv()
        except ChannelClosed:
            os._exit(1)  # the controller is gone: nobody will ever read our results
        command = message.get("cmd")
        if command in ("run_round", "profiled_round"):
            rounds += 1  # the fault hook counts the profiled round too: the one after the last timed round
            for fault in faults:
                fault.fire_if_due(rank, rounds)
        if command == "run_round":
            conn.send({"event": "done", "seconds": worker.run_round(int(message["steps"]))})
        elif command == "profiled_round":  # after the timed rounds: the step's parts, numbers only
            conn.send({"event": "done", "step_breakdown": _profiled_round(worker, int(message["steps"]))})
        elif command == "peak_memory":
            conn.send({"event": "done", "peak_memory_bytes": worker.peak_memory_bytes()})
        elif command == "facts":
            facts = worker.facts()
            conn.send({"event": "done", "peak_memory_bytes_per_device": facts.pop("peak_memory_bytes_per_device"),
                       "rank_facts": facts})
        elif command == "accounted_step_peak":  # CPU: one more step under the Ledger, every rank together
            conn.send({"event": "done", "peak_bytes": worker.accounted_step_peak_bytes()})
        elif command == "try_batch":  # --find-max-batch: this rank at another batch, one step (batch_try.py)
            answer = _try_batch(worker, int(message["per_device_batch_size"]), message.get("limit_bytes"))
            conn.send({"event": "done", **answer})
        elif command == "reset_peak_memory":
            worker.reset_peak_memory()
            conn.send({"event": "done"})
        elif command == "parameters":
            tensors = worker.full_parameters()  # a collective for sharded strategies: every rank calls it
            conn.send({"event": "done"}, _serialise(tensors) if rank == 0 else b"")
        elif command == "release_case":  # the case ended cleanly and the group is kept: idle lean
            worker.release()
            _give_back_memory()
            conn.send({"event": "done"})
        elif command == "new_case":
            return dict(message["case"])
        elif command == "close":
            return None
        else:
            raise ValueError(f"unknown command {command!r}")


def _profiled_round(worker, steps: int) -> dict:
    """The rank's step parts; a failure of the profiler or of the trace's reduction is the split's reason,
    not the case's: the case was measured already."""
    try:
        return worker.profiled_round(steps)
    except Exception as error:  # noqa: BLE001 - any failure here only costs the split
        return {"reason": f"rank {worker.ctx.rank}: {_one_line(error)}"}


def _try_batch(worker, batch: int, limit_bytes: int | None) -> dict:
    """Drop the case's model (the try needs the memory), try ``batch`` in a rank of its own, answer
    ``{fits, peak_bytes}``. The rank keeps its process group and holds no model until ``new_case``."""
    import dataclasses

    from bench.run.batch_try import try_batch

    worker.release()
    _give_back_memory()
    fits, peak = try_batch(dataclasses.replace(worker.case, per_device_batch_size=batch), limit_bytes,
                           rank=worker.ctx.rank, local_rank=worker.ctx.local_rank, join=False)
    _give_back_memory()
    return {"fits": fits, "peak_bytes": peak}


def _give_back_memory() -> None:
    """Between two cases of one group: free what the last one held, so the next case's peak (CUDA's
    allocated bytes, the CPU's peak RSS after its reset) is its own. glibc keeps freed heap pages
    mapped until malloc_trim; elsewhere the call is skipped."""
    import ctypes
    import gc

    from bench.run.memory import release_cached_memory

    gc.collect()
    release_cached_memory()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def rank_host() -> str | None:
    """The host this rank runs on, as the user named it in --hosts, so a failure can name the host:
    node_main sets GPUSIZER_HOST for torchrun's ranks, horovodrun sets HOROVOD_HOSTNAME (the -H name)."""
    return os.environ.get(HOST_ENV) or os.environ.get("HOROVOD_HOSTNAME")


def main() -> None:
    from bench.config.cases import BenchCase
    from bench.launch.channel import ADDRESS_ENV, TOKEN_ENV, connect
    from bench.launch.remote import CASE_ENV, DUMP_DIR_ENV, RANK_ENV, STACK_SIGNAL

    rank_var, local_rank_var = os.environ[RANK_ENV].split(",")
    rank, local_rank = int(os.environ[rank_var]), int(os.environ[local_rank_var])
    # The controller asks a late rank where it is stuck; faulthandler answers even inside C code.
    dump = open(os.path.join(os.environ[DUMP_DIR_ENV], f"rank{rank}.txt"), "w")  # noqa: SIM115 (lives until exit)
    faulthandler.register(STACK_SIGNAL, file=dump, all_threads=False)
    conn = connect(os.environ[ADDRESS_ENV], os.environ[TOKEN_ENV], rank, {"pid": os.getpid(), "host": rank_host()})
    worker = None
    try:
        case = BenchCase(**json.loads(os.environ[CASE_ENV]))
        faults = case_faults(case.case_id)
        from bench.run.worker import TrainingWorker

        worker = TrainingWorker(case, rank=rank, local_rank=local_rank, comm_delay_s=comm_delay_s(case.case_id))
        conn.send({"event": "ready", "threads": worker.threads})
        while (next_case := _serve(conn, worker, rank, faults)) is not None:
            # The next case of this group: the process group stays, everything of the case goes first,
            # so the new model is built in the memory the old one gave back.
            worker.release()
            worker = None
            _give_back_memory()
            case = BenchCase(**next_case)
            faults = case_faults(case.case_id)  # per case: its rounds count from 1 again
            worker = TrainingWorker(case, rank=rank, local_rank=local_rank, join=False,
                                    comm_delay_s=comm_delay_s(case.case_id))
            conn.send({"event": "ready", "threads": worker.threads})
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
