"""A real multi-host libvirt lab on one Linux box, for development, tests and benchmarks.

Each host is a network + mount + UTS namespace running its own libvirtd and sshd; a
directory seen by every host plays shared storage. See ``docs/lab.md``.
"""

from .rig import Lab, LabError

__all__ = ["Lab", "LabError"]
