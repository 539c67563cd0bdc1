"""Where a lab's hosts live: names, addresses, namespaces and files.

Host ``hostN`` is the network namespace ``<prefix>-hostN`` (address ``<net>.N``, a veth
into the bridge ``<prefix>br0`` at ``<net>.254`` in the root namespace), plus a mount
namespace with private libvirt directories and a UTS namespace for its hostname. The
namespaces are pinned to files, so a host's processes can be killed ("power off") and
started again in the same host. Everything here is derived from the lab directory and
``lab.json``, so any process can open a lab another one built.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from ..errors import EvacError

DEFAULT_DIR = Path(os.environ.get("EVAC_LAB_DIR", "/tmp/evac-lab"))


class LabError(EvacError):
    """The lab could not be brought into the requested state."""


@dataclass(frozen=True)
class LabHost:
    name: str
    index: int
    address: str
    netns: str
    veth: str

    @property
    def uri(self) -> str:
        return f"qemu+tcp://{self.address}/system"


class LabLayout:
    """The paths and addresses of one lab. Several can coexist with different ``root``/``prefix``/``net``."""

    def __init__(self, root: Path | str = DEFAULT_DIR, prefix: str = "evac", net: str = "198.18.0") -> None:
        self.root = Path(root)
        self.prefix = prefix
        self.net = net
        self.bridge = f"{prefix}br0"
        self.bridge_ip = f"{net}.254"
        self.state_file = self.root / "lab.json"
        self.inventory_file = self.root / "hosts.yaml"
        self.shared = self.root / "shared"
        self.ns_dir = self.root / "ns"
        self.ssh_dir = self.root / "ssh"
        self.lockspace = self.shared / "lockspace"
        self.client_pki_dir = self.root / "pki" / "client"

    @classmethod
    def open(cls, root: Path | str = DEFAULT_DIR) -> Self:
        """The lab at ``root`` with the prefix and network it was created with."""
        state = Path(root) / "lab.json"
        if not state.exists():
            return cls(root)
        data = json.loads(state.read_text())
        return cls(root, prefix=data.get("prefix", "evac"), net=data.get("net", "198.18.0"))

    def host_names(self) -> list[str]:
        if not self.state_file.exists():
            return []
        return list(json.loads(self.state_file.read_text())["hosts"])

    def host(self, name: str) -> LabHost:
        names = self.host_names()
        if name not in names:
            raise LabError(
                f"unknown lab host '{name}'; the lab has: {', '.join(names) or 'no hosts (run evac lab up)'}"
            )
        index = int(name.removeprefix("host"))
        return LabHost(
            name=name,
            index=index,
            address=f"{self.net}.{index}",
            netns=f"{self.prefix}-{name}",
            veth=f"{self.prefix}h{index}",
        )

    def hosts(self) -> list[LabHost]:
        return [self.host(n) for n in self.host_names()]

    def host_dir(self, name: str) -> Path:
        return self.root / "hosts" / name

    def tls_uri(self, name: str) -> str:
        """The host's libvirtd over TLS, with the lab's client certificate (evac's, and the
        hosts' own for peer-to-peer migration: ``/tmp`` is not private to a host)."""
        return f"qemu+tls://{self.host(name).address}/system?pkipath={self.client_pki_dir}"

    def ssh_uri(self, name: str) -> str:
        """The host's libvirtd through its sshd (libssh2, the lab key and known_hosts; the
        OpenSSH client would write to ``~/.ssh``)."""
        return (
            f"qemu+libssh2://root@{self.host(name).address}/system?keyfile={self.ssh_dir / 'id_ed25519'}"
            f"&known_hosts={self.ssh_dir / 'known_hosts'}&sshauth=privkey"
        )

    def qemu_pki_dir(self, name: str) -> Path:
        """QEMU's migration TLS credentials of a host (``/etc/libvirt/pki-qemu`` inside it)."""
        return self.host_dir(name) / "etc" / "pki-qemu"

    def _mnt(self, name: str) -> Path:
        """The file the host's mount namespace is pinned to."""
        return self.ns_dir / f"{name}.mnt"

    def _uts(self, name: str) -> Path:
        """The file the host's UTS namespace (its hostname) is pinned to."""
        return self.ns_dir / f"{name}.uts"
