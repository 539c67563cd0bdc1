"""Stop signals reach the main thread's wait even when the kernel hands them to another thread."""

from __future__ import annotations

import subprocess
import sys
import textwrap

# The signal is sent to a helper thread with pthread_kill, the way the kernel may pick any
# thread of a busy `evac serve` (libvirt's event loop, a job): the main thread must still stop.
# The helper sends once the main thread is ready: `ready` is set, and, for a handler the
# wait installs, the handler is in place (a signal before it would kill the process).
ON_ANOTHER_THREAD = textwrap.dedent(
    """
    import signal, threading, time
    from evac import signals

    ready = threading.Event()
    initial = signal.getsignal(signal.{sig})

    def send():
        ready.wait(30)
        deadline = time.monotonic() + 30
        while {wait_for_handler} and signal.getsignal(signal.{sig}) is initial and time.monotonic() < deadline:
            time.sleep(0.01)
        signal.pthread_kill(threading.get_ident(), signal.{sig})

    threading.Thread(target=send).start()
    {body}
    """
)


def run(sig: str, body: str, wait_for_handler: bool = True) -> subprocess.CompletedProcess[str]:
    code = ON_ANOTHER_THREAD.format(sig=sig, body=textwrap.dedent(body), wait_for_handler=wait_for_handler)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)


def test_sigterm_delivered_to_another_thread_ends_the_wait() -> None:
    done = run("SIGTERM", "ready.set(); print(signal.Signals(signals.until_signalled()).name)")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "SIGTERM"


def test_the_previous_handler_is_back_after_the_wait() -> None:
    done = run(
        "SIGINT",
        """
        ready.set()
        signals.until_signalled()
        print(signal.getsignal(signal.SIGINT) is signal.default_int_handler)
        """,
    )
    assert done.stdout.strip() == "True", done.stderr


def test_ctrl_c_delivered_to_another_thread_interrupts_a_join() -> None:
    done = run(
        "SIGINT",
        """
        worker = threading.Thread(target=time.sleep, args=(3600,), daemon=True)
        worker.start()
        try:
            ready.set()
            signals.join(worker)
        except KeyboardInterrupt:
            print("interrupted")
        """,
        wait_for_handler=False,
    )
    assert done.stdout.strip() == "interrupted", done.stderr
