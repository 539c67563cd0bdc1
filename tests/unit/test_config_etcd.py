"""``journal: etcd://…`` and the ``etcd:`` section: the replicated control plane's settings,
checked like every other part of evac.yaml (file:line: field, one line)."""

from __future__ import annotations

from pathlib import Path

import pytest

from evac.config import ServiceConfig, load_config
from evac.errors import ConfigError
from evac.plugins import plugin_manager


def load(tmp_path: Path, text: str) -> ServiceConfig:
    path = tmp_path / "evac.yaml"
    path.write_text(text)
    return load_config(path, plugin_manager())


def test_an_etcd_journal_names_every_member_and_reads_tls_files_beside_the_config(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        "journal: etcd://10.0.0.1:2379,10.0.0.2,[fd00::3]:2381\n"
        "etcd: {ca: pki/ca.pem, cert: /etc/evac/c.pem, key: /etc/evac/k.pem, lease_ttl: 3, agree: 2}\n",
    )
    cluster = config.cluster
    assert cluster is not None
    assert cluster.etcd.endpoints == ("https://10.0.0.1:2379", "https://10.0.0.2:2379", "https://[fd00::3]:2381")
    assert (cluster.etcd.ca, cluster.etcd.cert) == (tmp_path / "pki/ca.pem", Path("/etc/evac/c.pem"))
    assert (cluster.etcd.lease_ttl, cluster.etcd.prefix, cluster.agree) == (3, "/evac/", 2)


def test_without_a_ca_etcd_is_spoken_to_in_plain_http_and_a_majority_must_agree(tmp_path: Path) -> None:
    cluster = load(tmp_path, "journal: etcd://127.0.0.1:2379\n").cluster
    assert cluster is not None and cluster.etcd.endpoints == ("http://127.0.0.1:2379",) and cluster.agree is None


def test_a_sqlite_journal_has_no_cluster(tmp_path: Path) -> None:
    assert load(tmp_path, "journal: j.db\n").cluster is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("etcd: {lease_ttl: 3}\n", "evac.yaml:1: etcd: the etcd: section needs journal: etcd://HOST:PORT"),
        ("journal: etcd://\n", "evac.yaml:1: journal: journal URL 'etcd://': no endpoint list"),
        ("journal: etcd://a:http\n", "evac.yaml:1: journal: journal URL 'etcd://a:http': bad endpoint 'a:http'"),
        ("journal: etcd://a\netcd: {lease_ttl: 1}\n", "evac.yaml:2: etcd.lease_ttl: expected 2 to 300 seconds, got 1"),
        ("journal: etcd://a\netcd:\n  cert: c.pem\n", "evac.yaml:3: etcd.key: cert and key go together"),
        ("journal: etcd://a\netcd: {agree: 0}\n", "evac.yaml:2: etcd.agree: expected majority or a number"),
        ("journal: etcd://a\netcd: {prefix: evac}\n", "evac.yaml:2: etcd.prefix: expected a key prefix like /evac/"),
        ("journal: etcd://a\netcd: {leader: x}\n", "evac.yaml:2: etcd.leader: unknown field"),
    ],
)
def test_bad_etcd_settings_name_the_line_and_field(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert "\n" not in str(info.value)
    assert str(info.value).replace(str(tmp_path) + "/", "").startswith(message), str(info.value)
