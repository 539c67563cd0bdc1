"""The CLI: bad input exits 2 with one line naming the problem; read commands speak JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evac.cli import main

GOOD = "name: hi\nparams: {n: {type: integer, default: 1}}\nsteps:\n  - {id: say, action: notify.log, with: {text: 'n={{ params.n }}'}}\n"


@pytest.fixture(autouse=True)
def journal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("EVAC_JOURNAL", str(tmp_path / "j.db"))
    monkeypatch.setenv("EVAC_INVENTORY", str(tmp_path / "none.yaml"))
    return tmp_path / "j.db"


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "rb.yaml"
    path.write_text(text)
    return str(path)


def error_line(capsys: pytest.CaptureFixture[str]) -> str:
    err = capsys.readouterr().err.strip()
    assert "\n" not in err
    return err


def test_run_then_history_and_status_report_the_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["run", write(tmp_path, GOOD), "-p", "n=3", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["steps"]["say"] == {"text": "n=3"}
    assert main(["history", "--json"]) == 0
    (job,) = json.loads(capsys.readouterr().out)
    assert (job["runbook"], job["state"]) == ("hi", "succeeded")
    assert main(["status", str(job["id"]), "--json"]) == 0
    assert [e["kind"] for e in json.loads(capsys.readouterr().out)["events"]][-1] == "job.finished"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["run", "{rb}", "-p", "n"], "evac: error: --param: expected KEY=VALUE, got 'n'"),
        (["run", "{rb}", "-p", "n=x"], "evac: error: param 'n': expected a whole number (type integer), got 'x'"),
        (["run", "{rb}", "-p", "n=1", "-p", "n=2"], "evac: error: --param: 'n' is given twice"),
        (["run", "{rb}", "-p", "m=1"], "evac: error: {rb}: unknown param 'm'"),
        (["run", "nosuchbook"], "evac: error: unknown runbook 'nosuchbook'"),
        (["run", "missing.yaml"], "evac: error: missing.yaml: no such runbook file"),
        (["status", "999"], "evac: error: status: no job 999"),
        (["cancel", "999"], "evac: error: cancel: no job 999"),
    ],
)
def test_bad_input_exits_2_with_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str
) -> None:
    rb = write(tmp_path, GOOD)
    assert main([a.replace("{rb}", rb) for a in argv]) == 2
    assert error_line(capsys).startswith(message.replace("{rb}", rb))


def test_bad_input_starts_no_job(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", write(tmp_path, GOOD), "-p", "n=x"])
    main(["history", "--json"])
    assert json.loads(capsys.readouterr().out) == []


def test_unknown_command_line_option_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["run"])
    assert info.value.code == 2


def test_validate_lists_every_problem_with_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rb = write(tmp_path, "name: x\nsteps:\n  - {id: a, action: notify.lgo}\n  - {id: b, action: wait.second}\n")
    assert main(["runbook", "validate", rb]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == [
        f"{rb}:3: step 'a': action: unknown action 'notify.lgo' (did you mean 'notify.log'?)",
        f"{rb}:4: step 'b': action: unknown action 'wait.second' (did you mean 'wait.seconds'?)",
    ]


def test_cancel_of_a_finished_job_changes_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    main(["run", write(tmp_path, GOOD), "--json"])
    capsys.readouterr()
    assert main(["cancel", "1"]) == 0
    assert "already succeeded" in capsys.readouterr().out


def test_plugins_lists_built_in_actions(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert {"plugin": "basics", "actions": ["notify.log", "wait.seconds"]} in rows


def test_a_plugin_adds_a_subcommand_through_evac_commands(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("EVAC_PLUGINS", "tests.unit.inline_plugin")
    assert main(["hello"]) == 0
    assert capsys.readouterr().out.strip() == "hello from a plugin"


def test_brake_status_exits_1_while_engaged_and_release_is_audited(
    journal: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from evac.sqlitejournal import SqliteJournal

    assert main(["brake"]) == 0
    SqliteJournal(journal).engage_brake("2 of 3 hosts down")
    assert main(["brake", "status"]) == 1
    assert "ENGAGED" in capsys.readouterr().out
    assert main(["brake", "release"]) == 0
    assert SqliteJournal(journal).brake() is None
    assert SqliteJournal(journal).audit_log()[0].action == "brake.release"
