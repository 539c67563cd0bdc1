"""``evac.testing``: the pytest plugin plugin authors opt into, exercised as a third party would."""

from __future__ import annotations

import pytest

from evac.testing import FakeFleet, RunResult

pytest_plugins = ["pytester"]

THIRD_PARTY_PLUGIN = """
from evac import Action, FenceMethod, hookimpl


def greet(ctx):
    ctx.progress(f"hello {ctx.inputs['who']}", who=ctx.inputs["who"])
    return {"greeted": ctx.inputs["who"]}


class Outlet:
    state = "on"

    def power_off(self):
        Outlet.state = "off"

    def power_state(self):
        return Outlet.state


@hookimpl
def evac_actions():
    return [Action("hello.greet", greet, inputs=("who",), required=("who",))]


@hookimpl
def evac_fence_methods():
    return [FenceMethod("pdu", lambda host, settings: Outlet(), required=("outlet",))]
"""

THIRD_PARTY_TESTS = """
import pytest

import evac_hello

pytest_plugins = ["evac.testing"]

GREET = "name: hi\\nparams: {who: {type: string}}\\nsteps:\\n  - {id: greet, action: hello.greet, with: {who: '{{ params.who }}'}}\\n"


@pytest.fixture
def evac_plugins():
    return [evac_hello, "basics", "drain", "migrate"]


def test_greet_succeeds_with_outputs_and_events(run_runbook):
    result = run_runbook(GREET, params={"who": "ops"})
    assert (result.state, result.outputs["greet"]) == ("succeeded", {"greeted": "ops"})
    assert result.kinds()[0] == "job.started" and result.kinds()[-1] == "job.finished"
    assert result.messages("progress") == ["hello ops"]


def test_params_can_be_given_as_the_cli_gives_them(run_runbook):
    assert run_runbook(GREET, params=["who=no"]).outputs["greet"] == {"greeted": "no"}


def test_the_journal_holds_the_job(run_runbook, evac_journal):
    result = run_runbook(GREET, params={"who": "ops"})
    assert evac_journal.job(result.job_id).state == "succeeded"


def test_maintenance_dry_run_plans_on_the_fake_fleet(evac_fleet, run_runbook):
    evac_fleet.add_host("kvm1", memory_mib=8192)
    evac_fleet.add_host("kvm2", memory_mib=8192)
    evac_fleet.add_host("kvm3", up=False)
    evac_fleet.add_guest("kvm1", "web1", memory_mib=2048)
    result = run_runbook("maintenance", params={"host": "kvm1"}, dry_run=True)
    assert result.state == "succeeded", result.error
    assert [(m["guest"], m["target"]) for m in result.outputs["plan"]["moves"]] == [("web1", "kvm2")]
    assert result.outputs["report"]["rows"][0]["result"] == "would move"


def test_the_fence_method_fences_through_the_chain(evac_pm):
    from evac import FenceSpec, HostSpec
    from evac.fencing import fence_host

    host = HostSpec("kvm1", "qemu:///system", fence=(FenceSpec("pdu", {"outlet": 1}),))
    assert fence_host(evac_pm, host, sleep=lambda _s: None).method == "pdu"
"""


def test_a_third_party_test_file_runs_its_plugin_through_evac_testing(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(evac_hello=THIRD_PARTY_PLUGIN, test_hello=THIRD_PARTY_TESTS)
    pytester.syspathinsert()
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=5)


def test_evac_testing_is_opt_in(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_nothing="def test_kit(run_runbook):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.stdout.fnmatch_lines(["*fixture 'run_runbook' not found*"])


def test_fake_fleet_host_that_is_down_is_unreachable() -> None:
    fleet = FakeFleet()
    fleet.add_host("kvm1", up=False)
    with pytest.raises(Exception, match="host down"):
        fleet.connect("kvm1")


def test_fake_fleet_reports_free_memory_after_its_running_guests() -> None:
    fleet = FakeFleet()
    fleet.add_host("kvm1", memory_mib=4096)
    fleet.add_guest("kvm1", "a", memory_mib=1024)
    fleet.add_guest("kvm1", "b", memory_mib=1024, state="shutoff")
    with fleet.connect("kvm1") as hv:
        assert hv.capacity().free_memory_mib == 3072


def test_run_result_is_a_job_result_with_events() -> None:
    from evac import Event, JobState

    result = RunResult(1, JobState.SUCCEEDED, events=[Event("progress", 1, "a", message="hi")])
    assert (result.kinds(), result.messages()) == (["progress"], ["hi"])
