"""The ``api:`` section of evac.yaml: the REST API's tokens and their scopes (``evac.apiauth``).

Registered like any plugin's section, so ``evac config check`` reads it with the rest (a
token file it cannot read, a scope it does not know: one line naming file:line and the
field), and its ``file:`` secrets are checked for who else can read them. ``evac serve``
answers ``/api/v1`` only when this section is there (``evac.api``).
"""

from __future__ import annotations

from typing import Any

from evac import hookimpl
from evac.apiauth import parse_api


@hookimpl
def evac_config_sections() -> dict[str, Any]:
    return {"api": parse_api}
