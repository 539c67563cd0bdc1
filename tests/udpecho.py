"""An RFC 862 UDP echo on loopback for reachability tests: a guest's service that can go
deaf for a while (``deaf``) or answer only after its first datagrams (``deaf_for``)."""

from __future__ import annotations

import socket
import threading


class UdpEcho:
    def __init__(self, deaf_for: int = 0) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.05)
        self.port = int(self.sock.getsockname()[1])
        self.deaf = threading.Event()
        self.deaf_for = deaf_for
        self.received = 0
        self.stopped = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stopped.is_set():
            try:
                data, peer = self.sock.recvfrom(2048)
            except TimeoutError:
                continue
            self.received += 1
            if not self.deaf.is_set() and self.received > self.deaf_for:
                self.sock.sendto(data, peer)

    def close(self) -> None:
        self.stopped.set()
        self.thread.join()
        self.sock.close()
