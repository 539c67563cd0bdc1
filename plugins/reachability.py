"""Built-in ``evac_verify_guest``: a guest that has moved answers on its network.

Which guests are checked, how and for how long comes from their metadata, their tags
and the ``verify:`` section of evac.yaml (:mod:`evac.verification`), which this plugin
claims. A guest just moved may take a moment to answer (the switches relearn its port),
so it is probed every quarter second until it answers or its ``timeout`` runs out, and
only then called unreachable.
"""

from __future__ import annotations

from typing import Any

from evac import hookimpl
from evac.appview import AppView
from evac.errors import ConfigError, EvacError
from evac.inventory import HostSpec
from evac.model import Guest
from evac.reachability import Kind, OutageWatch
from evac.verification import NetworkCheck, VerifySettings, parse_verify

EVERY = 0.25  # seconds between probes while waiting for a moved guest
PROBE_TIMEOUT = 1.0  # seconds one probe may take to be answered


def network_reason(guest: Guest, host: str, settings: VerifySettings) -> str | None:
    """None when the guest has no check or answers it in time, else one line saying why not."""
    try:
        wanted = settings.network_check(guest)
    except ConfigError as exc:
        return str(exc)
    if wanted is None:
        return None
    if wanted.address is None:
        return (
            f"{guest.name} runs on {host} but cannot be checked for {wanted.reach}: "
            "it has no address (set address in its evac:guest metadata)"
        )
    if wanted.reach.kind is Kind.ICMP and ":" in wanted.address:
        return f"{guest.name} runs on {host} but cannot be checked for icmp at {wanted.address}: icmp checks IPv4 only"
    return wait_for_answer(guest.name, host, wanted)


def wait_for_answer(name: str, host: str, wanted: NetworkCheck) -> str | None:
    """Probe ``wanted.address`` until it answers or ``wanted.timeout`` runs out."""
    assert wanted.address is not None
    try:
        watch = OutageWatch(wanted.reach, wanted.address, EVERY, min(PROBE_TIMEOUT, wanted.timeout)).start()
    except EvacError as exc:
        return f"{name} runs on {host} but its {wanted.reach} check at {wanted.address} cannot run: {exc}"
    answered = watch.wait_for_answer(wanted.timeout)
    outage = watch.stop(drain=False)
    if answered is not None:
        return None
    last = f"; last: {outage.error}" if outage.error else ""
    return (
        f"{name} runs on {host} but does not answer {wanted.reach} at {wanted.address} "
        f"({outage.sent} probes over {outage.seconds:.1f} s{last})"
    )


@hookimpl
def evac_config_sections() -> dict[str, Any]:
    return {"verify": parse_verify}


@hookimpl
def evac_verify_guest(guest: Guest, host: HostSpec, app: AppView) -> str | None:
    return network_reason(guest, host.name, VerifySettings.of(app.settings.sections))
