"""Commands on hosts over SSH (paramiko), for facts libvirt does not give.

libvirt's interface driver reads ``/sys/class/net``, which on hosts in network
namespaces (and on some distributions) is not the host's own view; ``ip`` over SSH is.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import paramiko

from .errors import HostUnreachable
from .inventory import SshSpec


@contextmanager
def session(spec: SshSpec, timeout: float = 10.0) -> Iterator[paramiko.SSHClient]:
    """A connected client (host key checked against ``known_hosts``); ``HostUnreachable`` if not."""
    client = paramiko.SSHClient()
    try:
        if spec.known_hosts:
            client.load_host_keys(spec.known_hosts)
        else:
            client.load_system_host_keys()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        client.connect(
            spec.host,
            port=spec.port,
            username=spec.user,
            key_filename=spec.key,
            timeout=timeout,
            banner_timeout=timeout,
            auth_timeout=timeout,
            allow_agent=False,
            look_for_keys=spec.key is None,
        )
        yield client
    except (OSError, paramiko.SSHException) as exc:
        raise HostUnreachable(f"{spec.host}: ssh: {exc}") from None
    finally:
        client.close()


def _exec(client: paramiko.SSHClient, spec: SshSpec, command: str, timeout: float) -> str:
    _, stdout, stderr = client.exec_command(command, timeout=timeout)
    status = stdout.channel.recv_exit_status()
    out = stdout.read().decode(errors="replace")
    if status != 0:
        raise HostUnreachable(f"{spec.host}: '{command}' exited {status}: {stderr.read().decode().strip()}")
    return out


def run(spec: SshSpec, command: str, timeout: float = 10.0) -> str:
    """Run ``command`` on the host; its stdout, or ``HostUnreachable`` with stderr."""
    with session(spec, timeout) as client:
        return _exec(client, spec, command, timeout)


def clock_offset(spec: SshSpec, timeout: float = 10.0, tries: int = 5) -> tuple[float, float]:
    """(host clock minus ours, round trip) in seconds. One shell on the host answers each
    line we send with ``date +%s.%N``, so a round trip is a line over an open channel,
    not a new command; the host's reading is taken as of the middle of the round trip, so
    the offset is known to within half of it. The try with the shortest round trip wins."""
    best: tuple[float, float] | None = None
    with session(spec, timeout) as client:
        stdin, stdout, _ = client.exec_command("while read -r _; do date +%s.%N; done", timeout=timeout)
        for _ in range(tries):
            sent = time.time()
            stdin.write("\n")
            stdin.flush()
            line = stdout.readline()
            received = time.time()
            if not line.strip():
                raise HostUnreachable(f"{spec.host}: 'date +%s.%N' gave no answer")
            rtt = received - sent
            offset = float(line.strip()) - (sent + rtt / 2)
            if best is None or rtt < best[1]:
                best = (offset, rtt)
        stdin.channel.shutdown_write()
    assert best is not None
    return best


_LINK = re.compile(r"^\d+:\s+([^:@\s]+)[^:]*:.*?\bmtu (\d+)", re.M)


def parse_bridges(ip_output: str) -> dict[str, int]:
    """Bridge names and MTUs from ``ip -o link show type bridge``."""
    return {m.group(1): int(m.group(2)) for m in _LINK.finditer(ip_output)}


_CACHE: dict[tuple[str, int], tuple[float, dict[str, int]]] = {}
_CACHE_LOCK = threading.Lock()


def bridges(spec: SshSpec, max_age: float = 30.0) -> dict[str, int]:
    """The host's bridges and MTUs; answers up to ``max_age`` seconds old are reused, since an
    SSH round trip per host checked would cost ``evac doctor`` more than its checks. A job
    reads afresh (``max_age=0``) and keeps what it read (:mod:`evac.connections`)."""
    key = (spec.host, spec.port)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached and max_age > 0 and time.monotonic() - cached[0] <= max_age:
        return dict(cached[1])
    found = parse_bridges(run(spec, "ip -o link show type bridge"))
    with _CACHE_LOCK:
        _CACHE[key] = (time.monotonic(), found)
    return dict(found)
