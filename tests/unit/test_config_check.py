"""``evac config check`` proves what would otherwise fail only later: fence methods, secret
files, log level, listen address, journal directory and drain settings, each a one-line
error naming file:line and field."""

from __future__ import annotations

import os
import signal
import socket
from pathlib import Path

import pytest

from evac.cli import main
from evac.config import load_config
from evac.errors import ConfigError
from evac.plugins import plugin_manager

HOST = "hosts:\n  - name: kvm1\n    uri: qemu+tcp://127.0.0.1:9/system\n"


def fleet(tmp_path: Path, config: str = "", host: str = "") -> Path:
    """evac.yaml and hosts.yaml in ``tmp_path``; returns evac.yaml."""
    (tmp_path / "hosts.yaml").write_text(HOST + host)
    path = tmp_path / "evac.yaml"
    path.write_text(
        "inventory: hosts.yaml\njournal: state/journal.db\nlisten: {address: 127.0.0.1, port: 0}\n" + config
    )
    return path


def check(path: Path, capsys: pytest.CaptureFixture[str], *flags: str) -> tuple[int, list[str]]:
    code = main(["--config", str(path), "config", "check", *flags])
    err = capsys.readouterr().err
    short = {f"{path.parent}/{name}:": f"{name}:" for name in ("evac.yaml", "hosts.yaml")}
    lines = err.splitlines()
    for long, name in short.items():
        lines = [line.replace(long, name) for line in lines]
    return code, lines


def test_a_sound_config_passes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--config", str(fleet(tmp_path)), "config", "check"]) == 0
    assert "ok; 1 hosts" in capsys.readouterr().out
    assert not (tmp_path / "state").exists()  # the check creates nothing


def test_an_unknown_log_level_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(fleet(tmp_path, "logging: {format: json, level: loud}\n"), capsys)
    assert (code, err) == (
        2,
        ["evac: error: evac.yaml:4: logging.level: expected one of debug, info, warning, error, critical, got 'loud'"],
    )


def test_an_address_that_cannot_be_bound_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = fleet(tmp_path)
    path.write_text(path.read_text().replace("127.0.0.1, port: 0", "192.0.2.1, port: 8080"))  # TEST-NET-1
    code, err = check(path, capsys)
    assert code == 2
    assert err == [
        "evac: error: evac.yaml:3: listen.address: cannot bind 192.0.2.1:8080: Cannot assign requested address; "
        "listen on an address of this machine (127.0.0.1, or 0.0.0.0 for all)"
    ]


def test_a_port_in_use_is_only_a_warning(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        path = fleet(tmp_path)
        path.write_text(path.read_text().replace("port: 0", f"port: {port}"))
        code, err = check(path, capsys)
    assert code == 0
    assert err == [f"evac: warning: evac.yaml:3: listen.port: 127.0.0.1:{port} is in use (by a running evac serve?)"]


def test_a_journal_directory_that_cannot_be_created_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "state").write_text("a file where the journal's directory should be")
    code, err = check(fleet(tmp_path), capsys)
    assert (code, err) == (
        2,
        [
            f"evac: error: evac.yaml:2: journal: cannot create {tmp_path}/state: {tmp_path}/state is not a directory; "
            "set journal: to a writable path"
        ],
    )


def test_a_journal_directory_not_writable_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "state").mkdir()
    real = os.access
    monkeypatch.setattr("evac.config.os.access", lambda p, mode: False if Path(p).name == "state" else real(p, mode))
    code, err = check(fleet(tmp_path), capsys)
    assert code == 2
    assert err[0].startswith(f"evac: error: evac.yaml:2: journal: directory {tmp_path}/state is not writable by uid")


def test_drain_settings_of_the_wrong_type_are_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(fleet(tmp_path, "drain:\n  max_in: 2\n  concurrency: lots\n"), capsys)
    assert code == 2
    assert len(err) == 1
    assert err[0].startswith("evac: error: evac.yaml:6: drain.concurrency: param 'concurrency': ")
    assert "'lots'" in err[0]


def test_serve_refuses_to_start_when_every_drain_would_be_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[object] = []
    monkeypatch.setattr("evac.service.Service", lambda app: started.append(app))
    monkeypatch.setattr("evac.cli.serve.until_signalled", lambda: signal.SIGTERM)
    code = main(["--config", str(fleet(tmp_path, "drain: {concurrency: lots}\n")), "serve"])
    assert (code, started) == (2, [])
    assert "drain.concurrency: param 'concurrency'" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("fence", "message"),
    [
        (
            "      - method: nosuch\n",
            "evac: error: hosts.yaml:5: hosts[0].fence[0].method: unknown fence method 'nosuch'; known: agent, redfish, ssh, watchdog",
        ),
        (
            "      - method: redfish\n        username: evac\n",
            "evac: error: hosts.yaml:5: hosts[0].fence[0].url: required by fence method 'redfish'",
        ),
    ],
)
def test_fence_methods_exist_and_have_their_required_settings(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], fence: str, message: str
) -> None:
    code, err = check(fleet(tmp_path, host="    fence:\n" + fence), capsys)
    assert (code, err) == (2, [message])


REDFISH = "    fence:\n      - method: redfish\n        url: https://kvm1-bmc\n        username: evac\n"


def test_a_missing_password_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(fleet(tmp_path, host=REDFISH + "        password_file: bmc.pw\n"), capsys)
    assert (code, err) == (
        2,
        [
            f"evac: error: hosts.yaml:8: hosts[0].fence[0].password_file: cannot read {tmp_path}/bmc.pw: "
            "No such file or directory"
        ],
    )


def test_a_password_file_others_can_read_is_refused_unless_allowed(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fleet(tmp_path, host=REDFISH + "        password_file: bmc.pw\n")
    (tmp_path / "bmc.pw").write_text("s3cret\n")
    (tmp_path / "bmc.pw").chmod(0o644)
    message = (
        f"hosts.yaml:8: hosts[0].fence[0].password_file: {tmp_path}/bmc.pw is readable by others (mode 0644); "
        f"fix: chmod 600 {tmp_path}/bmc.pw (or pass --allow-insecure)"
    )
    assert check(path, capsys) == (2, [f"evac: error: {message}"])
    assert check(path, capsys, "--allow-insecure") == (0, [f"evac: warning: {message}"])
    (tmp_path / "bmc.pw").chmod(0o600)
    assert check(path, capsys) == (0, [])


def test_an_inline_fence_password_is_flagged(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = fleet(tmp_path, host=REDFISH + "        password: hunter2\n")
    code, err = check(path, capsys)
    assert code == 2
    assert err == [
        "evac: error: hosts.yaml:8: hosts[0].fence[0].password: an inline password; keep it in a file only evac "
        "reads: password_file: /etc/evac/NAME (chmod 600) (or pass --allow-insecure)"
    ]
    assert check(path, capsys, "--allow-insecure")[0] == 0


def test_an_ssh_key_others_can_read_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "id").write_text("key\n")
    (tmp_path / "id").chmod(0o640)
    code, err = check(fleet(tmp_path, host="    ssh: {host: 127.0.0.1, key: id}\n"), capsys)
    assert code == 2
    assert err[0].startswith(f"evac: error: hosts.yaml:4: hosts[0].ssh.key: {tmp_path}/id is readable by its group")


def test_a_config_file_secret_others_can_read_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "metrics.key").write_text("tok\n")
    (tmp_path / "metrics.key").chmod(0o604)
    path = fleet(tmp_path)
    path.write_text(path.read_text().replace("port: 0}", "port: 0, metrics_token: 'file:metrics.key'}"))
    code, err = check(path, capsys)
    assert code == 2
    assert err == [
        f"evac: error: evac.yaml:3: listen.metrics_token: {tmp_path}/metrics.key is readable by others (mode 0604); "
        f"fix: chmod 600 {tmp_path}/metrics.key (or pass --allow-insecure)"
    ]


def test_file_secrets_are_relative_to_the_config_file_not_the_current_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc" / "hook.key").write_text("from-the-config-dir\n")
    (tmp_path / "hook.key").write_text("from-the-current-dir\n")
    config = tmp_path / "etc" / "evac.yaml"
    config.write_text("webhooks: {token: 'file:hook.key'}\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(config, plugin_manager()).webhooks.token == "from-the-config-dir"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("listen: {port: 99999}\n", "evac.yaml:1: listen.port: expected a port number, got 99999"),
        ("listen: {port: true}\n", "evac.yaml:1: listen.port: expected a port number, got True"),
        (
            'listen: {address: "127.0.0.1\\n"}\n',
            "evac.yaml:1: listen.address: expected an IP address or host name to listen on",
        ),
        ("monitor: {interval: .nan}\n", "evac.yaml:1: monitor.interval: expected a number >= 0, got nan"),
        ("monitor: {probe_timeout: 0}\n", "evac.yaml:1: monitor.probe_timeout: expected seconds > 0, got 0"),
        ("shutdown: {grace: .inf}\n", "evac.yaml:1: shutdown.grace: expected a number >= 0, got inf"),
        ("logging: {level: verbose}\n", "evac.yaml:1: logging.level: expected one of debug, info, warning"),
    ],
)
def test_settings_that_would_fail_later_are_refused_when_loading(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "evac.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as caught:
        load_config(path, plugin_manager())
    assert str(caught.value).replace(f"{tmp_path}/", "").startswith(message)
    assert "\n" not in str(caught.value)


def test_a_fence_whose_password_file_is_missing_fails_that_method_in_one_line(tmp_path: Path) -> None:
    from evac_plugins.fence_redfish import Redfish

    with pytest.raises(ConfigError) as caught:
        Redfish("kvm1", {"url": "https://bmc", "username": "evac", "password_file": str(tmp_path / "nope")})
    assert str(caught.value) == (
        f"kvm1: fence method redfish: password_file {tmp_path}/nope: No such file or directory"
    )


def test_the_agent_method_reads_its_password_file_and_passes_it_as_password(tmp_path: Path) -> None:
    from evac_plugins.fence_agent import FenceAgentProcess

    (tmp_path / "pw").write_text("s3cret\n")
    agent = FenceAgentProcess("kvm1", {"agent": "true", "ip": "bmc", "password_file": str(tmp_path / "pw")})
    assert agent.options == {"ip": "bmc", "password": "s3cret"}


@pytest.mark.parametrize(
    ("drain", "why"),
    [
        ("drain: {concurrency: 0}\n", "param 'concurrency': expected at least 1, got 0"),
        ("drain: {max_in: -1}\n", "param 'max_in': expected at least 1, got -1"),
        ("drain: {concurrency: 4.5}\n", "param 'concurrency': expected a whole number"),
    ],
)
def test_drain_settings_every_drain_would_fail_on_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], drain: str, why: str
) -> None:
    code, err = check(fleet(tmp_path, drain), capsys)
    assert code == 2 and len(err) == 1 and why in err[0]


def test_a_webhook_body_limit_of_nothing_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = check(fleet(tmp_path, "webhooks: {token: 'env:HOME', max_body_kib: 0}\n"), capsys)
    assert code == 2 and "webhooks.max_body_kib: expected a whole number >= 1 (KiB)" in err[0]


def test_a_journal_that_is_not_a_database_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = fleet(tmp_path)
    journal = load_config(config, plugin_manager()).journal
    journal.parent.mkdir(parents=True, exist_ok=True)
    journal.write_bytes(b"this is not sqlite at all, just text\n")
    code, err = check(config, capsys)
    assert code == 2 and any(f"{journal} is not a SQLite database" in line for line in err)
