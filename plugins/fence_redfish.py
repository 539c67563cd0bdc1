"""Fence method ``redfish``: ``ComputerSystem.Reset`` with ``ForceOff``, then ``PowerState``.

Options: ``url`` (the BMC, e.g. ``https://10.0.0.5``), ``system`` (the system's id or
path; default: the only member of ``/redfish/v1/Systems``), ``username``/``password``
(``password_file`` or ``password_env`` keep secrets out of the inventory; a relative
``password_file`` is taken from the inventory's directory),
``verify_tls`` (default true), ``timeout`` (seconds, default 10).
"""

from __future__ import annotations

import base64
import json
import os
import ssl
import urllib.error
import urllib.request
from collections.abc import Mapping
from typing import Any

from evac import FenceMethod, hookimpl
from evac.errors import ConfigError, FencingError
from evac.fencing import read_secret_file


class Redfish:
    def __init__(self, host: str, options: Mapping[str, Any]) -> None:
        if "url" not in options:
            raise ConfigError(f"{host}: fence method redfish needs 'url'")
        self.host = host
        self.base = str(options["url"]).rstrip("/")
        self.system = options.get("system")
        self.timeout = float(options.get("timeout", 10))
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        password = options.get("password")
        if options.get("password_file"):
            password = read_secret_file(host, "redfish", str(options["password_file"]))
        if options.get("password_env"):
            password = os.environ.get(str(options["password_env"]), "")
        if options.get("username"):
            token = base64.b64encode(f"{options['username']}:{password or ''}".encode()).decode()
            self.headers["Authorization"] = f"Basic {token}"
        self.context = None if options.get("verify_tls", True) else ssl._create_unverified_context()

    def _request(self, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            self.base + path, data=data, headers=self.headers, method="POST" if body is not None else "GET"
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout, context=self.context) as response:
                text = response.read().decode() or "{}"
        except urllib.error.HTTPError as exc:
            raise FencingError(f"{self.host}: redfish {path}: HTTP {exc.code} {exc.read()[:200]!r}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise FencingError(f"{self.host}: redfish {self.base}: {exc}") from None
        try:
            result: dict[str, Any] = json.loads(text)
        except ValueError:
            result = {}
        return result

    def system_path(self) -> str:
        if self.system:
            system = str(self.system)
            return system if system.startswith("/") else f"/redfish/v1/Systems/{system}"
        members = self._request("/redfish/v1/Systems").get("Members", [])
        if len(members) != 1:
            raise FencingError(f"{self.host}: {len(members)} systems at {self.base}; set 'system' in the inventory")
        return str(members[0]["@odata.id"])

    def power_off(self) -> None:
        self._request(self.system_path() + "/Actions/ComputerSystem.Reset", {"ResetType": "ForceOff"})

    def power_state(self) -> str:
        state = str(self._request(self.system_path()).get("PowerState", "")).lower()
        return state if state in ("on", "off") else "unknown"


@hookimpl
def evac_fence_methods() -> list[FenceMethod]:
    return [
        FenceMethod(
            "redfish",
            lambda host, settings: Redfish(host.name, settings),
            description="ComputerSystem.Reset ForceOff through the host's BMC, confirmed by PowerState.",
            required=("url",),
            optional=("system", "username", "password", "password_file", "password_env", "verify_tls", "timeout"),
        )
    ]
