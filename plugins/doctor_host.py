"""Doctor checks of a host's software: ``clock``, ``migration_tls``, ``migration_ports``, ``versions``.

None of these is a safety check: a wrong clock muddles the evidence the monitor weighs
and the journal's timeline, missing TLS material or closed ports make a drain fail
(cleanly, before anything moves), and a known-bad version pair fails migrations. Each
says what it proved from where it stands (the controller), and what it could not.
"""

from __future__ import annotations

import re
import shlex
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from evac.doctor import DoctorContext, Finding, Result
from evac.errors import EvacError
from evac.hypervisor import Hypervisor
from evac.inventory import HostSpec
from evac.remote import clock_offset, run

from .doctor_locks import read_conf

LIBVIRTD_PORTS = {16509: "tcp", 16514: "tls"}
MIGRATION_PORTS = (49152, 49215)  # qemu.conf's migration_port_min/max defaults
QEMU_TLS_FILES = ("ca-cert.pem", "server-cert.pem", "server-key.pem", "client-cert.pem", "client-key.pem")


def check_clock(ctx: DoctorContext, host: HostSpec) -> Finding:
    if host.ssh is None:
        return Finding(Result.SKIP, "no ssh settings: the host's clock cannot be read", "add ssh: to the host")
    offset, rtt = clock_offset(host.ssh)
    margin = rtt / 2
    status = sync_status(run(host.ssh, SYNC_COMMAND))
    evidence = f"host clock {offset:+.3f} s against the controller (±{margin:.3f} s: half the SSH round trip); {status}"
    bound = ctx.clock_bound
    fix = "run chrony (or systemd-timesyncd) against the same servers on every host and the controller"
    if abs(offset) - margin > bound:
        return Finding(Result.FAIL, f"{evidence}; more than {bound:g} s off", fix)
    if abs(offset) + margin > bound:
        return Finding(Result.WARN, f"{evidence}; within {bound:g} s cannot be told from here", fix)
    if "not synchronised" in status:
        return Finding(Result.WARN, evidence, fix)
    return Finding(Result.PASS, evidence)


SYNC_COMMAND = (
    "(chronyc -n tracking 2>/dev/null | grep -E '^(Leap status|System time)') || "
    "timedatectl show -p NTPSynchronized 2>/dev/null || true"
)


def sync_status(text: str) -> str:
    """One phrase from ``chronyc tracking`` or ``timedatectl show``; says so when neither answered."""
    chrony = dict(
        (k.strip(), v.strip()) for k, _, v in (line.partition(":") for line in text.splitlines()) if v.strip()
    )
    if "Leap status" in chrony:
        synced = chrony["Leap status"] != "Not synchronised"
        state = "synchronised" if synced else "not synchronised"
        return f"chrony {state} ({chrony.get('System time', 'offset unknown')})"
    found = re.search(r"NTPSynchronized=(yes|no)", text)
    if found:
        return "timesyncd " + ("synchronised" if found.group(1) == "yes" else "not synchronised")
    return "no chrony or timesyncd status on the host"


@dataclass(frozen=True)
class MigrationConf:
    tls_dir: str
    port_min: int
    port_max: int
    address: str


def migration_conf(qemu: dict[str, str]) -> MigrationConf:
    """Where QEMU looks for migration TLS material and which ports incoming migrations use."""
    tls_dir = qemu.get("migrate_tls_x509_cert_dir") or qemu.get("default_tls_x509_cert_dir") or "/etc/pki/qemu"
    return MigrationConf(
        tls_dir=tls_dir,
        port_min=int(qemu.get("migration_port_min", MIGRATION_PORTS[0])),
        port_max=int(qemu.get("migration_port_max", MIGRATION_PORTS[1])),
        address=qemu.get("migration_address", ""),
    )


def check_migration_tls(ctx: DoctorContext, host: HostSpec) -> Finding:
    """``evac evacuate -p tls=true`` (the drain's ``tls``) asks libvirt for ``VIR_MIGRATE_TLS``:
    QEMU then needs its x509 files on both ends."""
    if host.ssh is None:
        return Finding(Result.SKIP, "no ssh settings: qemu.conf cannot be read", "add ssh: to the host")
    conf = migration_conf(read_conf(host, "/etc/libvirt/qemu.conf") or {})
    listing = run(host.ssh, f"ls -1 {shlex.quote(conf.tls_dir)} 2>/dev/null || true").split()
    missing = [f for f in QEMU_TLS_FILES if f not in listing]
    if missing:
        return Finding(
            Result.WARN,
            f"{conf.tls_dir} lacks {', '.join(missing)}: a drain with -p tls=true will fail on this host",
            "issue QEMU migration certificates (server and client, one CA for all hosts) into "
            f"{conf.tls_dir}, or drain without tls",
        )
    return Finding(
        Result.PASS,
        f"{conf.tls_dir} has {', '.join(QEMU_TLS_FILES)} (present; not validated: names and expiry are "
        "checked by QEMU when a TLS migration starts)",
    )


def port_open(address: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def check_migration_ports(ctx: DoctorContext, host: HostSpec) -> Finding:
    address = urlsplit(host.uri).hostname or host.address
    if not address:
        return Finding(Result.SKIP, f"{host.uri} is a local socket: no ports to probe")
    open_ports = [f"{port} ({kind})" for port, kind in LIBVIRTD_PORTS.items() if port_open(address, port)]
    conf = migration_conf(read_conf(host, "/etc/libvirt/qemu.conf") or {}) if host.ssh else None
    span = f"{conf.port_min}-{conf.port_max}" if conf else f"{MIGRATION_PORTS[0]}-{MIGRATION_PORTS[1]} (defaults)"
    unproven = (
        f"QEMU's migration ports {span}"
        + (f" on {conf.address}" if conf and conf.address else "")
        + " not probed: nothing listens there until a migration starts, and hosts talk to each other, "
        "not to the controller, so a firewall between hosts is not ruled out"
    )
    if not open_ports:
        return Finding(
            Result.FAIL,
            f"libvirtd answers on neither 16509 nor 16514 at {address}; {unproven}",
            "start libvirtd with listen_tcp or listen_tls (or the virtproxyd sockets) and open the port",
        )
    return Finding(Result.PASS, f"libvirtd answers at {address} on {', '.join(open_ports)}; {unproven}")


Version = tuple[int, int, int]


def decode(version: int) -> Version:
    """libvirt's encoding: major * 1,000,000 + minor * 1,000 + release."""
    return version // 1_000_000, (version // 1000) % 1000, version % 1000


def shown(version: Version) -> str:
    return ".".join(map(str, version))


@dataclass(frozen=True)
class KnownIssue:
    """A libvirt/QEMU combination with a known live-migration problem."""

    what: str
    source: str
    qemu_from: Version = (0, 0, 0)
    qemu_before: Version = (999, 0, 0)
    libvirt_from: Version = (0, 0, 0)
    libvirt_before: Version = (999, 0, 0)

    def applies(self, libvirt: Version, qemu: Version) -> bool:
        return self.qemu_from <= qemu < self.qemu_before and self.libvirt_from <= libvirt < self.libvirt_before


KNOWN_ISSUES = (
    # QEMU 10.0 changed how it reports the "ht" CPU feature; older libvirt then refuses the
    # incoming side. Source: libvirt NEWS "qemu: Fix incoming migration to QEMU 10.0.0 and
    # newer" (quoted in https://github.com/harvester/harvester/issues/11615, RHEL-104216).
    # The release that shipped the fix is taken as 11.6.0 from that announcement and not
    # checked against libvirt's own NEWS here: the finding is a warning, never a failure.
    KnownIssue(
        what="incoming live migration of guests with several CPU threads fails: "
        '"guest CPU doesn\'t match specification: extra features: ht"',
        source="harvester/harvester#11615, RHEL-104216",
        qemu_from=(10, 0, 0),
        libvirt_before=(11, 6, 0),
    ),
)


def check_versions(ctx: DoctorContext, host: HostSpec) -> Finding:
    try:
        with Hypervisor.connect(host.name, host.uri, keepalive=None) as hv:
            libvirt, qemu = decode(hv.library_version()), decode(hv.hypervisor_version())
    except EvacError as exc:
        return Finding(Result.FAIL, str(exc), "start libvirtd on the host")
    said = f"libvirt {shown(libvirt)}, QEMU {shown(qemu)}"
    hits = [issue for issue in KNOWN_ISSUES if issue.applies(libvirt, qemu)]
    if hits:
        return Finding(
            Result.WARN,
            f"{said}: known issue: " + "; ".join(f"{i.what} ({i.source})" for i in hits),
            "upgrade libvirt (or hold QEMU back) on every host",
        )
    return Finding(Result.PASS, f"{said}; none of evac's {len(KNOWN_ISSUES)} known migration issues applies")
