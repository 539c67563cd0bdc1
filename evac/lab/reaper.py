"""Run a command as a child subreaper and reap every orphan at once.

libvirt double-forks QEMU and waits for a stopped QEMU's PID to vanish. Where PID 1
reaps orphans only every second or two (as on the machines this lab runs on), that
adds over a second to every migration and destroy; a subreaper per host removes it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys

PR_SET_CHILD_SUBREAPER = 36


def main() -> None:
    ctypes.CDLL(None).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    # A handler rather than SIG_IGN, so the exec'd daemon keeps default dispositions.
    signal.signal(signal.SIGTERM, lambda *_: None)
    if os.fork() == 0:
        os.execvp(sys.argv[1], sys.argv[1:])
    while True:
        try:
            os.wait()
        except ChildProcessError:
            break
        except InterruptedError:
            pass


if __name__ == "__main__":
    main()
