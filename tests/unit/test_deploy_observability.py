"""The Grafana dashboard and the Prometheus alert rules in deploy/ name only series the
services export, and label values they use."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client import REGISTRY

# Importing the services registers their metrics.
from rendermill.gateway import app as gateway_app
from rendermill.notifier import service as notifier_service
from rendermill.scheduler import service as scheduler_service

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
SERIES = re.compile(r"\brendermill_[a-z_]+\b")
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_count", "_sum"), "gauge": ("",)}


def _exported() -> set[str]:
    """Every series name the registered rendermill metrics produce (a family with no
    labelled child yet still reports its name and type)."""
    assert gateway_app and notifier_service and scheduler_service
    names: set[str] = set()
    for family in REGISTRY.collect():
        if family.name.startswith("rendermill_"):
            names.update(family.name + s for s in SUFFIXES.get(family.type, ("",)))
    return names


def _expressions() -> dict[str, list[str]]:
    dashboard = json.loads((DEPLOY / "grafana" / "rendermill.json").read_text())
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    return {
        "dashboard": [t["expr"] for p in dashboard["panels"] for t in p["targets"]],
        "alerts": [line.split("expr:", 1)[1] for line in rules.splitlines() if "expr:" in line],
    }


def test_every_series_named_is_exported() -> None:
    exported = _exported()
    for where, exprs in _expressions().items():
        assert exprs, where
        for expr in exprs:
            for name in SERIES.findall(expr):
                assert name in exported, f"{where}: {name} in {expr!r}"


def test_label_values_in_the_rules_are_ones_the_services_use() -> None:
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    assert "invalid_project|media_error" in rules
    for code in (2, 3):
        assert scheduler_service.classify(code).reason in ("invalid_project", "media_error")
    assert 'outcome!="delivered"' in rules
    assert '"delivered"' in Path(notifier_service.__file__).read_text()


def test_every_rule_has_a_summary_and_a_duration() -> None:
    rules = (DEPLOY / "prometheus" / "alerts.yml").read_text()
    alerts = rules.count("- alert:")
    assert alerts >= 5
    assert rules.count("expr:") == rules.count("for:") == rules.count("summary:") == alerts
