"""The agents' own port: a signed question and a signed answer bound to it, or no answer."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
import requests

from evac.agentpeers import PATH, PeerAsker, peer_app
from evac.signatures import signed_headers
from evac.web import WebServer

SECRET = "shared-agent-key"


@pytest.fixture
def peer() -> Iterator[tuple[str, list[bool]]]:
    """host2's agent on loopback; the test sets whether it reaches etcd."""
    reaches = [True]
    server = WebServer(peer_app("host2", lambda: reaches[0], SECRET), "127.0.0.1", 0)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.port}", reaches
    finally:
        server.stop()


def test_a_peer_that_reaches_etcd_says_so(peer: tuple[str, list[bool]]) -> None:
    url, _ = peer
    answer = PeerAsker({"host2": url}, SECRET, 2.0).ask("host2")
    assert answer.reaches_etcd is True


def test_a_peer_that_lost_etcd_says_so(peer: tuple[str, list[bool]]) -> None:
    url, reaches = peer
    reaches[0] = False
    assert PeerAsker({"host2": url}, SECRET, 2.0).ask_all()["host2"].reaches_etcd is False


def test_an_answer_signed_with_another_key_counts_as_no_answer(peer: tuple[str, list[bool]]) -> None:
    url, _ = peer
    answer = PeerAsker({"host2": url}, "another-key", 2.0).ask("host2")
    assert answer.reaches_etcd is None and answer.detail == "HTTP 401"


def test_an_answer_from_another_host_than_asked_counts_as_no_answer(peer: tuple[str, list[bool]]) -> None:
    url, _ = peer
    answer = PeerAsker({"host3": url}, SECRET, 2.0).ask("host3")
    assert answer.reaches_etcd is None and "another question or host" in answer.detail


def test_an_unsigned_question_is_refused_and_learns_nothing(peer: tuple[str, list[bool]]) -> None:
    url, _ = peer
    reply = requests.post(url + PATH, data=b'{"nonce": "00112233445566778899aabbccddeeff"}', timeout=2)
    assert reply.status_code == 401 and "etcd" not in reply.json()


def test_a_question_without_a_proper_nonce_is_refused(peer: tuple[str, list[bool]]) -> None:
    url, _ = peer
    body = json.dumps({"nonce": "short"}).encode()
    reply = requests.post(url + PATH, data=body, headers=signed_headers(SECRET, PATH, body), timeout=2)
    assert reply.status_code == 400 and reply.json() == {"error": "nonce: expected 16 to 64 hex digits"}


def test_a_silent_peer_is_no_answer_within_the_timeout() -> None:
    answer = PeerAsker({"host9": "http://127.0.0.1:9"}, SECRET, 0.5).ask("host9")
    assert answer.reaches_etcd is None and answer.detail.startswith("no answer")
