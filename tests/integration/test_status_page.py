"""The status page in a real headless Chromium, on a real ``evac serve`` over the test lab:
it signs in with a token, shows the lab's hosts and guests, and follows a drain started
through the REST API as it runs."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evac.app import App
from evac.config import load_config
from evac.lab import Lab
from evac.plugins import plugin_manager
from evac.service import Service
from tests.chromium import CHROMIUM, Chromium
from tests.conftest import poll_until, require

TOKEN = "status-page-token-0123456789abcdef"
SCREENSHOT = os.environ.get("EVAC_STATUS_SCREENSHOT", "")  # also save the picture there (docs/status-page.png)
WATCH = """
window.__seen = [];
new MutationObserver(() => {
  for (const card of document.querySelectorAll('#running article.job')) {
    const d = card.dataset;
    const row = `${d.job} ${d.state} ${d.step} ${d.done}/${d.total}`;
    if (!window.__seen.includes(row)) window.__seen.push(row);
  }
}).observe(document.getElementById('running'), {childList: true, subtree: true});
true
"""


@pytest.fixture
def served(lab: Lab, tmp_path: Path) -> Iterator[Service]:
    """``evac serve`` in this process, on loopback, with the API's ``ops`` token."""
    (tmp_path / "ops.token").write_text(TOKEN)
    (tmp_path / "ops.token").chmod(0o600)
    (tmp_path / "evac.yaml").write_text(f"""
inventory: {lab.inventory_file}
journal: {tmp_path / "journal.db"}
listen: {{address: 127.0.0.1, port: 0}}
monitor: {{enabled: true, failover: false}}
snapshots: {{every: 2}}
api:
  tokens:
    - {{name: ops, token: "file:ops.token", scopes: [read, "run:maintenance", cancel]}}
""")
    pm = plugin_manager()
    service = Service(App.from_config(load_config(tmp_path / "evac.yaml", pm), pm))
    service.start()
    try:
        yield service
    finally:
        service.stop()


def start_drain(port: int, host: str) -> int:
    body = json.dumps({"runbook": "maintenance", "params": {"host": host, "bandwidth_mib": 4}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/jobs",
        data=body,
        headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        assert answer.status == 202
        job: int = json.loads(answer.read())["job"]
        return job


def host_of(browser: Chromium, guest: str) -> str | None:
    found = browser.evaluate(f"document.querySelector('#hosts [data-guest=\"{guest}\"]')?.closest('tr').dataset.host")
    return str(found) if found else None


def test_the_status_page_passes_in_headless_chromium(
    served: Service, make_guest: Callable[..., str], tmp_path: Path
) -> None:
    require(CHROMIUM.exists(), f"{CHROMIUM} is not installed (setup.sh installs Debian's chromium)")
    guest = make_guest("host3", wait=False)
    port = served.http.port
    with Chromium() as browser:
        browser.open(f"http://127.0.0.1:{port}/")
        browser.wait_for("!document.getElementById('signin').hidden", 15, "the sign-in form")
        browser.evaluate(
            f"document.getElementById('token').value = '{TOKEN}';"
            "document.getElementById('signin').requestSubmit(); true"
        )
        rows = browser.wait_for(
            "[...document.querySelectorAll('#hosts tbody tr')].map(r => r.dataset.host).join(' ')", 15, "the hosts"
        )
        assert rows == "host1 host2 host3"
        browser.wait_for("document.querySelector('#hosts [data-host=\"host1\"]').dataset.health === 'up'", 20, "health")
        assert browser.evaluate("document.cookie") == ""  # HttpOnly: no script sees the session
        browser.wait_for(f"!!document.querySelector('#hosts [data-guest=\"{guest}\"]')", 20, f"{guest} on the page")
        assert host_of(browser, guest) == "host3"
        moving = int(browser.evaluate("document.querySelector('#hosts [data-host=\"host3\"] .guests').dataset.count"))
        browser.evaluate(WATCH)

        job = start_drain(port, "host3")
        card = f"document.querySelector('#running [data-job=\"{job}\"]')"
        browser.wait_for(f"{card}?.dataset.step === 'migrate'", 30, "the drain's migrate step on the page")
        browser.wait_for(f"!!{card}.querySelector('[data-item=\"{guest}\"]')", 10, f"{guest} in the job's card")
        picture = browser.screenshot(tmp_path / "status-page.png")
        browser.wait_for(f"{card}?.dataset.state === 'succeeded'", 60, "the drain to succeed on the page")
        seen: list[str] = browser.evaluate("window.__seen")
        progress = [f"{job} running migrate {done}/{moving}" for done in range(moving + 1)]
        assert all(row in seen for row in progress), seen
        assert [seen.index(row) for row in progress] == sorted(seen.index(row) for row in progress), seen
        assert seen[-1].startswith(f"{job} succeeded "), seen
        poll_until(lambda: host_of(browser, guest) not in (None, "host3"), 30, f"{guest} shown on its new host")
        state = browser.evaluate("document.querySelector('#hosts [data-host=\"host3\"]').dataset.state")
        assert state == "maintenance"
        assert browser.errors == []
    if SCREENSHOT:
        shutil.copyfile(picture, SCREENSHOT)
