"""evac: evacuation and high availability for plain libvirt/KVM fleets."""

__version__ = "0.1.0"
