"""The alerting rules, their promtool unit tests, the runbooks, the Grafana dashboard, the
kustomize PrometheusRule and docs/metrics.md agree with each other and with the metrics the code
declares. tests/e2e/test_metrics.py checks the same names against running processes."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from prometheus_client.metrics import MetricWrapperBase

from tests.helpers import ROOT
from tests.monitoring import (
    ALERT_TESTS,
    ALERTS,
    alert_rules,
    as_prometheus_sees_it,
    dashboard_exprs,
    metric_names,
    promtool,
    series_names,
    used_metric_names,
)
from webhook.adapters.metrics import Metrics, ReconcilerMetrics
from webhook.core.report import DRIFT_KINDS

RUNBOOKS = ROOT / "docs/runbooks.md"
RUNBOOKS_URL = "https://github.com/audit-webhook/audit-webhook/blob/main/docs/runbooks.md"
METRICS_DOC = ROOT / "docs/metrics.md"


def declared() -> str:
    """The /metrics pages of a fresh webhook and reconciler, concatenated."""
    return Metrics().render().decode() + ReconcilerMetrics().render().decode()


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (handler) (increase(audit_webhook_admission_requests_total{kind="Pod",decision="denied"}[10m])) > 0',
     {"audit_webhook_admission_requests_total"}),
    ("histogram_quantile(0.99, sum by (le) (rate(a_bucket[$__rate_interval]))) > 0.5", {"a_bucket"}),
    ("max(a) < 1 or absent(b)", {"a", "b"}),
    ("rate(x_total[1m]) * on (instance) group_left (component) info", {"x_total", "info"}),
    ('count(max by (cluster) (d) > 0) or vector(0)', {"d"}),
    ("time() - max(t) > 14 * 24 * 3600", {"t"}),
])
def test_metric_names_of_an_expression(expr, names):
    assert metric_names(expr) == names


def test_the_rules_file_passes_promtool_check():
    result = promtool("check", "rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_every_alert_fires_and_stays_quiet_in_the_promtool_unit_tests():
    result = promtool("test", "rules", ALERT_TESTS)
    assert result.returncode == 0, result.stdout + result.stderr
    cases = [c for t in yaml.safe_load(ALERT_TESTS.read_text())["tests"] for c in t["alert_rule_test"]]
    fires = {c["alertname"] for c in cases if c.get("exp_alerts")}
    quiet = {c["alertname"] for c in cases if not c.get("exp_alerts")}
    names = {r["alert"] for r in alert_rules()}
    assert fires == names, "alerts no test shows firing: " + ", ".join(sorted(names - fires))
    assert quiet == names, "alerts no test shows quiet: " + ", ".join(sorted(names - quiet))


def test_promtool_unit_tests_would_catch_a_broken_rule(tmp_path: Path):
    """The unit tests fail when a rule changes: here every alert waits an hour longer."""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "1h"
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump(rules))
    tests = yaml.safe_load(ALERT_TESTS.read_text())
    tests["rule_files"] = [str(tmp_path / "alerts.yaml")]
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(tests))
    result = promtool("test", "rules", tmp_path / "alerts_test.yaml")
    assert result.returncode != 0
    failed = set(re.findall(r"alertname: (\w+)", result.stdout + result.stderr))
    assert failed == {r["alert"] for r in alert_rules()}


def _runbook_sections() -> dict[str, str]:
    """The runbooks by GitHub's anchor of their `## ` heading."""
    parts = re.split(r"^## (.+)$", RUNBOOKS.read_text(), flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", title).strip().lower().replace(" ", "-"): body
            for title, body in zip(parts[1::2], parts[2::2], strict=True)}


def test_every_alert_has_a_severity_a_summary_and_a_runbook_that_says_what_to_do():
    sections = _runbook_sections()
    for rule in alert_rules():
        name = rule["alert"]
        assert rule["labels"]["severity"] in ("critical", "warning"), name
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], name
        url, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert url == RUNBOOKS_URL and anchor == name.lower(), name
        assert anchor in sections, f"docs/runbooks.md has no section for {name}"
        for part in ("**Meaning**", "**Check**", "**Fix**"):
            assert part in sections[anchor], f"the runbook of {name} lacks {part}"
    assert set(sections) == {r["alert"].lower() for r in alert_rules()}, "a runbook without its alert"


def test_every_metric_an_alert_or_the_dashboard_reads_is_declared():
    missing = used_metric_names() - series_names(declared())
    assert not missing, f"read by an alert or the dashboard, exposed by nothing: {sorted(missing)}"


def test_every_dashboard_query_parses(tmp_path: Path):
    """promtool parses each query (with Grafana's variables filled in) as a recording rule."""
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}", "expr": as_prometheus_sees_it(e)} for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump(rules))
    result = promtool("check", "rules", tmp_path / "dashboard.yaml")
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kustomize_prometheusrule_carries_the_charts_rule_groups():
    """deploy/monitoring is the chart rendered (tests/e2e/test_helm.py checks that), and its
    PrometheusRule holds the rules file as it is."""
    docs = list(yaml.safe_load_all((ROOT / "deploy/monitoring/monitoring.yaml").read_text()))
    (rule,) = [d for d in docs if d["kind"] == "PrometheusRule"]
    assert rule["spec"] == yaml.safe_load(ALERTS.read_text())


def _documented() -> dict[str, tuple[str, frozenset[str]]]:
    """docs/metrics.md's table: name -> (type, labels)."""
    rows = re.findall(r"^\| `([a-z_]+)` \| (\w+) \|([^|]*)\|", METRICS_DOC.read_text(), flags=re.MULTILINE)
    return {name: (kind, frozenset(re.findall(r"`(\w+)`", labels))) for name, kind, labels in rows}


def test_docs_describe_every_metric_with_its_type_and_labels():
    exposed: dict[str, tuple[str, frozenset[str]]] = {}
    for metrics in (Metrics(), ReconcilerMetrics()):
        for collector in metrics.registry._collector_to_names:
            if isinstance(collector, MetricWrapperBase):  # ours: labels as declared, with or without series
                name = collector._name + ("_total" if collector._type == "counter" else "")
                exposed[name] = (collector._type, frozenset(collector._labelnames))
            else:  # process_*
                exposed |= {f.name + ("_total" if f.type == "counter" else ""): (f.type, frozenset())
                            for f in collector.collect()}
    assert _documented() == exposed


def test_docs_describe_every_drift_kind():
    text = METRICS_DOC.read_text()
    documented = set(re.findall(r"^\| `(\w+)` \|", text.split("## Drift kinds", 1)[1], flags=re.MULTILINE))
    assert documented == set(DRIFT_KINDS)


@pytest.mark.parametrize("overlay", ["kkp", "standalone"])
def test_the_servicemonitor_reaches_both_metrics_ports(overlay):
    """Each metrics Service of an overlay selects a Deployment of it and targets its metrics port;
    the ServiceMonitor of deploy/monitoring selects both Services, by a port they both name."""
    folder = ROOT / "deploy/overlays" / overlay
    deployments = [d for d in yaml.safe_load_all((folder / "deployment.yaml").read_text()) if d["kind"] == "Deployment"]
    services = [d for d in yaml.safe_load_all((folder / "service.yaml").read_text()) if d["kind"] == "Service"]
    (monitor,) = [d for d in yaml.safe_load_all((ROOT / "deploy/monitoring/monitoring.yaml").read_text())
                  if d["kind"] == "ServiceMonitor"]
    (endpoint,) = monitor["spec"]["endpoints"]
    scraped = {}
    for service in services:
        (deployment,) = [d for d in deployments
                         if service["spec"]["selector"].items() <= d["spec"]["template"]["metadata"]["labels"].items()]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        (port,) = [p for p in service["spec"]["ports"] if p["name"] == endpoint["port"]]
        labels = service["metadata"]["labels"]
        assert all(labels.get(e["key"]) in e["values"] for e in monitor["spec"]["selector"]["matchExpressions"])
        assert service["metadata"]["namespace"] in monitor["spec"]["namespaceSelector"]["matchNames"]
        scraped[service["metadata"]["name"]] = ports[port["targetPort"]]
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/port"] == str(ports[port["targetPort"]])  # the same port either way
    # The job label Prometheus gives each target is its Service's name.
    assert scraped == {"audit-webhook": 9090, "audit-webhook-reconciler": 8081}
    args = {d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0]["args"] for d in deployments}
    assert "--metrics-port=9090" in args["audit-webhook"] and "--health-port=8081" in args["audit-webhook-reconciler"]
