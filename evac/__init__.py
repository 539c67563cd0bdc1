"""evac: evacuation and high availability for plain libvirt/KVM fleets."""

from .actions import Action, StepContext
from .hooks import hookimpl

__version__ = "0.1.0"
__all__ = ["Action", "StepContext", "__version__", "hookimpl"]
