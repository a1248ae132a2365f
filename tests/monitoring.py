"""What the alerting rules, their promtool tests and the Grafana dashboard read, and what /metrics
pages expose: shared by tests/test_monitoring.py and tests/e2e/test_metrics.py."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.cluster import BIN, build_binaries
from tests.helpers import ROOT

ALERTS = ROOT / "charts/audit-webhook/files/alerts.yaml"
DASHBOARD = ROOT / "charts/audit-webhook/files/dashboard.json"
ALERT_TESTS = ROOT / "tests/promtool/alerts_test.yaml"
# Labels Prometheus adds to every scraped series (target and service discovery labels).
TARGET_LABELS = frozenset({"instance", "job", "pod", "namespace", "service", "container", "endpoint"})
# What Grafana substitutes in an expression before Prometheus sees it.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "1m", "$__range": "1h"}
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "and", "or", "unless",
                       "offset", "inf", "nan"})


def promtool(*args: str | Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run promtool, built from Go modules by e2e/build.sh (as `make test` does first): a test
    that needs it fails, with the script's explanation, when it cannot be built."""
    build_binaries()
    return subprocess.run([str(BIN / "promtool"), *map(str, args)], input=stdin, capture_output=True, text=True,
                          timeout=120)


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the rules file."""
    return [r for g in yaml.safe_load(ALERTS.read_text())["groups"] for r in g["rules"] if "alert" in r]


def dashboard_exprs() -> list[str]:
    """Every query of the dashboard, panels in rows included, as Grafana writes them."""
    def panels(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [p for item in items for p in [item, *panels(item.get("panels", []))]]

    return [t["expr"] for p in panels(json.loads(DASHBOARD.read_text())["panels"]) for t in p.get("targets", [])]


def as_prometheus_sees_it(expr: str) -> str:
    """A dashboard query with Grafana's variables replaced by values."""
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    return expr


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: what is left once strings, label matchers,
    ranges, grouping clauses, functions, keywords and numbers are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text)
    words = re.finditer(r"(?<![\w.$])([a-zA-Z_:][\w:]*)(\s*\()?", text)
    return {m.group(1) for m in words if not m.group(2) and m.group(1).lower() not in _KEYWORDS}


def used_metric_names() -> set[str]:
    """Every metric name an alert or a dashboard panel reads."""
    return {n for e in [r["expr"] for r in alert_rules()] + dashboard_exprs() for n in metric_names(e)}


def families(exposition: str) -> dict[str, Any]:
    """The metric families of a /metrics page, by name (counters without `_total`, as the parser has them)."""
    return {f.name: f for f in text_string_to_metric_families(exposition)}


def series_names(exposition: str) -> set[str]:
    """The names of the series a page declares: each family's samples as the format names them
    (`_total` of counters; `_bucket`, `_sum`, `_count` of histograms), whether or not it has any yet."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("_sum", "_count", "")}
    return {f.name + s for f in families(exposition).values() for s in suffixes.get(f.type, ("",))}


def sampled_names(exposition: str) -> set[str]:
    """The names of the series a page carries a value of."""
    return {s.name for f in families(exposition).values() for s in f.samples}
