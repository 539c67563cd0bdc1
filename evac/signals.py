"""Waiting in the main thread until the process is told to stop.

CPython runs Python signal handlers only in the main thread, between bytecodes. The
kernel may deliver SIGTERM to any thread that does not block it (libvirt's event loop,
paramiko, a job); a main thread parked in an untimed ``Event.wait()`` or ``join()`` then
never wakes to run the handler, and the process ignores the signal. Waiting in short
slices lets the handler run whichever thread the signal landed on.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterable
from types import FrameType

TICK = 0.2


def until_signalled(signals: Iterable[int] = (signal.SIGTERM, signal.SIGINT)) -> int:
    """Block until one of ``signals`` arrives and return it; earlier handlers come back after."""
    got: list[int] = []

    def note(signum: int, _frame: FrameType | None) -> None:
        got.append(signum)

    previous = {sig: signal.signal(sig, note) for sig in signals}
    try:
        while not got:
            time.sleep(TICK)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return got[0]


def join(thread: threading.Thread) -> None:
    """``thread.join()`` that still lets Ctrl-C through, on whichever thread it lands."""
    while thread.is_alive():
        thread.join(TICK)
