"""Write deploy/monitoring/prometheusrule.yaml: the rule groups of charts/audit-webhook/files/alerts.yaml
(the one copy, which the Helm chart wraps too) in a PrometheusRule for kustomize, which cannot read files
outside its directory. Run by `make monitoring`; tests/test_monitoring.py checks that the two agree."""

from __future__ import annotations

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "charts/audit-webhook/files/alerts.yaml"
OUTPUT = ROOT / "deploy/monitoring/prometheusrule.yaml"
HEADER = ("# Generated from charts/audit-webhook/files/alerts.yaml by deploy/monitoring/generate.py\n"
          "# (make monitoring): edit that file, not this one.\n")


def render() -> str:
    """The PrometheusRule manifest, as written to OUTPUT."""
    rule = {"apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": {"name": "audit-webhook", "namespace": "audit-webhook",
                         "labels": {"app.kubernetes.io/name": "audit-webhook"}},
            "spec": {"groups": yaml.safe_load(RULES.read_text())["groups"]}}
    return HEADER + yaml.safe_dump(rule, sort_keys=False, width=120, allow_unicode=True)


if __name__ == "__main__":
    OUTPUT.write_text(render())
