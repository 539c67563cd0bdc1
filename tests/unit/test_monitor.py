"""What the monitor hands a failover runbook."""

from __future__ import annotations

from pathlib import Path

from evac.monitor import failover_params
from evac.runbook import load_runbook

RUNBOOKS = Path(__file__).parents[2] / "runbooks"


def test_the_monitor_asks_the_shipped_failover_for_one_last_check_before_fencing() -> None:
    book = load_runbook(RUNBOOKS / "host-failure.yaml")
    assert failover_params(book, "host2", "keepalive lost") == {
        "host": "host2",
        "reason": "keepalive lost",
        "checks": 1,
    }


def test_a_custom_failover_runbook_without_checks_gets_only_host_and_reason(tmp_path: Path) -> None:
    path = tmp_path / "mine.yaml"
    path.write_text(
        "name: mine\nparams: {host: {type: host, required: true}, reason: {type: string}}\n"
        "steps:\n  - {id: say, action: notify.log, with: {text: hi}}\n"
    )
    assert failover_params(load_runbook(path), "host2", "down") == {"host": "host2", "reason": "down"}
