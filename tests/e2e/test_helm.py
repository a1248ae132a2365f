"""The Helm chart (charts/audit-webhook): `helm lint`, `helm template` of its values, the schema that
refuses bad ones, and deploy/ as the chart rendered. Real: helm and kubectl built from Go modules
(e2e/build.sh); no cluster is needed here (tests/e2e/test_helm_lifecycle.py installs the chart)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from deploy import render
from tests.e2e.cluster import BIN, ROOT
from webhook import __version__
from webhook.core.operator_config import OperatorConfig, parse

CHART = ROOT / "charts/audit-webhook"
NAMESPACE = "audit-webhook"
Objects = dict[tuple[str, str], dict[str, Any]]


def run(helm: Path, *args: str, values: dict[str, Any] | None = None, tmp_path: Path | None = None
        ) -> subprocess.CompletedProcess[str]:
    extra: list[str] = []
    if values is not None:
        assert tmp_path is not None
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        extra = ["-f", str(path)]
    return subprocess.run([str(helm), *args, *extra], capture_output=True, text=True, timeout=120, check=False)


def template(helm: Path, tmp_path: Path, values: dict[str, Any], namespace: str = NAMESPACE) -> Objects:
    """`helm template` of the chart with these values, as {(kind, name): object}."""
    result = run(helm, "template", "audit-webhook", str(CHART), "--namespace", namespace, values=values,
                 tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    objects = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert len(objects) == len(docs), "two objects of one kind and name"
    return objects


def container(objects: Objects, deployment: str) -> dict[str, Any]:
    return objects[("Deployment", deployment)]["spec"]["template"]["spec"]["containers"][0]


def args(objects: Objects, deployment: str) -> list[str]:
    return container(objects, deployment)["args"]


def volumes(objects: Objects, deployment: str) -> dict[str, dict[str, Any]]:
    spec = objects[("Deployment", deployment)]["spec"]["template"]["spec"]
    return {v["name"]: v for v in spec["volumes"]}


def test_the_charts_app_version_is_the_package_version():
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == __version__


LINTED = {
    "defaults": {},
    "standalone": {"mode": "standalone"},
    "cert-manager, monitoring, own client CA": {
        "certificates": {"mode": "certManager", "certManager": {"issuerRef": {"kind": "ClusterIssuer", "name": "ca"}}},
        "metrics": {"serviceMonitor": {"enabled": True}, "prometheusRule": {"enabled": True},
                    "dashboard": {"enabled": True, "namespace": "monitoring"}},
        "mtls": {"clientCA": {"pem": "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"}}},
    "no mutual TLS, no NetworkPolicy": {"mtls": {"enabled": False}, "networkPolicy": {"enabled": False}},
}


@pytest.mark.parametrize("values", LINTED.values(), ids=LINTED.keys())
def test_helm_lint_passes(helm, tmp_path, values):
    result = run(helm, "lint", "--strict", str(CHART), "--namespace", NAMESPACE, values=values, tmp_path=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 chart(s) failed" in result.stdout


# (values, what the error must name): each refused by values.schema.json before anything renders.
REFUSED = [
    ({"mode": "kubermatic"}, "at '/mode': value must be one of 'kkp', 'standalone'"),
    ({"server": {"replica": 3}}, "at '/server': additional properties 'replica' not allowed"),
    ({"server": {"replicas": 0}}, "at '/server/replicas'"),
    ({"image": {"digest": "sha256:abc"}}, "at '/image/digest'"),
    ({"image": {"tag": "0.1.0 latest"}}, "at '/image/tag'"),
    ({"logFormat": "yaml"}, "at '/logFormat'"),
    ({"config": {"egress": {"cidr": ["10.0.0.0/8"]}}}, "at '/config/egress': additional properties 'cidr'"),
    ({"config": {"egress": {"services": ["fluentd"]}}}, "at '/config/egress/services/0'"),
    ({"config": {"seedNetworks": ["10.0.0.0"]}}, "at '/config/seedNetworks/0'"),
    ({"certificates": {"mode": "vault"}}, "at '/certificates/mode'"),
    ({"certificates": {"certManager": {"issuerRef": {"kind": "ClusterIssuer"}}}},
     "at '/certificates/certManager/issuerRef'"),
    ({"webhooks": {"url": "http://127.0.0.1:8443"}}, "at '/webhooks/url'"),
    ({"mtls": {"clientNames": []}}, "at '/mtls/clientNames'"),
    ({"mtls": {"clientCA": {"pem": "ca.crt"}}}, "at '/mtls/clientCA/pem'"),
    ({"server": {"metricsPort": 8443}}, "at '/server/metricsPort'"),
    ({"server": {"extraArgs": ["max-connections=5"]}}, "at '/server/extraArgs/0'"),
    ({"server": {"resources": {"limits": {"memory": "lots"}}}}, "at '/server/resources/limits/memory'"),
    ({"metrics": {"serviceMonitor": {"interval": "often"}}}, "at '/metrics/serviceMonitor/interval'"),
    # `from: []` in a NetworkPolicy admits every source: no list is not "nobody".
    ({"networkPolicy": {"metricsFrom": []}}, "at '/networkPolicy/metricsFrom'"),
]


@pytest.mark.parametrize(("values", "message"), REFUSED, ids=[m for _, m in REFUSED])
def test_values_the_schema_refuses_fail_template_and_lint(helm, tmp_path, values, message):
    for command in (["template", "audit-webhook"], ["lint"]):
        result = run(helm, *command, str(CHART), values=values, tmp_path=tmp_path)
        out = result.stdout + result.stderr
        assert result.returncode != 0, (command, out)
        assert "values don't meet the specifications of the schema" in out and message in out, (command, out)


DIGEST = "sha256:" + "0123456789abcdef" * 4
IMAGES = [
    ({}, f"ghcr.io/audit-webhook/audit-webhook:{__version__}"),
    ({"tag": "0.2.0"}, "ghcr.io/audit-webhook/audit-webhook:0.2.0"),
    ({"digest": DIGEST}, f"ghcr.io/audit-webhook/audit-webhook:{__version__}@{DIGEST}"),
    ({"registry": "registry.corp.example:5000/mirror", "tag": "0.2.0", "digest": DIGEST},
     f"registry.corp.example:5000/mirror/audit-webhook/audit-webhook:0.2.0@{DIGEST}"),
    ({"registry": "", "repository": "audit-webhook"}, f"audit-webhook:{__version__}"),
]


@pytest.mark.parametrize(("image", "reference"), IMAGES)
def test_both_deployments_run_the_image_the_values_name(helm, tmp_path, image, reference):
    objects = template(helm, tmp_path, {"image": {**image, "pullPolicy": "Always"}})
    for deployment in ("audit-webhook", "audit-webhook-reconciler"):
        assert container(objects, deployment)["image"] == reference
        assert container(objects, deployment)["imagePullPolicy"] == "Always"


@pytest.mark.parametrize("mode", ["kkp", "standalone"])
def test_the_mode_reaches_both_processes_and_only_standalone_may_roll_deployments(helm, tmp_path, mode):
    objects = template(helm, tmp_path, {"mode": mode})
    for deployment in ("audit-webhook", "audit-webhook-reconciler"):
        assert f"--mode={mode}" in args(objects, deployment)
    rollouts = ("ClusterRole", "audit-webhook-reconciler-rollouts")
    assert (rollouts in objects) is (mode == "standalone")
    if mode == "standalone":
        deployments = [r for r in objects[rollouts]["rules"] if r["resources"] == ["deployments"]]
        assert deployments == [{"apiGroups": ["apps"], "resources": ["deployments"], "resourceNames": ["apiserver"],
                                "verbs": ["get", "list", "watch", "patch"]}]
    # CRDs are never templates: Helm installs crds/ once (skipped with --skip-crds) and never deletes them.
    assert not any(kind == "CustomResourceDefinition" for kind, _ in objects)


def test_replicas_resources_placement_and_flags_reach_the_deployments(helm, tmp_path):
    resources = {"requests": {"cpu": "200m", "memory": "128Mi"}, "limits": {"cpu": "2", "memory": "512Mi"}}
    objects = template(helm, tmp_path, {
        "server": {"replicas": 3, "resources": resources, "metricsPort": 9100, "extraArgs": ["--max-connections=64"],
                   "nodeSelector": {"node-role.kubernetes.io/control-plane": ""}, "priorityClassName": "seed-critical",
                   "podDisruptionBudget": {"minAvailable": 2}},
        "reconciler": {"replicas": 1, "healthPort": 8181, "extraArgs": ["--resync-period=300"],
                       "tolerations": [{"key": "seed", "operator": "Exists"}]},
        "logFormat": "text", "logLevel": "DEBUG",
        "sidecar": {"registry": "registry.corp.example", "fluentBitFormat": "yaml"},
        "imagePullSecrets": [{"name": "corp-registry"}]})
    server = objects[("Deployment", "audit-webhook")]["spec"]
    reconciler = objects[("Deployment", "audit-webhook-reconciler")]["spec"]
    assert (server["replicas"], reconciler["replicas"]) == (3, 1)
    assert container(objects, "audit-webhook")["resources"] == resources
    assert server["template"]["spec"]["nodeSelector"] == {"node-role.kubernetes.io/control-plane": ""}
    assert server["template"]["spec"]["priorityClassName"] == "seed-critical"
    assert reconciler["template"]["spec"]["tolerations"] == [{"key": "seed", "operator": "Exists"}]
    for spec in (server, reconciler):
        assert spec["template"]["spec"]["imagePullSecrets"] == [{"name": "corp-registry"}]
    assert objects[("PodDisruptionBudget", "audit-webhook")]["spec"]["minAvailable"] == 2
    assert "--max-connections=64" in args(objects, "audit-webhook")
    assert "--metrics-port=9100" in args(objects, "audit-webhook")
    assert server["template"]["metadata"]["annotations"]["prometheus.io/port"] == "9100"
    assert {"name": "metrics", "port": 9100, "targetPort": "metrics"} in \
        objects[("Service", "audit-webhook")]["spec"]["ports"]
    reconciler_args = args(objects, "audit-webhook-reconciler")
    assert {"--health-port=8181", "--resync-period=300"} <= set(reconciler_args)
    for deployment in ("audit-webhook", "audit-webhook-reconciler"):
        assert {"--log-format=text", "--log-level=DEBUG", "--sidecar-registry=registry.corp.example",
                "--fluent-bit-format=yaml"} <= set(args(objects, deployment))
    ingress = objects[("NetworkPolicy", "audit-webhook-reconciler")]["spec"]["ingress"]
    assert ingress == [{"ports": [{"protocol": "TCP", "port": 8181}]}]


def test_the_operator_configuration_is_the_config_value(helm, tmp_path):
    config = {"seedNetworks": ["10.244.0.0/16"],
              "egress": {"cidrs": ["10.20.0.0/16"], "namespaces": ["logging"], "services": ["siem/intake"]}}
    objects = template(helm, tmp_path, {"config": config})
    text = objects[("ConfigMap", "audit-webhook-config")]["data"]["config.yaml"]
    assert parse(text, "config.yaml") == OperatorConfig.model_validate(config)
    for deployment in ("audit-webhook", "audit-webhook-reconciler"):
        assert "--config=/etc/audit-webhook/config.yaml" in args(objects, deployment)
        assert volumes(objects, deployment)["config"]["configMap"] == {"name": "audit-webhook-config"}


def test_mutual_tls_takes_the_client_names_and_ca_from_the_values(helm, tmp_path):
    pem = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"
    objects = template(helm, tmp_path, {"mtls": {"clientNames": ["apiserver-a", "apiserver-b"],
                                                 "clientCA": {"pem": pem, "configMap": "seed-webhook-ca"}}})
    server_args = args(objects, "audit-webhook")
    assert [a for a in server_args if a.startswith("--client-")] == [
        "--client-ca=/client-ca/ca.crt", "--client-name=apiserver-a", "--client-name=apiserver-b"]
    assert volumes(objects, "audit-webhook")["client-ca"]["configMap"] == {"name": "seed-webhook-ca"}
    assert objects[("ConfigMap", "seed-webhook-ca")]["data"] == {"ca.crt": pem + "\n"}
    # Without the PEM the operator creates the ConfigMap; without mutual TLS there is none to mount.
    assert ("ConfigMap", "audit-webhook-client-ca") not in template(helm, tmp_path, {})
    off = template(helm, tmp_path, {"mtls": {"enabled": False}})
    assert not [a for a in args(off, "audit-webhook") if a.startswith("--client-")]
    assert "client-ca" not in volumes(off, "audit-webhook")


def test_self_managed_certificates(helm, tmp_path):
    objects = template(helm, tmp_path, {})
    server_args = args(objects, "audit-webhook")
    assert {"--tls-secret=audit-webhook-tls", "--webhook-config-name=audit-webhook"} <= set(server_args)
    secret = objects[("Secret", "audit-webhook-tls")]
    assert "data" not in secret and "stringData" not in secret  # filled in by the server, kept by upgrades
    assert ("Role", "audit-webhook-tls") in objects
    assert volumes(objects, "audit-webhook")["certs"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Mi"}
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        assert "annotations" not in objects[(kind, "audit-webhook")]["metadata"]
    assert not any(kind in ("Certificate", "Issuer") for kind, _ in objects)


@pytest.mark.parametrize("issuer", [{}, {"kind": "ClusterIssuer", "name": "seed-ca"}])
def test_cert_manager_certificates(helm, tmp_path, issuer):
    objects = template(helm, tmp_path, {"certificates": {"mode": "certManager", "certManager": {"issuerRef": issuer}}},
                       namespace="seed-audit")
    certificate = objects[("Certificate", "audit-webhook")]["spec"]
    assert certificate["secretName"] == "audit-webhook-tls"
    assert "audit-webhook.seed-audit.svc" in certificate["dnsNames"]
    assert certificate["issuerRef"] == (issuer or {"kind": "Issuer", "name": "audit-webhook-selfsigned"})
    assert (("Issuer", "audit-webhook-selfsigned") in objects) is not issuer
    server_args = args(objects, "audit-webhook")
    assert "--webhook-config-name=none" in server_args
    assert not [a for a in server_args if a.startswith("--tls-secret")]
    assert volumes(objects, "audit-webhook")["certs"]["secret"] == {"secretName": "audit-webhook-tls"}
    # cert-manager writes the Secret and cainjector the caBundle: the server needs neither right.
    assert ("Secret", "audit-webhook-tls") not in objects and ("Role", "audit-webhook-tls") not in objects
    assert not [r for r in objects[("ClusterRole", "audit-webhook")]["rules"]
                if "admissionregistration.k8s.io" in r["apiGroups"]]
    for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration"):
        annotations = objects[(kind, "audit-webhook")]["metadata"]["annotations"]
        assert annotations == {"cert-manager.io/inject-ca-from": "seed-audit/audit-webhook"}


def _webhooks(objects: Objects) -> list[dict[str, Any]]:
    return [w for kind in ("MutatingWebhookConfiguration", "ValidatingWebhookConfiguration")
            for w in objects[(kind, "audit-webhook")]["webhooks"]]


def test_every_name_follows_the_release_namespace(helm, tmp_path):
    objects = template(helm, tmp_path, {}, namespace="seed-audit")
    namespaced = [o for o in objects.values() if "namespace" in o["metadata"]]
    assert namespaced and {o["metadata"]["namespace"] for o in namespaced} == {"seed-audit"}
    for hook in _webhooks(objects):
        assert hook["clientConfig"]["service"]["namespace"] == "seed-audit"
    # The webhook's own namespace is never judged, and never a place audit events may go.
    excluded = [e for hook in _webhooks(objects) for e in hook.get("namespaceSelector", {}).get(
        "matchExpressions", []) if e["operator"] == "NotIn"]
    assert excluded and all(e["values"] == ["seed-audit"] for e in excluded)
    policy = json.dumps(objects[("ValidatingAdmissionPolicy", "audit-webhook-reconciler-writes")])
    assert "['kubermatic', 'seed-audit']" in policy and "'audit-webhook']" not in policy
    for deployment in ("audit-webhook", "audit-webhook-reconciler"):
        assert "--namespace=seed-audit" in args(objects, deployment)
    for binding in ("audit-webhook", "audit-webhook-reconciler"):
        assert objects[("ClusterRoleBinding", binding)]["subjects"][0]["namespace"] == "seed-audit"


def test_a_webhook_url_replaces_the_service(helm, tmp_path):
    objects = template(helm, tmp_path, {"webhooks": {"url": "https://127.0.0.1:9443/"}})
    for hook in _webhooks(objects):
        path = "/mutate" if hook["name"].startswith("inject") else "/validate"
        assert hook["clientConfig"] == {"url": f"https://127.0.0.1:9443{path}"}


def test_monitoring_objects_carry_the_files_as_they_are(helm, tmp_path):
    assert not {k for k, _ in template(helm, tmp_path, {})} & {"ServiceMonitor", "PrometheusRule"}
    objects = template(helm, tmp_path, {"metrics": {
        "serviceMonitor": {"enabled": True, "interval": "15s", "labels": {"release": "kube-prometheus-stack"}},
        "prometheusRule": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}},
        "dashboard": {"enabled": True, "namespace": "monitoring", "labels": {"team": "seed"}}}})
    monitor = objects[("ServiceMonitor", "audit-webhook")]
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["endpoints"] == [{"port": "metrics", "path": "/metrics", "interval": "15s"}]
    # Both Services it selects have the port it scrapes.
    selected = monitor["spec"]["selector"]["matchExpressions"][0]["values"]
    for name in selected:
        service = objects[("Service", name)]
        assert service["metadata"]["labels"]["app.kubernetes.io/name"] == name
        assert "metrics" in [p["name"] for p in service["spec"]["ports"]]
    rule = objects[("PrometheusRule", "audit-webhook")]
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert rule["spec"] == yaml.safe_load((CHART / "files/alerts.yaml").read_text())
    dashboard = objects[("ConfigMap", "audit-webhook-dashboard")]
    assert dashboard["metadata"]["namespace"] == "monitoring"
    assert dashboard["metadata"]["labels"] == {"grafana_dashboard": "1", "team": "seed"}
    assert json.loads(dashboard["data"]["audit-webhook.json"]) == json.loads((CHART / "files/dashboard.json").read_text())


def test_deploy_is_the_chart_rendered(helm):
    """deploy/overlays/*/ and deploy/crds/ are generated: `make manifests` after changing the chart."""
    stale = render.stale(render.expected(helm))
    assert stale == [], f"deploy/ and the chart disagree; run `make manifests`: {[str(p) for p in stale]}"


def _spaced(value: Any) -> Any:
    """Strings with each run of whitespace as one space: kustomize re-folds the folded CEL
    expressions (`>-`) with extra line breaks, which CEL reads as the same whitespace."""
    if isinstance(value, dict):
        return {k: _spaced(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_spaced(v) for v in value]
    return " ".join(value.split()) if isinstance(value, str) else value


def test_kustomize_builds_each_mode_as_helm_renders_it(helm, tmp_path):
    for overlay in ("kkp", "standalone"):
        built = subprocess.run([str(BIN / "kubectl"), "kustomize", str(ROOT / "deploy/overlays" / overlay)],
                               capture_output=True, text=True, check=True).stdout
        kustomized = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(built)}
        values = yaml.safe_load((ROOT / "deploy/overlays" / overlay / "values.yaml").read_text())
        assert _spaced(kustomized) == _spaced(template(helm, tmp_path, values))
    # deploy/monitoring: the chart's monitoring objects only, applied after an overlay.
    built = subprocess.run([str(BIN / "kubectl"), "kustomize", str(ROOT / "deploy/monitoring")],
                           capture_output=True, text=True, check=True).stdout
    monitoring = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(built)}
    assert set(monitoring) == {("ServiceMonitor", "audit-webhook"), ("PrometheusRule", "audit-webhook"),
                               ("ConfigMap", "audit-webhook-dashboard")}
    values = yaml.safe_load((ROOT / "deploy/monitoring/values.yaml").read_text())
    rendered = template(helm, tmp_path, values)
    assert _spaced(monitoring) == _spaced({key: rendered[key] for key in monitoring})
    crds = subprocess.run([str(BIN / "kubectl"), "kustomize", str(ROOT / "deploy/crds")], capture_output=True,
                          text=True, check=True).stdout
    assert list(yaml.safe_load_all(crds)) == [yaml.safe_load(p.read_text()) for p in
                                              sorted((CHART / "crds").glob("*.yaml"))]
