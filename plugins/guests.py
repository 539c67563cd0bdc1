"""The ``guests:`` section of evac.yaml: rules for guests by tag (``evac.guestrules``).

Registered like any plugin's section, so ``evac config check`` reads it with the rest and
a mistake is one line naming the field."""

from __future__ import annotations

from typing import Any

from evac import hookimpl
from evac.guestrules import parse_guests


@hookimpl
def evac_config_sections() -> dict[str, Any]:
    return {"guests": parse_guests}
