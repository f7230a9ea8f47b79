"""The alert rules and the Grafana dashboard against the metrics the service exports: every
expression parses (promql-parser, Prometheus's grammar) and names only series the API's
registry exports (and Prometheus's own ``up``); the PrometheusRule carries the same rules."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import promql_parser
import yaml

from precise_mrd.service.app import create_app
from precise_mrd.service.jobs.memory import InMemoryJobService
from precise_mrd.service.settings import Settings
from precise_mrd.service.storage import LocalArtifactStore

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS_OWN = {"up"}


def exported_series() -> set[str]:
    """Every series name the API's registry can export (counters as ``_total``, histograms as
    ``_bucket``/``_sum``/``_count``), whether or not it has samples yet."""
    root = Path(tempfile.mkdtemp())
    store = LocalArtifactStore(root / "artifacts")
    app = create_app(
        Settings(data_dir=root),
        job_service=InMemoryJobService(artifact_root=store.root),
        store=store,
        start_executor=False,
    )
    names: set[str] = set()
    for family in app.state.metrics.registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{part}" for part in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
        names |= {sample.name for sample in family.samples}
    # NB: and what the collectors describe (the broker gauge exists only with Celery)
    names |= set(app.state.metrics.registry._names_to_collectors)
    return names


def metric_names(expression: str) -> set[str]:
    names: set[str] = set()

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector) and node.name:
            names.add(node.name)

    promql_parser.walk(promql_parser.parse(expression), pre_visit=visit)
    return names


def _rules() -> list[dict[str, Any]]:
    loaded = yaml.safe_load((ROOT / "monitoring" / "alerts.yaml").read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]


def test_alert_rules_parse_and_use_exported_metrics() -> None:
    exported = exported_series() | PROMETHEUS_OWN
    rules = _rules()
    assert {rule["alert"] for rule in rules} == {
        "PreciseMrdDown",
        "PreciseMrdHighErrorRate",
        "PreciseMrdLatencyP99",
        "PreciseMrdQueueBackingUp",
        "PreciseMrdJobsFailing",
        "PreciseMrdWorkerLost",
        "PreciseMrdDiskFilling",
    }
    for rule in rules:
        used = metric_names(rule["expr"])
        assert used and used <= exported, (rule["alert"], used - exported)
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"]


def test_prometheus_rule_carries_the_same_rules() -> None:
    resource = yaml.safe_load((ROOT / "k8s" / "base" / "prometheusrule.yaml").read_text())
    plain = yaml.safe_load((ROOT / "monitoring" / "alerts.yaml").read_text())
    assert resource["kind"] == "PrometheusRule"
    assert resource["apiVersion"] == "monitoring.coreos.com/v1"
    assert resource["spec"] == plain


def test_dashboard_queries_parse_and_use_exported_metrics() -> None:
    exported = exported_series()
    dashboard = json.loads((ROOT / "monitoring" / "grafana-dashboard.json").read_text())
    panels = dashboard["panels"]
    assert len({panel["id"] for panel in panels}) == len(panels) >= 8
    for panel in panels:
        assert panel["gridPos"]["w"] > 0 and panel["targets"]
        for target in panel["targets"]:
            used = metric_names(target["expr"])
            assert used and used <= exported, (panel["title"], used - exported)
