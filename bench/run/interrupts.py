"""SIGTERM and SIGHUP end a run as Ctrl-C does: the case being measured is marked interrupted, its
worker trees are killed and reaped, the result file keeps every finished case, exit status 2.

A CI cancel sends SIGTERM (then SIGKILL after a grace period), a closed terminal SIGHUP. Python's
default for both is to die on the spot, skipping every ``finally``: torchrun and its ranks live on,
re-parented to init. Raising KeyboardInterrupt instead sends both through the tested Ctrl-C path.
"""

from __future__ import annotations

import signal
import threading

HANDLED = (signal.SIGTERM, signal.SIGHUP)

_received: list[str] = []  # signal names, in the order they came
_previous: dict[int, object] = {}


def _on_signal(number: int, _frame) -> None:
    first = not _received
    _received.append(signal.Signals(number).name)
    # Only the first one interrupts: a second SIGTERM (CI sends more than one) while the first is
    # being handled would cut the reaping of the worker trees short.
    if first:
        raise KeyboardInterrupt(f"received {signal.Signals(number).name}")


def install() -> None:
    """From pytest_configure, in the main thread (the only one that may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        return
    for number in HANDLED:
        previous = signal.getsignal(number)
        if previous is signal.SIG_IGN:
            continue  # started under nohup (or told to ignore it): keep ignoring it
        _previous[number] = previous
        signal.signal(number, _on_signal)


def uninstall() -> None:
    for number, previous in _previous.items():
        signal.signal(number, previous)
    _previous.clear()


def cause() -> str:
    """What ended the run early, for the reason of the case cut short."""
    return _received[0] if _received else "Ctrl-C"
