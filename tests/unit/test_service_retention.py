"""``evac serve`` applies the journal's retention: at start, then every ``retention.every``."""

from __future__ import annotations

from pathlib import Path

from evac.app import App
from evac.config import load_config
from evac.plugins import plugin_manager
from evac.service import Service
from tests.conftest import poll_until


def test_the_service_prunes_audit_rows_older_than_the_retention(tmp_path: Path) -> None:
    (tmp_path / "hosts.yaml").write_text("hosts:\n  - {name: h1, uri: 'qemu+tcp://127.0.0.1:9/system'}\n")
    (tmp_path / "evac.yaml").write_text(
        "inventory: hosts.yaml\njournal: j.db\nlisten: {port: 0}\nmonitor: {enabled: false}\n"
        "retention: {audit_days: 0.0000001, events_days: 30, every: 3600}\n"  # audit kept ~9 ms
    )
    pm = plugin_manager()
    app = App.from_config(load_config(tmp_path / "evac.yaml", pm), pm)
    app.journal.audit("cli:ops", "run", "h1", {})
    service = Service(app)
    service.start()
    try:
        poll_until(lambda: app.journal.audit_log() == [], 30, "the audit row past its retention to be pruned")
    finally:
        service.stop()
    assert not service._pruner.is_alive()
