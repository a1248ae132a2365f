"""With the webhook down, only the control planes that need it stop (real kube-apiserver).

The reconciler (its own process, KKP mode) keeps the MutatingWebhookConfiguration's namespace
lists: `Fail` for the namespaces of clusters that need injection, `Ignore` for the rest, and
`Fail` for any apiserver Pod that already carries audit settings. The Pods are KKP's own
apiserver Pod template (from KKP's rendered Deployment), created directly: no controller runs here.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import yaml

from tests.e2e.cluster import ROOT, ControlPlane, WebhookProcess
from tests.e2e.test_kube import kkp_cluster, namespace

KKP_DEPLOYMENT = yaml.safe_load(
    (ROOT.parent / "shared/kkp/apiserver/deployment-aws-1.36.0-apiserver.yaml").read_text())


def kkp_pod(ns: str, name: str, *extra_args: str) -> dict[str, Any]:
    template = copy.deepcopy(KKP_DEPLOYMENT["spec"]["template"])
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": name, "namespace": ns},
           "spec": template["spec"]}
    api = next(c for c in pod["spec"]["containers"] if c["name"] == "apiserver")
    api["args"] = [*api.get("args", []), *extra_args]
    return pod


def _selector_values(plane: ControlPlane, webhook_prefix: str) -> list[str]:
    config = json.loads(plane.kubectl("get", "mutatingwebhookconfiguration", "audit-webhook", "-o", "json").stdout)
    hook = next(w for w in config["webhooks"] if w["name"].startswith(webhook_prefix))
    return hook["namespaceSelector"]["matchExpressions"][0]["values"]


def _create(plane: ControlPlane, pod: dict[str, Any]):
    return plane.kubectl("create", "-f", "-", stdin=json.dumps(pod), check=False)


def test_with_the_webhook_down_only_audited_control_planes_stop(plane: ControlPlane, webhook: WebhookProcess,
                                                                tmp_path: Path):
    for ns in ("cluster-downon", "cluster-downoff", "e2e-down-lease"):
        namespace(plane, ns)
    plane.apply(kkp_cluster("downon", audit={"enabled": True, "policyPreset": "metadata"}))
    plane.apply(kkp_cluster("downoff"))
    # Same certificates as the registered webhook, so its caBundle stays right; its own Lease namespace.
    reconciler = WebhookProcess(plane, webhook.cert_dir, label="down-reconciler", extra=(
        "--reconcile", "--mode", "kkp", "--webhook-config-name", "audit-webhook",
        "--namespace", "e2e-down-lease"))
    reconciler.start()
    try:
        deadline = time.monotonic() + 30
        while "cluster-downon" not in _selector_values(plane, "inject.") and time.monotonic() < deadline:
            time.sleep(0.3)
        assert "cluster-downon" in _selector_values(plane, "inject.")
        assert "cluster-downoff" not in _selector_values(plane, "inject.")
        assert "cluster-downon" in _selector_values(plane, "inject-other.")  # NotIn: the Ignore webhook skips it

        # With the webhook up, both are injected or left alone as their settings say.
        up = json.loads(plane.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                                      stdin=json.dumps(kkp_pod("cluster-downon", "up"))).stdout)
        assert any(c["name"] == "audit-logs" for c in up["spec"]["containers"])

        webhook.stop()
        try:
            refused = _create(plane, kkp_pod("cluster-downon", "apiserver-a"))
            assert refused.returncode != 0 and "failed calling webhook" in refused.stderr
            assert 'webhook "inject.audit-webhook.kubermatic.k8c.io"' in refused.stderr
            started = _create(plane, kkp_pod("cluster-downoff", "apiserver-b"))
            assert started.returncode == 0, started.stderr
            # An apiserver Pod that carries audit settings fails closed wherever it is (any spelling).
            marked = _create(plane, kkp_pod("cluster-downoff", "apiserver-c", "--audit_policy_file=/x/policy.yaml"))
            assert marked.returncode != 0 and "inject-marked.audit-webhook.kubermatic.k8c.io" in marked.stderr
            # Pods that are not apiservers never call us.
            etcd = kkp_pod("cluster-downon", "etcd-0")
            etcd["metadata"]["labels"] = {"app": "etcd"}
            assert _create(plane, etcd).returncode == 0
        finally:
            webhook.start()
    finally:
        reconciler.stop()


def test_with_the_webhook_down_kkp_keeps_reconciling_clusters(plane: ControlPlane, webhook: WebhookProcess):
    """KKP's controllers update Clusters all the time and write audit-config before the Deployment:
    with the webhook down, only changes to what the webhook judges, and audit-config of audited
    clusters, wait for it."""
    namespace(plane, "cluster-downkkp")
    plane.apply(kkp_cluster("downkkp"))
    webhook.stop()
    try:
        finalizer = plane.kubectl("patch", "cluster", "downkkp", "--type=merge", "-p",
                                  json.dumps({"metadata": {"finalizers": ["kubermatic.k8c.io/cleanup"]}}), check=False)
        assert finalizer.returncode == 0, finalizer.stderr
        config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audit-config",
                                                                       "namespace": "cluster-downkkp"},
                  "data": {"policy.yaml": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"}}
        assert plane.apply(config, check=False).returncode == 0
        changed = plane.kubectl("patch", "cluster", "downkkp", "--type=merge", "-p",
                                json.dumps({"spec": {"auditLogging": {"enabled": True}}}), check=False)
        assert changed.returncode != 0 and "failed calling webhook" in changed.stderr
    finally:
        webhook.start()
        plane.kubectl("patch", "cluster", "downkkp", "--type=merge", "-p", json.dumps({"metadata": {"finalizers": []}}))
