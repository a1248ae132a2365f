"""The reconciler against the real API: objects behind the volumes, rollouts, clean-up, events."""

from __future__ import annotations

import base64
import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import ControlPlane, ReconcilerProcess, WebhookProcess, eventually
from tests.e2e.test_kube import kkp_cluster, namespace
from webhook.core import names
from webhook.core.presets import policy_text

NS = "cluster-e2erec"
KUBECONFIG = ("apiVersion: v1\nkind: Config\nclusters:\n- name: s\n  cluster:\n    server: https://sink.example\n"
              "contexts:\n- name: s\n  context:\n    cluster: s\ncurrent-context: s\n")


ALLOW_PRIVATE = "egress:\n  cidrs: [10.0.0.0/8]\n"


@pytest.fixture(scope="module")
def operator_config(plane: ControlPlane) -> Path:
    """The operator's configuration: egress to the private network is allowed."""
    config = plane.work / "operator-config.yaml"
    config.write_text(ALLOW_PRIVATE)
    return config


@pytest.fixture(scope="module")
def reconciler(plane: ControlPlane, webhook: WebhookProcess, operator_config: Path) -> Iterator[ReconcilerProcess]:
    """`audit-webhook reconcile` beside the webhook."""
    namespace(plane, "audit-webhook")
    proc = ReconcilerProcess(plane, extra=("--mode", "standalone", "--report-interval", "0.5",
                                           "--config", str(operator_config)))
    proc.start()
    yield proc
    assert proc.stop() == 0


def get(plane: ControlPlane, kind: str, name: str, ns: str = NS) -> dict[str, Any] | None:
    result = plane.kubectl("get", kind, name, "-n", ns, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def template_hash(plane: ControlPlane) -> str | None:
    deploy = get(plane, "deployment", "apiserver")
    return ((deploy or {}).get("spec", {}).get("template", {}).get("metadata", {}).get("annotations") or {}).get(
        names.SETTINGS_HASH_ANNOTATION)


def test_reconciler_keeps_objects_rolls_and_cleans_up(plane: ControlPlane, reconciler: ReconcilerProcess,
                                                      operator_config: Path):
    namespace(plane, "kubermatic")
    namespace(plane, NS)
    plane.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "dc-sink", "namespace": "kubermatic"},
                 "stringData": {"webhook.yaml": KUBECONFIG}},
                {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed",
                 "metadata": {"name": "e2e-rec-seed", "namespace": "kubermatic"},
                 "spec": {"datacenters": {"e2e-rec-dc": {"spec": {"enforcedAuditWebhookSettings": {
                     "auditWebhookConfig": {"name": "dc-sink", "namespace": "kubermatic"}}}}}}},
                {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "apiserver", "namespace": NS},
                 "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "apiserver"}},
                          "template": {"metadata": {"labels": {"app": "apiserver"}},
                                       "spec": {"containers": [{"name": "apiserver", "image": "kube-apiserver"}]}}}})
    sinks = {"config": {"outputs": [{"Name": "forward", "Match": "*", "Host": "10.0.0.7", "Port": "24224"}]}}
    plane.apply(kkp_cluster("e2erec", dc="e2e-rec-dc", audit={"enabled": True, "policyPreset": "minimal",
                                                              "sidecar": sinks}))

    # 1. The three objects appear, labelled, with the right content; the Deployment is rolled.
    config = eventually(lambda: get(plane, "configmap", "audit-config"))
    assert config and config["data"]["policy.yaml"] == policy_text("minimal")
    assert config["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "audit-webhook"
    fluentbit = eventually(lambda: get(plane, "secret", "audit-logs-fluentbit"))
    assert fluentbit and "[INPUT]" in base64.b64decode(fluentbit["data"]["fluent-bit.conf"]).decode()
    copy = eventually(lambda: get(plane, "secret", "dc-sink"))
    assert copy and base64.b64decode(copy["data"]["webhook.yaml"]).decode() == KUBECONFIG
    first = eventually(lambda: template_hash(plane))
    assert first
    egress = eventually(lambda: get(plane, "networkpolicy", "audit-logging-egress"))
    assert egress and egress["spec"]["egress"] == [{"to": [{"ipBlock": {"cidr": "10.0.0.7/32"}}],
                                                    "ports": [{"protocol": "TCP", "port": 24224}]}]
    assert egress["metadata"]["ownerReferences"][0]["uid"] == get(plane, "cluster", "e2erec", ns="")["metadata"]["uid"]

    # The operator narrows the allow-list: the reconciler reloads it, closes the egress, and says why.
    operator_config.write_text("egress:\n  cidrs: [192.168.0.0/16]\n")
    assert eventually(lambda: get(plane, "networkpolicy", "audit-logging-egress") is None)
    operator_config.write_text(ALLOW_PRIVATE)
    assert eventually(lambda: get(plane, "networkpolicy", "audit-logging-egress"))

    # 2. While the preset owns the policy, a manual edit is refused by the validating webhook.
    custom_policy = "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n"
    edit = ("patch", "configmap", "audit-config", "-n", NS, "--type=merge", "-p",
            json.dumps({"data": {"policy.yaml": custom_policy}}))
    refused = plane.kubectl(*edit, check=False)
    assert refused.returncode != 0 and 'uses the audit policy preset' in refused.stderr
    assert template_hash(plane) == first  # nothing changed: no rollout

    # 3. Switching to a custom policy rolls the apiserver; the user's policy is then left alone.
    plane.apply(kkp_cluster("e2erec", dc="e2e-rec-dc", audit={"enabled": True, "policyPreset": "", "sidecar": sinks}))
    assert eventually(lambda: template_hash(plane) not in (None, first))
    assert eventually(lambda: plane.kubectl(*edit, check=False).returncode == 0)
    time.sleep(1.5)  # several reconcile passes
    assert get(plane, "configmap", "audit-config")["data"]["policy.yaml"] == custom_policy

    # A preset again overrides the manual policy.
    plane.apply(kkp_cluster("e2erec", dc="e2e-rec-dc", audit={"enabled": True, "policyPreset": "minimal",
                                                              "sidecar": sinks}))
    assert eventually(lambda: (get(plane, "configmap", "audit-config") or {}).get("data", {}).get("policy.yaml")
                      == policy_text("minimal"))

    # 4. Off (and out of the enforcing datacenter): every managed object goes, the sidecar is rolled out.
    rolled = template_hash(plane)
    plane.apply(kkp_cluster("e2erec", dc="nowhere"))
    assert eventually(lambda: all(get(plane, kind, name) is None for kind, name in (
        ("configmap", "audit-config"), ("secret", "audit-logs-fluentbit"), ("secret", "dc-sink"),
        ("networkpolicy", "audit-logging-egress"))))
    assert eventually(lambda: template_hash(plane) not in (None, rolled))
    assert get(plane, "secret", "dc-sink", ns="kubermatic") is not None  # the datacenter's own is kept

    # 5. What was done is on the Cluster as Events.
    events = json.loads(plane.kubectl("get", "events", "-n", "default", "--field-selector",
                                      "involvedObject.name=e2erec", "-o", "json").stdout)["items"]
    reasons = {e["reason"] for e in events}
    assert {"AuditObjectsReconciled", "ApiserverRolledOut", "EgressRefused"} <= reasons
    assert any("10.0.0.7 is not in the operator's egress allow-list" in e["message"] for e in events)
    assert any('restored ConfigMap audit-config to the "minimal" preset' in e["message"] for e in events)
    lease = json.loads(plane.kubectl("get", "lease", "-n", "audit-webhook", "audit-webhook-reconciler",
                                     "-o", "json").stdout)
    assert lease["spec"]["holderIdentity"]

    # 6. And in its metrics, which Prometheus scrapes from the probe port.
    def metrics_page() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{reconciler.port}/metrics", timeout=5) as r:
            return r.read().decode()

    # Turned off in step 4, its report row says so.
    assert eventually(lambda: 'audit_webhook_cluster_audit_state{cluster="e2erec",state="off"} 1.0' in metrics_page())
    metrics = metrics_page()
    assert "audit_webhook_reconciler_leader 1.0" in metrics
    assert 'audit_webhook_reconcile_actions_total{kind="ConfigMap",verb="create"}' in metrics
    assert 'audit_webhook_reconcile_actions_total{kind="Secret",verb="delete"}' in metrics
    rollouts = next(line for line in metrics.splitlines() if line.startswith("audit_webhook_rollouts_total "))
    assert float(rollouts.split()[1]) >= 3


def test_a_tightened_policy_rule_never_stops_a_running_control_plane(plane: ControlPlane,
                                                                     reconciler: ReconcilerProcess):
    """The operator lowers the Seed's sidecar resource ceiling below what a stored Cluster asks for:
    its apiserver Pods are still injected, with a warning, and the Cluster gets an Event."""
    ns = "cluster-e2etight"
    namespace(plane, "kubermatic")
    namespace(plane, ns)
    seed = {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed",
            "metadata": {"name": "e2e-tight-seed", "namespace": "kubermatic",
                         "annotations": {names.RESOURCE_CEILING_ANNOTATION: "cpu=8"}},
            "spec": {"datacenters": {"e2e-tight-dc": {"spec": {}}}}}
    plane.apply(seed)
    big = {"enabled": True, "sidecar": {"resources": {"limits": {"cpu": "4"}}}}
    plane.apply(kkp_cluster("e2etight", dc="e2e-tight-dc", audit=big))  # within the Seed's ceiling
    seed["metadata"]["annotations"] = {}
    plane.apply(seed)  # the default ceiling, lower than the Cluster's cpu, applies again

    def dry_run() -> dict[str, Any] | None:
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "apiserver-x", "namespace": ns,
                                                              "labels": {"app": "apiserver"}},
               "spec": {"containers": [{"name": "apiserver", "image": "kube-apiserver"}]}}
        result = plane.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-", stdin=json.dumps(pod),
                               check=False)
        created = json.loads(result.stdout) if result.returncode == 0 else {}
        injected = names.SETTINGS_HASH_ANNOTATION in (created.get("metadata", {}).get("annotations") or {})
        return {"pod": created, "stderr": result.stderr} if injected and "breaks a rule" in result.stderr else None

    admitted = eventually(dry_run)
    assert admitted, "the Pod was not injected with a warning"
    assert any(c["name"] == "audit-logs" for c in admitted["pod"]["spec"]["containers"])
    assert ('limits[cpu]: breaks a rule the Cluster predates, injected anyway (please fix): Invalid value: "4"'
            in admitted["stderr"])
    assert "[sidecar.resource-ceiling]" in admitted["stderr"]

    def out_of_policy() -> list[dict[str, Any]]:
        events = json.loads(plane.kubectl("get", "events", "-n", "default", "--field-selector",
                                          "involvedObject.name=e2etight", "-o", "json").stdout)["items"]
        return [e for e in events if e["reason"] == "AuditSettingsOutOfPolicy"]

    events = eventually(out_of_policy)
    assert events and "reconciled and injected, but:" in events[0]["message"]
