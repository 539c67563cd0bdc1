"""Certificates for QEMU's migration TLS in the lab: one lab CA, and per host one key
and certificate (for its address) that serves as both server and client, laid out as
QEMU's x509 credential directory expects.
"""

from __future__ import annotations

import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from ..errors import EvacError

QEMU_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")


def _openssl(*argv: str) -> None:
    proc = subprocess.run(["openssl", *argv], capture_output=True, text=True)
    if proc.returncode != 0:
        raise EvacError(f"openssl {argv[0]}: {proc.stderr.strip()}")


def ensure_ca(directory: Path, name: str = "evac lab CA") -> tuple[Path, Path]:
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


def issue_qemu_credentials(ca: tuple[Path, Path], directory: Path, host: str, address: str) -> None:
    """QEMU's credential directory for one host (CA, server and client pairs), if missing."""
    if all((directory / f).exists() for f in QEMU_FILES):
        return
    directory.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = ca
    with tempfile.TemporaryDirectory() as tmp:
        key, csr, ext, cert = (Path(tmp) / n for n in ("key.pem", "req.csr", "ext.cnf", "cert.pem"))
        ext.write_text(
            f"subjectAltName=IP:{address},DNS:{host}\n"
            "extendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature\n"
        )
        _openssl(
            "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-subj", f"/CN={host}", "-keyout", str(key), "-out", str(csr),
        )  # fmt: skip
        _openssl(
            "x509", "-req", "-in", str(csr), "-CA", str(ca_cert), "-CAkey", str(ca_key), "-set_serial",
            str(secrets.randbits(63)), "-days", "3650", "-extfile", str(ext), "-out", str(cert),
        )  # fmt: skip
        shutil.copy(ca_cert, directory / "ca-cert.pem")
        for role in ("server", "client"):
            shutil.copy(cert, directory / f"{role}-cert.pem")
            shutil.copy(key, directory / f"{role}-key.pem")
