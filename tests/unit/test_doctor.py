"""evac doctor: the model, the runner, the journal record, the JSON and the CLI, with fake
checks; and the built-in checks' pure parts (config parsing, refusal texts, versions)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pluggy
import pytest

from evac import FenceMethod, hookimpl
from evac.app import App
from evac.cli import build_parser, main
from evac.doctor import (
    Check,
    DoctorCheck,
    DoctorContext,
    DoctorRun,
    Finding,
    Result,
    examine,
    exit_code,
    last_doctor,
    record,
    registered_checks,
    report_json,
    run_check,
    safe_to_fence,
)
from evac.errors import ConfigError
from evac.inventory import HostSpec, Inventory
from evac.plugins import plugin_manager
from evac.sqlitejournal import SqliteJournal
from evac.states import HostMode
from evac_plugins import doctor as builtin
from evac_plugins.doctor_fencing import check_fencing
from evac_plugins.doctor_host import KnownIssue, decode, migration_conf, sync_status
from evac_plugins.doctor_locks import judge_config, lock_config, parse_conf, peer_of, refusal_text, refused_by
from tests.conftest import key_paths

INVENTORY = """hosts:
  - {name: host1, uri: "qemu+tcp://127.0.0.1:1/system", fence: [{method: fake}]}
  - {name: host2, uri: "qemu+tcp://127.0.0.1:1/system", address: 127.0.0.2, fence: [{method: fake}]}
shared_storage: [/srv/shared]
"""


def host(name: str = "host1") -> HostSpec:
    return HostSpec(name=name, uri="qemu+tcp://127.0.0.1:1/system")


def passing(_ctx: DoctorContext, _host: HostSpec) -> Finding:
    return Finding(Result.PASS, "fine")


def failing(_ctx: DoctorContext, _host: HostSpec) -> Finding:
    return Finding(Result.FAIL, "broken", "mend it")


def raising(_ctx: DoctorContext, _host: HostSpec) -> Finding:
    raise RuntimeError("BMC said no\nTraceback (most recent call last): ...")


@dataclass
class FakeAgent:
    """A fence agent whose power reads ``state``; ``power_off`` turns it off and counts."""

    state: str = "on"
    offs: list[str] = field(default_factory=list)

    def power_off(self) -> None:
        self.offs.append("off")
        self.state = "off"

    def power_state(self) -> str:
        return self.state


class FakeFence:
    def __init__(self, agent: FakeAgent) -> None:
        self.agent = agent

    @hookimpl
    def evac_fence_methods(self) -> list[FenceMethod]:
        return [FenceMethod("fake", lambda _host, _settings: self.agent)]


class Checks:
    def __init__(self, *checks: DoctorCheck) -> None:
        self.checks = list(checks)

    @hookimpl
    def evac_doctor_checks(self) -> list[DoctorCheck]:
        return self.checks


@pytest.fixture
def agent() -> FakeAgent:
    return FakeAgent()


@pytest.fixture
def pm(agent: FakeAgent) -> pluggy.PluginManager:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(FakeFence(agent), name="fakefence")
    return pm


@pytest.fixture
def app(tmp_path: Path, pm: pluggy.PluginManager) -> Iterator[App]:
    inventory = tmp_path / "hosts.yaml"
    inventory.write_text(INVENTORY)
    yield App(inventory_path=inventory, journal_path=tmp_path / "journal.db", pm=pm)


@pytest.fixture
def ctx(app: App) -> DoctorContext:
    return DoctorContext(app=app)


def run_of(*checks: Check) -> DoctorRun:
    return DoctorRun(host="host1", started=1_700_000_000.0, checks=checks)


# ------------------------------------------------------------------ safe_to_fence
def test_a_host_the_doctor_never_checked_is_not_safe_to_fence(tmp_path: Path) -> None:
    journal = SqliteJournal(tmp_path / "j.db")
    assert last_doctor(journal, "host1") is None
    assert safe_to_fence(journal, "host1") == (False, "never checked")


def test_a_failed_safety_check_is_not_safe_and_says_which_and_the_fix() -> None:
    run = run_of(
        Check("lock_manager", Result.PASS, "lockd", safety=True),
        Check("fencing", Result.FAIL, "unknown", "fix the BMC password", safety=True),
    )
    assert run.safety_failed
    assert run.safe_to_fence() == (False, "failed fencing: fix the BMC password")


def test_a_failed_check_that_is_not_a_safety_check_does_not_block_fencing() -> None:
    run = run_of(Check("fencing", Result.PASS, "on", safety=True), Check("clock", Result.FAIL, "2 s off", "chrony"))
    ok, why = run.safe_to_fence()
    assert ok and why.startswith("fencing passed at ")
    assert not run.safety_failed


def test_a_run_whose_safety_checks_were_all_skipped_counts_as_never_checked() -> None:
    run = run_of(Check("fencing", Result.SKIP, "no ssh", safety=True), Check("clock", Result.PASS, "ok"))
    assert run.safe_to_fence() == (False, "never checked")


# ------------------------------------------------------------------ the runner
def test_a_check_that_raises_is_a_fail_with_its_one_line_error(ctx: DoctorContext) -> None:
    check = run_check(ctx, DoctorCheck("bmc", raising, safety=True), host())
    assert (check.result, check.evidence, check.safety) == (Result.FAIL, "RuntimeError: BMC said no", True)
    assert "Traceback" not in check.evidence


def test_a_check_that_overruns_its_timeout_is_a_fail(ctx: DoctorContext) -> None:
    release = threading.Event()

    def hangs(_ctx: DoctorContext, _host: HostSpec) -> Finding:
        release.wait()
        return Finding(Result.PASS, "too late")

    try:
        check = run_check(ctx, DoctorCheck("hang", hangs, timeout=0.05), host())
    finally:
        release.set()
    assert check.result is Result.FAIL
    assert check.evidence == "no answer within 0.05 s"


def test_hosts_are_checked_concurrently(ctx: DoctorContext) -> None:
    both_inside = threading.Barrier(2, timeout=10)

    def meets_the_other_host(_ctx: DoctorContext, _host: HostSpec) -> Finding:
        both_inside.wait()  # only returns when the other host's check runs at the same time
        return Finding(Result.PASS, "met")

    runs = examine(ctx, [host("host1"), host("host2")], [DoctorCheck("meet", meets_the_other_host)])
    assert [(r.host, [c.result for c in r.checks]) for r in runs] == [("host1", ["pass"]), ("host2", ["pass"])]


def test_exit_code_is_1_when_any_check_failed_and_0_otherwise(ctx: DoctorContext) -> None:
    good = examine(ctx, [host()], [DoctorCheck("a", passing)])
    bad = examine(ctx, [host()], [DoctorCheck("a", passing), DoctorCheck("b", failing)])
    assert (exit_code(good), exit_code(bad)) == (0, 1)


def test_two_plugins_registering_one_check_name_is_an_error_naming_both() -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(Checks(DoctorCheck("clock", passing)), name="one")
    pm.register(Checks(DoctorCheck("clock", failing)), name="two")
    with pytest.raises(ConfigError, match="doctor check 'clock' is registered by two plugins: 'one' and 'two'"):
        registered_checks(pm)


def test_the_builtin_plugin_registers_the_safety_checks_and_the_rest() -> None:
    pm = plugin_manager(load_entrypoints=False)
    pm.register(builtin, name="doctor")
    checks = registered_checks(pm)
    assert [n for n, c in checks.items() if c.safety] == ["lock_manager", "fencing", "autostart"]
    assert {"watchdog", "clock", "guest_disks", "networks", "migration_tls", "migration_ports", "versions"} <= set(
        checks
    )


def test_the_builtin_plugin_is_an_entry_point() -> None:
    assert "doctor" in dict(plugin_manager().list_name_plugin())


# ------------------------------------------------------------------ journal and JSON
def test_a_run_recorded_in_the_journal_comes_back_whole(ctx: DoctorContext, app: App) -> None:
    (run,) = examine(ctx, [host()], [DoctorCheck("fencing", failing, safety=True), DoctorCheck("b", passing)])
    record(app.journal, run)
    back = last_doctor(app.journal, "host1")
    assert back is not None
    assert [(c.name, c.result, c.fix, c.safety) for c in back.checks] == [
        ("fencing", Result.FAIL, "mend it", True),
        ("b", Result.PASS, "", False),
    ]
    assert back.started == pytest.approx(run.started, abs=0.001)
    assert safe_to_fence(app.journal, "host1") == (False, "failed fencing: mend it")
    stored = json.loads(app.journal.recall("doctor:host1") or "")
    assert stored["safety_failed"] is True and stored["schema"] == 1


def test_an_unreadable_record_is_never_checked_not_safe(app: App) -> None:
    app.journal.remember("doctor:host1", "{not json")
    assert safe_to_fence(app.journal, "host1") == (False, "never checked")


def test_json_has_the_same_keys_in_the_same_order_on_every_run(ctx: DoctorContext) -> None:
    checks = [DoctorCheck("z", passing), DoctorCheck("a", failing, safety=True)]
    first, second = (json.loads(report_json(examine(ctx, [host("host1"), host("host2")], checks))) for _ in (1, 2))
    assert key_paths(first) == key_paths(second)
    assert list(first) == ["hosts", "ok", "schema"]
    assert list(first["hosts"][0]) == ["checks", "host", "safety_failed", "schema", "seconds", "started"]
    assert [c["name"] for c in first["hosts"][0]["checks"]] == ["z", "a"]  # registration order
    assert first["ok"] is False


# ------------------------------------------------------------------ the CLI
def parse_and_run(pm: pluggy.PluginManager, app: App, argv: list[str]) -> int:
    args = build_parser(pm).parse_args(
        ["--inventory", str(app.inventory_path), "--journal", str(app.journal_path), *argv]
    )
    return int(args.func(args))


def test_cli_prints_the_table_records_each_host_and_exits_1_on_a_failure(
    pm: pluggy.PluginManager, app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    pm.register(Checks(DoctorCheck("fencing", failing, safety=True), DoctorCheck("clock", passing)))
    assert parse_and_run(pm, app, ["doctor", "host2"]) == 1
    out = capsys.readouterr().out
    assert "host2" in out and "mend it" in out and "fencing *" in out
    assert last_doctor(app.journal, "host2") is not None and last_doctor(app.journal, "host1") is None


def test_cli_json_exits_0_when_every_check_passes(
    pm: pluggy.PluginManager, app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    pm.register(Checks(DoctorCheck("clock", passing)))
    assert parse_and_run(pm, app, ["doctor", "--json"]) == 0
    body = json.loads(capsys.readouterr().out)
    assert body["ok"] is True and [h["host"] for h in body["hosts"]] == ["host1", "host2"]


def test_cli_unknown_host_exits_2_with_one_line_and_a_suggestion(
    app: App, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EVAC_BLOCK_PLUGINS", "doctor")  # nothing may reach a real host
    inventory = app.inventory_path.parent / "plain.yaml"
    inventory.write_text(INVENTORY.replace(", fence: [{method: fake}]", ""))
    assert main(["--inventory", str(inventory), "--journal", str(app.journal_path), "doctor", "hots1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    assert err.startswith("evac: error: unknown host 'hots1' (did you mean 'host1'?)")


# ------------------------------------------------------------------ fencing check
def test_fencing_passes_when_every_method_answers_with_a_power_state(ctx: DoctorContext, app: App) -> None:
    found = check_fencing(ctx, app.inventory.host("host1"))
    assert found.result is Result.PASS
    assert "fence[0] fake: on" in found.evidence


def test_fencing_fails_when_a_method_answers_unknown(ctx: DoctorContext, app: App, agent: FakeAgent) -> None:
    agent.state = "unknown"
    found = check_fencing(ctx, app.inventory.host("host1"))
    assert found.result is Result.FAIL
    assert "credentials refused" in found.evidence
    assert agent.offs == []  # a status query only


def test_fencing_fails_for_a_host_without_fence_methods(ctx: DoctorContext) -> None:
    found = check_fencing(ctx, host())
    assert found.result is Result.FAIL and "no fence methods" in found.evidence


def test_power_cycle_test_refuses_a_host_not_in_maintenance(app: App, agent: FakeAgent) -> None:
    found = check_fencing(DoctorContext(app=app, power_cycle_test=True), app.inventory.host("host1"))
    assert found.result is Result.WARN and "not in maintenance" in found.evidence
    assert agent.offs == []


def test_power_cycle_test_powers_a_host_in_maintenance_off_and_says_to_power_it_on(app: App, agent: FakeAgent) -> None:
    app.journal.set_host_state("host1", HostMode.MAINTENANCE, "doctor", "test")
    found = check_fencing(DoctorContext(app=app, power_cycle_test=True), app.inventory.host("host1"))
    assert agent.offs == ["off"]
    assert found.result is Result.WARN
    assert "read back 'off'" in found.evidence and "power host1 on by hand" in found.fix


# ------------------------------------------------------------------ lock manager, pure parts
QEMU_CONF = """# comment: lock_manager = "sanlock"
user = "root"
lock_manager = "lockd"
namespaces = [ ]
migration_port_min = 49200
"""


def test_parse_conf_reads_scalar_settings_and_ignores_comments() -> None:
    assert parse_conf(QEMU_CONF) == {"user": "root", "lock_manager": "lockd", "migration_port_min": "49200"}


def inventory(shared: tuple[str, ...] = ("/srv/shared",)) -> Inventory:
    return Inventory(hosts=(host("host1"), host("host2"), host("host3")), shared_storage=shared)


def test_no_lock_manager_fails_the_lock_check() -> None:
    found = judge_config(lock_config({}, None), inventory())
    assert found is not None and found.result is Result.FAIL and "names no lock_manager" in found.evidence


def test_a_lockspace_off_shared_storage_fails_the_lock_check() -> None:
    config = lock_config({"lock_manager": "lockd"}, {"file_lockspace_dir": "/var/lib/libvirt/lockd/files"})
    found = judge_config(config, inventory())
    assert found is not None and "not on shared storage" in found.evidence


def test_lockd_with_a_shared_lockspace_is_a_good_configuration() -> None:
    config = lock_config({"lock_manager": "lockd"}, {"file_lockspace_dir": "/srv/shared/lockspace"})
    assert config.auto_leases and judge_config(config, inventory()) is None


def test_sanlock_without_auto_disk_leases_fails() -> None:
    config = lock_config({"lock_manager": "sanlock"}, {"disk_lease_dir": "/srv/shared/sanlock"})
    found = judge_config(config, inventory())
    assert found is not None and "auto_disk_leases = 0" in found.evidence


@pytest.mark.parametrize(
    ("message", "layer"),
    [
        ('internal error: qemu unexpectedly closed the monitor: Failed to get "write" lock', "QEMU's image lock"),
        ("resource busy: Lockspace resource '8d3c...' is locked", "libvirt's lock manager (lockd)"),
        ("Failed to acquire lock: File exists (sanlock)", "libvirt's lock manager (sanlock)"),
        ("unsupported configuration: Domain requires KVM", None),
    ],
)
def test_the_refusing_layer_is_told_from_libvirts_error_text(message: str, layer: str | None) -> None:
    assert refused_by(message) == layer


def test_the_probe_peer_is_the_next_host_wrapping_around() -> None:
    inv = inventory()
    assert [getattr(peer_of(inv, h), "name", None) for h in inv.hosts] == ["host2", "host3", "host1"]


# ------------------------------------------------------------------ host software, pure parts
def test_sync_status_reads_chrony_and_timesyncd_and_says_when_neither_answered() -> None:
    chrony = "Leap status     : Normal\nSystem time     : 0.000012 seconds fast of NTP time\n"
    assert sync_status(chrony) == "chrony synchronised (0.000012 seconds fast of NTP time)"
    assert sync_status("Leap status     : Not synchronised\n").startswith("chrony not synchronised")
    assert sync_status("NTPSynchronized=no\n") == "timesyncd not synchronised"
    assert sync_status("") == "no chrony or timesyncd status on the host"


def test_migration_conf_defaults_follow_qemu_conf() -> None:
    conf = migration_conf({})
    assert (conf.tls_dir, conf.port_min, conf.port_max) == ("/etc/pki/qemu", 49152, 49215)
    assert migration_conf({"default_tls_x509_cert_dir": "/x"}).tls_dir == "/x"
    assert migration_conf({"migrate_tls_x509_cert_dir": "/m", "default_tls_x509_cert_dir": "/x"}).tls_dir == "/m"


def test_versions_decode_and_known_issues_match_their_ranges() -> None:
    assert decode(9_000_000) == (9, 0, 0) and decode(7_002_022) == (7, 2, 22)
    issue = KnownIssue("ht", "news", qemu_from=(10, 0, 0), libvirt_before=(11, 6, 0))
    assert issue.applies(libvirt=(11, 5, 0), qemu=(10, 0, 2))
    assert not issue.applies(libvirt=(11, 6, 0), qemu=(10, 0, 2))
    assert not issue.applies(libvirt=(9, 0, 0), qemu=(7, 2, 22))


def test_a_check_that_returns_something_else_than_a_finding_is_a_fail(ctx: DoctorContext) -> None:
    check = run_check(ctx, DoctorCheck("sloppy", lambda _c, _h: None), host())  # type: ignore[arg-type,return-value]
    assert (check.result, check.evidence) == (Result.FAIL, "the check returned NoneType, not a Finding")


def test_the_evidence_quotes_the_refusal_itself_not_the_warnings_before_it() -> None:
    message = (
        "host2: starting a transient guest: internal error: qemu unexpectedly closed the monitor: "
        "qemu-system-x86_64: warning: host doesn't support requested feature: CPUID.01H:ECX.vmx\n"
        'qemu-system-x86_64: -blockdev {"driver":"file"}: Failed to get "write" lock\nIs another process using the image?'
    )
    assert refusal_text(message) == 'Failed to get "write" lock Is another process using the image?'


def test_the_table_shows_brackets_in_evidence_as_text(
    pm: pluggy.PluginManager, app: App, capsys: pytest.CaptureFixture[str]
) -> None:
    def quotes_qemu(_ctx: DoctorContext, _host: HostSpec) -> Finding:
        return Finding(Result.PASS, "Is another process using the image [/srv/shared/x.img]?")

    pm.register(Checks(DoctorCheck("lock_manager", quotes_qemu)))
    assert parse_and_run(pm, app, ["doctor", "host1"]) == 0
    assert "[/srv/shared/x.img]" in capsys.readouterr().out
