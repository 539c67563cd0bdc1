"""Certificates for the lab's TLS: one lab CA; per host one key and certificate (for its
address) that serves as both server and client, laid out for QEMU's migration streams,
for libvirtd's TLS listener and for the host's etcd member; and one client pair for evac
itself (``pkipath``, and its etcd client certificate).

Every certificate carries both ``serverAuth`` and ``clientAuth``: a QEMU migration end,
an etcd member (its peers, and its own gRPC gateway, dial with the server certificate)
and evac's client pair are each used on both sides of a handshake somewhere.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import EvacError

QEMU_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")
LIBVIRT_SERVER_FILES = ("cacert.pem", "servercert.pem", "serverkey.pem")
LIBVIRT_CLIENT_FILES = ("cacert.pem", "clientcert.pem", "clientkey.pem")  # what ?pkipath= expects
ETCD_MEMBER_FILES = ("ca.pem", "member.pem", "member-key.pem")
CA = tuple[Path, Path]


def _openssl(*argv: str) -> None:
    proc = subprocess.run(["openssl", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise EvacError(f"openssl {argv[0]}: {proc.stderr.strip()}")


def ensure_ca(directory: Path, name: str = "evac lab CA") -> CA:
    """The CA certificate and key in ``directory``, made once."""
    cert, key = directory / "ca-cert.pem", directory / "ca-key.pem"
    if not (cert.exists() and key.exists()):
        directory.mkdir(parents=True, exist_ok=True)
        _openssl(
            "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-days", "3650", "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(cert),
            "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
        )  # fmt: skip
    return cert, key


def _issue(
    ca: CA,
    directory: Path,
    name: str,
    address: str | None,
    ca_as: tuple[str, ...],
    cert_as: tuple[str, ...],
    key_as: tuple[str, ...],
) -> None:
    """A key and a certificate for ``name`` (and ``address``), stored in ``directory``
    under each of the names the consumer looks for, beside the CA certificate."""
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = ca
    with tempfile.TemporaryDirectory() as tmp:
        key, csr, ext, cert = (Path(tmp) / n for n in ("key.pem", "req.csr", "ext.cnf", "cert.pem"))
        san = f"subjectAltName=IP:{address},DNS:{name}\n" if address else ""
        usage = "keyUsage=critical,digitalSignature,keyEncipherment\n"  # libvirt refuses one without keyEncipherment
        ext.write_text(san + "extendedKeyUsage=serverAuth,clientAuth\n" + usage)
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={name}", "-keyout", str(key), "-out", str(csr),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-set_serial",
            str(secrets.randbits(63)), "-days", "3650", "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        for made, names in ((ca_cert, ca_as), (cert, cert_as), (key, key_as)):
            for target in names:
                shutil.copy(made, directory / target)


def issue_qemu_credentials(ca: CA, directory: Path, host: str, address: str) -> None:
    """QEMU's migration credential directory for one host (CA, server and client pairs)."""
    if not all((directory / f).exists() for f in QEMU_FILES):
        certs, keys = ("server-cert.pem", "client-cert.pem"), ("server-key.pem", "client-key.pem")
        _issue(ca, directory, host, address, ("ca-cert.pem",), certs, keys)


def issue_libvirt_server(ca: CA, directory: Path, host: str, address: str) -> None:
    """libvirtd's TLS listener files for one host (``ca_file``, ``cert_file``, ``key_file``)."""
    if not all((directory / f).exists() for f in LIBVIRT_SERVER_FILES):
        _issue(ca, directory, host, address, ("cacert.pem",), ("servercert.pem",), ("serverkey.pem",))


def issue_libvirt_client(ca: CA, directory: Path, name: str = "evac") -> None:
    """A client's ``pkipath`` directory: evac's, and every lab host's for peer-to-peer migration."""
    if not all((directory / f).exists() for f in LIBVIRT_CLIENT_FILES):
        _issue(ca, directory, name, None, ("cacert.pem",), ("clientcert.pem",), ("clientkey.pem",))


def issue_etcd_member(ca: CA, directory: Path, host: str, address: str) -> None:
    """An etcd member's pair for one host: its client listener and its peer traffic, both ways."""
    if not all((directory / f).exists() for f in ETCD_MEMBER_FILES):
        _issue(ca, directory, host, address, ("ca.pem",), ("member.pem",), ("member-key.pem",))
