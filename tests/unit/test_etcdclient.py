"""evac.etcdclient and evac.etcdsession against a real etcd: endpoints that fail, a
cluster that answers nothing, watches that break, leases that are lost."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import replace
from urllib.parse import urlsplit

import pytest

from evac.errors import ClusterUnavailable, ConfigError
from evac.etcdclient import Cluster, EtcdSettings, _Watch, absent, get_op, parse_url, put_op, value_is
from evac.etcdsession import Session, next_try, safety_margin
from tests.conftest import poll_until
from tests.etcdserver import EtcdServer, free_port, leaderless_member


def test_an_etcd_url_names_every_endpoint() -> None:
    assert parse_url("etcd://h1:2379,h2:2380", tls=True) == ("https://h1:2379", "https://h2:2380")
    assert parse_url("etcd://10.0.0.1,[fd00::1]:23790/", tls=False) == (
        "http://10.0.0.1:2379",
        "http://[fd00::1]:23790",
    )


@pytest.mark.parametrize("url", ["http://h1:2379", "etcd://", "etcd://h1:2379/evac", "etcd://h1:x", "etcd://h1,,h2"])
def test_a_bad_etcd_url_is_one_line_naming_it(url: str) -> None:
    with pytest.raises(ConfigError, match=r"^journal URL .*expected etcd://host:port") as error:
        parse_url(url, tls=False)
    assert "\n" not in str(error.value)


def test_a_dead_endpoint_is_skipped_and_the_live_one_remembered(etcd_settings: EtcdSettings) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    cluster = Cluster(replace(etcd_settings, endpoints=(dead, *etcd_settings.endpoints)))
    key = f"{etcd_settings.prefix}k"
    assert cluster.put(key, "v") > 0
    kv = cluster.get(key)
    assert kv is not None and kv.value == "v"
    assert cluster._current == 1  # the next request starts at the endpoint that answered
    statuses = cluster.endpoint_status()
    assert [(s["ok"], s["leader"]) for s in statuses] == [(False, False), (True, True)]
    assert statuses[0]["error"] == "connection refused"


def test_no_endpoint_answering_is_one_line_naming_them(etcd_settings: EtcdSettings) -> None:
    dead = tuple(f"http://127.0.0.1:{free_port()}" for _ in range(2))
    cluster = Cluster(replace(etcd_settings, endpoints=dead))
    with pytest.raises(ClusterUnavailable) as error:
        cluster.get("/x")
    assert str(error.value) == (
        f"etcd: no endpoint answers ({dead[0]}, {dead[1]}): connection refused;"
        " nothing is fenced or restarted until quorum returns"
    )


def test_a_cluster_that_answers_nothing_fails_within_the_timeout(etcd: EtcdServer, etcd_settings: EtcdSettings) -> None:
    cluster = Cluster(replace(etcd_settings, timeout=0.3))
    cluster.get("/warm")
    with etcd.frozen(), pytest.raises(ClusterUnavailable, match=r"^etcd: no endpoint answers \(.*\): timed out;"):
        cluster.put("/x", "y")  # a request that times out, not one that hangs


def test_a_transaction_compares_and_reads_in_one_step(etcd_settings: EtcdSettings) -> None:
    cluster = Cluster(etcd_settings)
    key = f"{etcd_settings.prefix}hôte/é"  # not ASCII: UTF-8 in, UTF-8 out
    first = cluster.txn([absent(key)], [put_op(key, "ünïcode")])
    assert first.succeeded and first.revision > 0
    again = cluster.txn([absent(key)], [put_op(key, "other")], [get_op(key)])
    assert not again.succeeded
    assert [(kv.key, kv.value, kv.create_revision) for kv in again.responses[0]["kvs"]] == [
        (key, "ünïcode", first.revision)
    ]
    assert cluster.txn([value_is(key, "ünïcode")], [put_op(key, "v2")]).succeeded
    assert [kv.value for kv in cluster.range(etcd_settings.prefix)] == ["v2"]
    assert cluster.delete_prefix(etcd_settings.prefix) == 1


def test_a_watch_wakes_on_a_change_and_ends_when_stopped(etcd_settings: EtcdSettings) -> None:
    cluster = Cluster(etcd_settings)
    woken, stop = threading.Event(), threading.Event()
    thread = cluster.watch(etcd_settings.prefix, woken.set, stop, stale_after=0.5)
    poll_until(woken.is_set, 5, "the first wake-up once the watch is made")
    woken.clear()
    cluster.put(f"{etcd_settings.prefix}job/1", "x")
    poll_until(woken.is_set, 5, "a wake-up for the put")
    stop.set()
    thread.join(5)
    assert not thread.is_alive()


def test_a_watch_resumes_after_etcd_stopped_answering(
    etcd: EtcdServer, etcd_settings: EtcdSettings, caplog: pytest.LogCaptureFixture
) -> None:
    cluster = Cluster(replace(etcd_settings, timeout=0.3))
    woken, stop = threading.Event(), threading.Event()
    thread = cluster.watch(etcd_settings.prefix, woken.set, stop, stale_after=0.2)
    try:
        poll_until(woken.is_set, 5, "the first wake-up")
        with etcd.frozen():
            poll_until(lambda: "cannot watch" in caplog.text, 5, "the watch to find etcd gone")
        woken.clear()
        poll_until(woken.is_set, 5, "a wake-up once the watch is made again")
        woken.clear()
        cluster.put(f"{etcd_settings.prefix}after", "x")
        poll_until(woken.is_set, 5, "a wake-up for a put after etcd returned")
    finally:
        stop.set()
        thread.join(5)


def test_a_watch_whose_start_was_compacted_away_starts_again_from_now(etcd_settings: EtcdSettings) -> None:
    cluster = Cluster(etcd_settings)
    watch = _Watch(cluster, etcd_settings.prefix, lambda: None, threading.Event(), 5.0)
    cluster.put(f"{etcd_settings.prefix}a", "1")
    watch.delivered = 1  # long ago
    now = cluster.put(f"{etcd_settings.prefix}a", "2")
    cluster.compact(now)
    watcher = watch.open()
    assert watcher is not None and watch.delivered >= now
    watcher.stop()


def test_a_session_whose_lease_is_revoked_is_lost_and_starts_again(etcd_settings: EtcdSettings) -> None:
    cluster = Cluster(etcd_settings)
    session = Session(cluster, 1, name="replica-a")
    lost = threading.Event()
    session.on_lost.append(lost.set)
    session.start()
    try:
        first, owner = session.id, session.owner
        assert owner.startswith(f"etcd:{first:x}@") and session.valid()
        assert session.live_owners() == {owner}
        cluster.revoke(first)
        poll_until(lost.is_set, 5, "on_lost after the lease was revoked")
        poll_until(lambda: session.id != first and session.valid(), 5, "a new lease")
        assert session.live_owners() == {session.owner} and session.owner != owner
    finally:
        session.stop()
    assert session.live_owners() == set() and not session.valid()


def test_a_session_that_cannot_reach_etcd_is_lost_by_its_own_clock(
    etcd: EtcdServer, etcd_settings: EtcdSettings
) -> None:
    session = Session(Cluster(replace(etcd_settings, timeout=0.2)), 1)
    lost = threading.Event()
    session.on_lost.append(lost.set)
    session.start()
    try:
        with etcd.frozen():
            poll_until(lost.is_set, 5, "on_lost once the lease's deadline passed")
            assert not session.valid()
        poll_until(session.valid, 5, "a new lease once etcd answers")
    finally:
        session.stop()


def test_live_owners_are_every_started_session(etcd_settings: EtcdSettings) -> None:
    cluster = Cluster(etcd_settings)
    a, b = Session(cluster, 5), Session(cluster, 5)
    a.start()
    b.start()
    assert a.live_owners() == {a.owner, b.owner}
    b.stop()
    assert a.live_owners() == {a.owner}
    a.stop(revoke=False)
    assert not a.valid()


DEFAULT_TIMEOUT = EtcdSettings(endpoints=()).timeout  # per request, longer than a 3 s lease's slack


class MemberProxy:
    """A TCP proxy in front of one etcd member, which can turn into what the session would
    meet on a bad day: another member (:meth:`lead_to`), or a host gone dark
    (:meth:`go_dark`)."""

    def __init__(self, target: str) -> None:
        self.lead_to(target)
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # go_dark binds its port again
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.url = f"http://127.0.0.1:{self.server.getsockname()[1]}"
        self.dark = threading.Event()
        self.fillers: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def lead_to(self, url: str) -> None:
        """Each new connection goes to the member at ``url`` from now on."""
        real = urlsplit(url)
        self.target = (real.hostname or "127.0.0.1", real.port or 2379)

    def _accept(self) -> None:
        while not self.dark.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if self.dark.is_set():
                return
            upstream = socket.create_connection(self.target)
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while (data := src.recv(65536)) and not self.dark.is_set():
                dst.sendall(data)
        except OSError:
            pass

    def go_dark(self) -> None:
        """As a powered-off host does: nothing more is forwarded on open connections, and
        its port is taken over by a listener nobody accepts on, whose queue is filled
        first: connecting there hangs until the client's connect timeout."""
        port = self.server.getsockname()[1]
        self.dark.set()
        self.server.shutdown(socket.SHUT_RDWR)  # wakes the accept loop, which ends
        self.server.close()
        self.server = socket.socket()
        self.server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.server.bind(("127.0.0.1", port))
        self.server.listen(0)
        for _ in range(4):
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(("127.0.0.1", port))
            self.fillers.append(filler)


def keeps_its_lease(session: Session, trouble: Callable[[], None]) -> bool:
    """Whether ``session``, started on its first endpoint, holds its lease throughout
    ``trouble`` and three keepalives after it. An agent asks ``valid(margin)`` every
    feed and gives its lease up the moment it is False: here it is asked far more often."""
    doubted = threading.Event()
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            if not session.valid(margin=safety_margin(session.ttl)):
                doubted.set()

    session.start()
    threading.Thread(target=watch, daemon=True).start()
    try:
        trouble()
        for round_ in range(3):
            renewed = session.deadline()

            def later(before: float = renewed) -> bool:
                return session.deadline() > before

            poll_until(later, 10, f"keepalive {round_ + 1} after the trouble")
        return not doubted.is_set()
    finally:
        done.set()
        session.stop(revoke=False)


def test_a_session_keeps_its_lease_when_the_member_it_talks_to_goes_dark(etcd_settings: EtcdSettings) -> None:
    proxy = MemberProxy(etcd_settings.endpoints[0])
    endpoints = (proxy.url, etcd_settings.endpoints[0])
    session = Session(Cluster(replace(etcd_settings, endpoints=endpoints, timeout=DEFAULT_TIMEOUT)), 3)
    assert keeps_its_lease(session, proxy.go_dark)


def test_a_session_keeps_its_lease_when_the_member_it_talks_to_loses_its_leader(
    etcd_settings: EtcdSettings,
) -> None:
    """A member cut off from its peers still answers, but a keepalive there would wait the
    whole request timeout for a leader it will not get: it is asked to refuse at once."""
    proxy = MemberProxy(etcd_settings.endpoints[0])
    endpoints = (proxy.url, etcd_settings.endpoints[0])
    session = Session(Cluster(replace(etcd_settings, endpoints=endpoints, timeout=DEFAULT_TIMEOUT)), 3)
    with leaderless_member() as cut_off:
        assert keeps_its_lease(session, lambda: proxy.lead_to(cut_off.client_url))


def test_a_session_tries_again_sooner_after_a_failure_then_backs_off_to_its_usual_pace() -> None:
    """An election refuses for about a second: a lease that lapsed meanwhile must be granted
    again within a 3 s watchdog, not a second after each refusal (seed 2122160409)."""
    assert [next_try(failures, 3) for failures in range(5)] == [1.0, 0.25, 0.5, 1.0, 1.0]


def test_a_lease_request_gets_a_third_of_the_lease_not_the_whole_request_timeout(etcd_settings: EtcdSettings) -> None:
    assert Cluster(replace(etcd_settings, timeout=2.0)).for_lease(3).settings.timeout == 1.0
