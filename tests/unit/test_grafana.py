"""contrib/grafana/evac.json is a dashboard Grafana imports, on metrics evac really exports."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.metrics import MetricWrapperBase

from evac.metrics import Metrics

DASHBOARD = Path(__file__).parents[2] / "contrib" / "grafana" / "evac.json"
METRIC = re.compile(r"\bevac_[a-z0-9_]+")
BY = re.compile(r"\bby \(([^)]*)\)")
MATCHER = re.compile(r"([a-z_]+)\s*(?:=~|!~|!=|=)\s*\"")
SCRAPE_LABELS = {"instance", "job", "le"}  # what Prometheus adds, and a histogram's bucket bound
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}


class Journal:
    def unfinished_jobs(self) -> list[Any]:
        return []

    def disarmed(self) -> None:
        return None

    def brake(self) -> None:
        return None


class Coordination:
    def leads(self) -> bool:
        return True

    def status(self) -> dict[str, str]:
        return {"etcd": "ok"}


def exported() -> dict[str, set[str]]:
    """Every series name evac's registry exposes (watchers included), with its labels."""
    metrics = Metrics()
    metrics.watch_journal(Journal())  # type: ignore[arg-type]
    metrics.watch_coordination(Coordination())  # type: ignore[arg-type]
    metrics.watch_ha(Journal())  # type: ignore[arg-type]
    metrics.watch_brake(Journal())  # type: ignore[arg-type]
    labels = {
        wrapper._name: set(wrapper._labelnames)  # a metric with labels has no sample until one is set
        for wrapper in vars(metrics).values()
        if isinstance(wrapper, MetricWrapperBase)
    }
    names: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for suffix in SUFFIXES.get(family.type, ("",)):
            names[family.name + suffix] = labels.get(family.name, labels.get(family.name + "_total", set()))
    return names


def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def panels(data: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in data["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))
    return found


def queries() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for p in panels(dashboard()) for t in p.get("targets", [])]


def test_the_dashboard_is_a_grafana_dashboard_that_imports() -> None:
    data = dashboard()
    assert data["uid"] == "evac-overview" and data["title"] and isinstance(data["schemaVersion"], int)
    assert data["schemaVersion"] >= 36
    variables = {v["name"]: v for v in data["templating"]["list"]}
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    ids = [p["id"] for p in panels(data)]
    assert len(ids) == len(set(ids)), "panel ids are unique"
    for panel in panels(data):
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")) and grid["x"] + grid["w"] <= 24, panel[
            "title"
        ]
        assert panel["type"] in {"row", "stat", "timeseries", "state-timeline"}, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["description"], f"{panel['title']}: say what the panel shows"
        refs = [t["refId"] for t in panel["targets"]]
        assert refs and len(refs) == len(set(refs)), panel["title"]


def test_the_dashboard_shows_jobs_migrations_hosts_fences_and_ha() -> None:
    named = {m for _, expr in queries() for m in METRIC.findall(expr)}
    for wanted in (
        "evac_jobs_total",
        "evac_jobs_running",
        "evac_migration_seconds_bucket",
        "evac_migration_downtime_seconds_bucket",
        "evac_migrations_total",
        "evac_host_state",
        "evac_fence_attempts_total",
        "evac_ha_armed",
    ):
        assert wanted in named, f"no panel shows {wanted}"


@pytest.mark.parametrize(("title", "expr"), queries())
def test_every_metric_a_query_names_is_one_evac_exports(title: str, expr: str) -> None:
    names = exported()
    unknown = [m for m in METRIC.findall(expr) if m not in names]
    assert not unknown, f"{title}: {unknown} are not in evac's registry (evac/metrics.py)"


@pytest.mark.parametrize(("title", "expr"), queries())
def test_every_label_a_query_groups_or_filters_by_is_one_its_metrics_carry(title: str, expr: str) -> None:
    names = exported()
    carried = set(SCRAPE_LABELS)
    for metric in METRIC.findall(expr):
        carried |= names.get(metric, set())
    used = {label.strip() for group in BY.findall(expr) for label in group.split(",") if label.strip()}
    used |= set(MATCHER.findall(expr))
    assert used <= carried, f"{title}: labels {sorted(used - carried)} are on none of its metrics"
