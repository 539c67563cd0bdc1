"""evac: evacuation and high availability for plain libvirt/KVM fleets.

What a plugin may import from here is evac's public API: it keeps working across minor
versions (``docs/plugins.md``, "What a plugin may import"). Everything else is internal.
"""

from .actions import Action, StepContext
from .appview import AppView, ServicePart
from .convergence import ConvergencePolicy, Escalation, MeasuringPolicy, MigrationTuning, Sample
from .dirtyrate import DirtyRate
from .errors import (
    Cancelled,
    ConfigError,
    DiskInUse,
    EvacError,
    FencingError,
    HostUnreachable,
    Incomplete,
    MigrationError,
    NotFound,
    TransientError,
)
from .events import Event
from .evidence import Evidence, EvidenceSource, MonitorSettings, Rule, Verdict, Watch
from .fencing import FenceAgent, FenceMethod
from .hooks import hookimpl
from .inventory import FenceSpec, HostSpec, SshSpec
from .model import Capacity, Disk, Guest, Interface
from .states import EventKind, Health, HostMode, ItemState, JobState, StepState

__version__ = "0.1.0"
__all__ = [
    "Action",
    "AppView",
    "Cancelled",
    "Capacity",
    "ConfigError",
    "ConvergencePolicy",
    "DirtyRate",
    "Disk",
    "DiskInUse",
    "Escalation",
    "EvacError",
    "Event",
    "EventKind",
    "Evidence",
    "EvidenceSource",
    "FenceAgent",
    "FenceMethod",
    "FenceSpec",
    "FencingError",
    "Guest",
    "Health",
    "HostMode",
    "HostSpec",
    "HostUnreachable",
    "Incomplete",
    "Interface",
    "ItemState",
    "JobState",
    "MeasuringPolicy",
    "MigrationError",
    "MigrationTuning",
    "MonitorSettings",
    "NotFound",
    "Rule",
    "Sample",
    "ServicePart",
    "SshSpec",
    "StepContext",
    "StepState",
    "TransientError",
    "Verdict",
    "Watch",
    "__version__",
    "hookimpl",
]
