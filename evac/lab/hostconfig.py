"""The configuration files of one lab host: libvirtd, QEMU, virtlockd and sshd.

Each host sees its own ``etc`` directory as ``/etc/libvirt`` (a bind mount in its mount
namespace), so these files are written from the root namespace before its daemons start.
"""

from __future__ import annotations

from .daemons import LIBVIRT_PORT, LIBVIRT_TLS_PORT
from .layout import LabHost, LabLayout


def write_configs(lab: LabLayout, h: LabHost) -> None:
    etc = lab.host_dir(h.name) / "etc"
    (etc / "libvirtd.conf").write_text(
        f"""listen_tls = 1
listen_tcp = 1
listen_addr = "{h.address}"
tcp_port = "{LIBVIRT_PORT}"
tls_port = "{LIBVIRT_TLS_PORT}"
key_file = "/etc/libvirt/pki-libvirt/serverkey.pem"
cert_file = "/etc/libvirt/pki-libvirt/servercert.pem"
ca_file = "/etc/libvirt/pki-libvirt/cacert.pem"
auth_tcp = "none"
auth_unix_rw = "none"
auth_unix_ro = "none"
host_uuid = "5e1f0000-0000-4000-8000-{h.index:012x}"
log_level = 3
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
keepalive_interval = 5
keepalive_count = 5
max_clients = 200
max_workers = 40
"""
    )
    # QEMU runs as root with no cgroups: cgroup paths would collide between hosts.
    (etc / "qemu.conf").write_text(
        f"""user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
namespaces = [ ]
cgroup_controllers = [ ]
stdio_handler = "file"
migration_address = "{h.address}"
migration_host = "{h.address}"
lock_manager = "lockd"
migrate_tls_x509_cert_dir = "/etc/libvirt/pki-qemu"
migrate_tls_x509_verify = 1
"""
    )
    # Every disk gets a lease in the shared lockspace: a second QEMU on a disk that
    # one host still runs (a partitioned, unfenced host) fails to start.
    (etc / "qemu-lockd.conf").write_text(
        f"""auto_disk_leases = 1
require_lease_for_disks = 1
file_lockspace_dir = "{lab.lockspace}"
"""
    )
    (etc / "virtlockd.conf").write_text('log_outputs = "3:file:/var/log/libvirt/virtlockd.log"\n')
    (etc / "libvirt.conf").write_text("")
    (lab.host_dir(h.name) / "sshd_config").write_text(
        f"""ListenAddress {h.address}
HostKey {lab.ssh_dir}/hostkey
PidFile /run/libvirt/sshd.pid
AuthorizedKeysFile {lab.ssh_dir}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
Subsystem sftp internal-sftp
"""
    )
