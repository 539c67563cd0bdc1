"""Commands on hosts over SSH (paramiko), for facts libvirt does not give.

libvirt's interface driver reads ``/sys/class/net``, which on hosts in network
namespaces (and on some distributions) is not the host's own view; ``ip`` over SSH is.
"""

from __future__ import annotations

import re
import threading
import time

import paramiko

from .errors import HostUnreachable
from .inventory import SshSpec


def run(spec: SshSpec, command: str, timeout: float = 10.0) -> str:
    """Run ``command`` on the host; its stdout, or ``HostUnreachable`` with stderr."""
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
        _, stdout, stderr = client.exec_command(command, timeout=timeout)
        status = stdout.channel.recv_exit_status()
        out = stdout.read().decode(errors="replace")
        if status != 0:
            raise HostUnreachable(f"{spec.host}: '{command}' exited {status}: {stderr.read().decode().strip()}")
        return out
    except (OSError, paramiko.SSHException) as exc:
        raise HostUnreachable(f"{spec.host}: ssh: {exc}") from None
    finally:
        client.close()


_LINK = re.compile(r"^\d+:\s+([^:@\s]+)[^:]*:.*?\bmtu (\d+)", re.M)


def parse_bridges(ip_output: str) -> dict[str, int]:
    """Bridge names and MTUs from ``ip -o link show type bridge``."""
    return {m.group(1): int(m.group(2)) for m in _LINK.finditer(ip_output)}


_CACHE: dict[tuple[str, int], tuple[float, dict[str, int]]] = {}
_CACHE_LOCK = threading.Lock()


def bridges(spec: SshSpec, max_age: float = 30.0) -> dict[str, int]:
    """The host's bridges and MTUs; answers up to ``max_age`` seconds old are reused, since an
    SSH round trip per migration would cost more than the migration of an idle guest."""
    key = (spec.host, spec.port)
    with _CACHE_LOCK:
        cached = _CACHE.get(key)
    if cached and time.monotonic() - cached[0] <= max_age:
        return dict(cached[1])
    found = parse_bridges(run(spec, "ip -o link show type bridge"))
    with _CACHE_LOCK:
        _CACHE[key] = (time.monotonic(), found)
    return dict(found)
