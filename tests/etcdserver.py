"""A real single-member etcd for the tests: free ports on 127.0.0.1, data in a temporary
directory, short raft timers so a lease or an election takes well under a second.

One server serves a whole test session; each test works under a key prefix of its own.
:func:`leaderless_member` is one member of three whose two peers are gone: it still
answers, but has no leader.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from evac.etcdclient import EtcdSettings
from tests.conftest import poll_until

ETCD = shutil.which("etcd") or "/usr/bin/etcd"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class EtcdServer:
    def __init__(self, workdir: Path, name: str = "evac-test", peer_url: str = "") -> None:
        self.workdir = workdir
        self.name = name
        self.client_url = f"http://127.0.0.1:{free_port()}"
        self.peer_url = peer_url or f"http://127.0.0.1:{free_port()}"
        self.initial_cluster = f"{name}={self.peer_url}"
        self.log = workdir / f"{name}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    ETCD,
                    f"--name={self.name}",
                    f"--data-dir={self.workdir / self.name}",
                    f"--listen-client-urls={self.client_url}",
                    f"--advertise-client-urls={self.client_url}",
                    f"--listen-peer-urls={self.peer_url}",
                    f"--initial-advertise-peer-urls={self.peer_url}",
                    f"--initial-cluster={self.initial_cluster}",
                    "--heartbeat-interval=50",
                    "--election-timeout=500",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def wait_healthy(self) -> None:
        poll_until(self.healthy, 20, f"etcd to answer on {self.client_url} (log: {self.log})")

    def healthy(self) -> bool:
        assert self.process is not None
        if self.process.poll() is not None:
            raise AssertionError(f"etcd exited with {self.process.returncode}; log: {self.log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{self.client_url}/health", timeout=1) as answer:
                return b'"true"' in answer.read()
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    @contextmanager
    def frozen(self) -> Iterator[None]:
        """etcd stopped (SIGSTOP) inside the block: it accepts connections and answers nothing."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)
        try:
            yield
        finally:
            self.process.send_signal(signal.SIGCONT)

    def settings(self, prefix: str) -> EtcdSettings:
        """Short timeouts and leases: a test of a lost lease or a silent etcd takes a second."""
        return EtcdSettings(endpoints=(self.client_url,), prefix=prefix, timeout=1.0, lease_ttl=2)


@contextmanager
def etcd_server() -> Iterator[EtcdServer]:
    with tempfile.TemporaryDirectory(prefix="evac-test-etcd-") as workdir:
        server = EtcdServer(Path(workdir))
        server.start()
        server.wait_healthy()
        try:
            yield server
        finally:
            server.stop()


@contextmanager
def leaderless_member() -> Iterator[EtcdServer]:
    """A member of a three-member cluster whose two peers were stopped once it had
    joined: it accepts requests, and a request that needs a leader waits for one."""
    with tempfile.TemporaryDirectory(prefix="evac-test-etcd3-") as workdir:
        members = [EtcdServer(Path(workdir), name) for name in ("m1", "m2", "m3")]
        everyone = ",".join(f"{m.name}={m.peer_url}" for m in members)
        try:
            for member in members:
                member.initial_cluster = everyone
                member.start()
            for member in members:
                member.wait_healthy()
            for peer in members[1:]:
                peer.stop()
            poll_until(lambda: not members[0].healthy(), 20, "the last member to lose its leader")
            yield members[0]
        finally:
            for member in members:
                member.stop()
