"""Heavy one-off work in rank processes of its own, never in the pytest process: the matmul peak
(bench/hardware/peak.py) and --verify's reference training (bench/run/verify.py).

``run_in_ranks`` starts one plain Python process per call (``python -m bench.launch.probe``), all at
once, each with the thread count of the training it stands beside (OMP_NUM_THREADS and
``torch.set_num_threads``), so a probe measures under the settings of the ranks it judges. The processes
wait for each other before calling (a barrier of files), so probes that share a CPU overlap as the ranks
do. Each result comes back through ``torch.save`` (loaded with ``weights_only=True``). Every process has
the deadline and is killed and reaped (bench/launch/processes.py), also on failure or Ctrl-C; a failure
is one line.
"""

from __future__ import annotations

import importlib
import io
import json
import os
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path

from bench.hardware.allocator import allocator_env
from bench.launch.processes import LaunchedProcessTree

REQUEST_ENV = "GPUSIZER_PROBE"  # JSON: target ("module:function"), kwargs, threads, index, count, folder
POLL_S = 0.05
LOG_TAIL_CHARS = 300


class ProbeError(RuntimeError):
    """A probe process failed or missed its deadline: one line saying which and why."""


def run_in_ranks(target: str, calls: list[dict], *, threads: int, timeout_s: float, what: str) -> list:
    """``target(**kwargs)`` for each kwargs of ``calls``, each in a rank process of its own, side by side."""
    folder = Path(tempfile.mkdtemp(prefix="gpusizer-probe-"))
    trees: list[LaunchedProcessTree] = []
    deadline = time.monotonic() + timeout_s
    try:
        for index, kwargs in enumerate(calls):
            request = {"target": target, "kwargs": kwargs, "threads": threads, "index": index,
                       "count": len(calls), "folder": str(folder)}
            env = {**os.environ, **allocator_env(os.environ), REQUEST_ENV: json.dumps(request), "OMP_NUM_THREADS": str(threads),
                   "PYTHONUNBUFFERED": "1", "TMPDIR": str(folder)}
            trees.append(LaunchedProcessTree([sys.executable, "-m", __name__], env, "probe"))
        results = []
        for index, tree in enumerate(trees):
            code = tree.wait(deadline - time.monotonic())
            if code is None:
                raise ProbeError(f"{what}: probe process {index} gave no result within {timeout_s:g} s")
            if code != 0:
                last = [line for line in tree.log_text().splitlines() if line.strip()][-1:] or ["no output"]
                raise ProbeError(f"{what}: probe process {index} exited with code {code}: "
                                 f"{last[0].strip()[:LOG_TAIL_CHARS]}")
            results.append(_load((folder / f"result{index}.pt").read_bytes()))
        return results
    finally:
        for tree in trees:
            tree.kill()  # reaps a finished process too, and removes its log
        shutil.rmtree(folder, ignore_errors=True)


def _load(data: bytes):
    import torch

    return torch.load(io.BytesIO(data), weights_only=True)


def _start_together(folder: Path, index: int, count: int, deadline: float) -> None:
    """Say this process is ready, then wait until every process of the call is."""
    (folder / f"ready{index}").touch()
    while sum((folder / f"ready{other}").exists() for other in range(count)) < count:
        if time.monotonic() > deadline:
            raise TimeoutError("the other probe processes never got ready")
        time.sleep(POLL_S)


def main() -> None:
    request = json.loads(os.environ[REQUEST_ENV])
    try:
        import torch

        torch.set_num_threads(int(request["threads"]))
        module_name, function_name = request["target"].split(":")
        function = getattr(importlib.import_module(module_name), function_name)
        folder = Path(request["folder"])
        _start_together(folder, int(request["index"]), int(request["count"]), time.monotonic() + 600.0)
        result = function(**request["kwargs"])
        partial = folder / f"result{request['index']}.part"
        torch.save(result, partial)
        partial.rename(folder / f"result{request['index']}.pt")
    except BaseException:  # noqa: BLE001 - the parent reads the last line of the log
        traceback.print_exc()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(1)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)  # as the ranks do: no interpreter shutdown


if __name__ == "__main__":
    main()
