"""docs/alerts.yml is a valid Prometheus rules file whose every metric exists in our real
registries and whose every alert links a runbook with Symptoms, Checks and Fixes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import yaml
from prometheus_client import CollectorRegistry

from cloud_sync.breaker import CircuitBreaker
from cloud_sync.metrics import Backlog, CloudMetrics, CloudSources
from edge_agent.metrics import AgentMetrics, AgentSources
from protocols.models import MeterHealth

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "docs" / "alerts.yml"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"),
            "gauge": ("",), "unknown": ("",)}
PROMQL_WORDS = {"sum", "rate", "max", "min", "by", "and", "or", "histogram_quantile",
                "clamp_min", "increase", "le"}


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every series name a scrape can contain, from the families the collectors describe
    (labelled histograms without observations still have a family)."""
    names: set[str] = set()
    for family in registry.collect():
        names.update(family.name + suffix for suffix in SUFFIXES[family.type])
    return names


@pytest.fixture(scope="module")
def metric_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    engine = sa.create_engine(f"sqlite:///{tmp_path_factory.mktemp('db') / 'x.sqlite'}")
    breaker = CircuitBreaker(name="database")
    cloud = CloudMetrics(CloudSources(
        ingest_stats=dict, dispatch_stats=dict, ack_stats=dict, breakers=(breaker,),
        engine=engine, backlog=lambda: Backlog(0, None, 0), broker_connected=lambda: True,
        ingest_queue_depth=lambda: 0))
    agent = AgentMetrics("gw", AgentSources(
        buffer_stats=EmptyBuffer, uplink_connected=lambda: True,
        command_counters=dict, error_counters=dict,
        meter_health=lambda: {"m": MeterHealth(state="ok")}))
    names = exposed_names(cloud.registry) | exposed_names(agent.registry)
    engine.dispose()
    return names


class EmptyBuffer:
    depth = 0
    oldest_ts_ms = None
    dropped_total = 0


def rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(RULES.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def test_rules_file_has_the_prometheus_structure() -> None:
    document = yaml.safe_load(RULES.read_text())
    assert set(document) == {"groups"}
    seen = set()
    for group in document["groups"]:
        assert set(group) == {"name", "rules"} and group["rules"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}
            assert re.fullmatch(r"Homewatt[A-Za-z]+", rule["alert"])
            assert rule["alert"] not in seen, f"duplicate alert {rule['alert']}"
            seen.add(rule["alert"])
            assert isinstance(rule["expr"], str) and rule["expr"].strip()
            assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s"))
            assert rule["labels"]["severity"] in {"page", "ticket"}
            assert {"summary", "description", "runbook_url"} <= set(rule["annotations"])
            assert rule["expr"].count("(") == rule["expr"].count(")")


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_metric_in_an_expression_exists(rule: dict[str, Any],
                                              metric_names: set[str]) -> None:
    expr = re.sub(r"\{[^}]*\}", "", rule["expr"])  # label matchers are not metric names
    expr = re.sub(r"\[[^\]]*\]", "", expr)
    referenced = set(re.findall(r"\bhomewatt_[a-z0-9_]+", expr))
    assert referenced, "an alert must use our metrics"
    assert referenced <= metric_names, f"unknown metrics: {sorted(referenced - metric_names)}"
    others = set(re.findall(r"\b[a-z_][a-z0-9_]*\b", expr)) - referenced - PROMQL_WORDS
    assert others <= {"instance"}, f"unexpected identifiers: {sorted(others)}"


@pytest.mark.parametrize("rule", rules(), ids=lambda r: r["alert"])
def test_every_alert_links_a_runbook_with_symptoms_checks_and_fixes(
        rule: dict[str, Any]) -> None:
    url = rule["annotations"]["runbook_url"]
    assert re.fullmatch(r"docs/runbooks/[a-z0-9-]+\.md", url)
    text = (ROOT / url).read_text()
    headings = re.findall(r"^## (.+)$", text, re.MULTILINE)
    assert headings == ["Symptoms", "Checks", "Fixes"]
    for section in re.split(r"^## .+$", text, flags=re.MULTILINE)[1:]:
        assert section.strip(), f"{url} has an empty section"


def test_every_runbook_is_linked_by_an_alert() -> None:
    linked = {rule["annotations"]["runbook_url"] for rule in rules()}
    on_disk = {f"docs/runbooks/{p.name}" for p in (ROOT / "docs" / "runbooks").glob("*.md")}
    assert on_disk == linked
