"""End to end against a real kube-apiserver, etcd and kubectl (built by e2e/build.sh)."""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
import time
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import ROOT, ControlPlane, WebhookProcess
from tests.helpers import KUBECONFIG

EXAMPLE_POD = yaml.safe_load((ROOT / "examples/pods/apiserver.yaml").read_text())
VALIDATE = 'admission webhook "validate.audit-webhook.kubermatic.k8c.io" denied the request'
# audit-config goes to validate-config. (audited namespaces) or validate-config-other. (the rest).
VALIDATE_CONFIG = re.compile(r'admission webhook "validate-config(-other)?\.audit-webhook\.kubermatic\.k8c\.io" denied')


def kkp_cluster(name: str, dc: str = "hamburg", audit: dict[str, Any] | None = None, **metadata: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster",
                           "metadata": {"name": name, **metadata}, "spec": {"cloud": {"dc": dc}}}
    if audit is not None:
        obj["spec"]["auditLogging"] = audit
    return obj


def pod_in(namespace: str) -> dict[str, Any]:
    pod = copy.deepcopy(EXAMPLE_POD)
    pod["metadata"]["namespace"] = namespace
    return pod


def namespace(plane: ControlPlane, name: str) -> None:
    plane.kubectl("create", "namespace", name, check=False)


def create_pod_when_injected(plane: ControlPlane, ns: str, timeout: float = 20) -> dict[str, Any]:
    """Create the apiserver Pod once the webhook's cache knows the cluster (it watches, so give it a moment)."""
    deadline = time.monotonic() + timeout
    while True:
        trial = plane.create_json(pod_in(ns), "--dry-run=server")
        if any(c["name"] == "audit-logs" for c in trial["spec"]["containers"]) or time.monotonic() > deadline:
            return plane.create_json(pod_in(ns))
        time.sleep(0.3)


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == name)


def test_apiserver_pod_gets_sidecar_volumes_and_flags(plane: ControlPlane, webhook: WebhookProcess):
    namespace(plane, "cluster-e2eon")
    plane.apply(kkp_cluster("e2eon", audit={"enabled": True, "policyPreset": "minimal"}))
    pod = create_pod_when_injected(plane, "cluster-e2eon")
    # kube-apiserver validated and stored the patched Pod: read it back.
    stored = json.loads(plane.kubectl("get", "pod", "-n", "cluster-e2eon", pod["metadata"]["name"], "-o", "json").stdout)
    names = [c["name"] for c in stored["spec"]["containers"]]
    assert names == ["konnectivity-server", "apiserver", "dnat-controller", "audit-logs"]
    sidecar = container(stored, "audit-logs")
    assert sidecar["env"][0] == {"name": "CLUSTER_ID", "value": "e2eon"}
    assert {v["name"] for v in stored["spec"]["volumes"]} >= {"audit-log", "audit-config", "audit-logs-fluentbit"}
    args = container(stored, "apiserver")["args"]
    assert args[args.index("--audit-log-maxage") + 1] == "30"
    assert "--audit-policy-file=/etc/kubernetes/audit/policy.yaml" in args
    assert stored["metadata"]["annotations"]["audit-webhook.kubermatic.k8c.io/settings-hash"]


def test_pod_outside_cluster_namespaces_is_untouched(plane: ControlPlane, webhook: WebhookProcess):
    namespace(plane, "team-x")
    pod = plane.create_json(pod_in("team-x"))
    assert [c["name"] for c in pod["spec"]["containers"]] == ["konnectivity-server", "apiserver", "dnat-controller"]
    assert "audit-webhook.kubermatic.k8c.io/settings-hash" not in pod["metadata"].get("annotations", {})


@pytest.mark.parametrize(("audit", "fragments"), [
    ({"enabled": True, "policyPreset": "verbose"},
     ['spec.auditLogging.policyPreset: Unsupported value: "verbose": supported values: "", "metadata", "minimal", '
      '"recommended"']),
    ({"enabled": True, "sidecar": {"config": {"outputs": [{"Name": "forward", "Match": "*",
                                                           "Host": "x\n@INCLUDE /etc/passwd"}]}}},
     ['spec.auditLogging.sidecar.config.outputs[0][Host]: Invalid value: "x\\n@INCLUDE /etc/passwd"']),
    ({"webhookBackend": {"auditWebhookConfig": {"name": "theirs", "namespace": "cluster-victim"}}},
     ['spec.auditLogging.webhookBackend.auditWebhookConfig.namespace: Forbidden: a cluster may only use Secrets of '
      'its own namespace "cluster-e2ebad"']),
])
@pytest.mark.parametrize("dry_run", [False, True], ids=["apply", "dry-run=server"])
def test_kubectl_apply_of_a_bad_cluster_prints_our_field_errors(plane: ControlPlane, webhook: WebhookProcess,
                                                                audit, fragments, dry_run):
    extra = ("--dry-run=server",) if dry_run else ()
    result = plane.apply(kkp_cluster("e2ebad", audit=audit), extra=extra, check=False)
    assert result.returncode != 0
    assert VALIDATE in result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert plane.kubectl("get", "cluster", "e2ebad", check=False).returncode != 0  # nothing was stored


@pytest.mark.parametrize("dry_run", [False, True], ids=["apply", "dry-run=server"])
def test_warnings_reach_kubectl(plane: ControlPlane, webhook: WebhookProcess, dry_run):
    extra = ("--dry-run=server",) if dry_run else ()
    result = plane.apply(kkp_cluster("e2ewarn-dry" if dry_run else "e2ewarn", audit={"enabled": False, "sidecar": {
        "config": {"service": {"Flush": "5"}}}}), extra=extra)
    assert "Warning: spec.auditLogging.sidecar: has no effect while audit logging is off" in result.stderr


def test_datacenter_enforcement_through_a_seed(plane: ControlPlane, webhook: WebhookProcess):
    namespace(plane, "kubermatic")
    namespace(plane, "cluster-e2eenf")
    plane.apply({"apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed",
                 "metadata": {"name": "e2e-seed", "namespace": "kubermatic"},
                 "spec": {"auditLogging": {"enabled": True, "policyPreset": "recommended"},
                          "datacenters": {"e2e-enforced": {"spec": {"enforceAuditLogging": True}}}}})
    result = plane.apply(kkp_cluster("e2eenf", dc="e2e-enforced", audit={"enabled": False}))
    assert "datacenter \"e2e-enforced\" enforces audit logging" in result.stderr  # the warning
    pod = create_pod_when_injected(plane, "cluster-e2eenf")
    assert "audit-logs" in [c["name"] for c in pod["spec"]["containers"]]


def test_what_a_running_apiserver_needs_cannot_be_edited_away_or_deleted(plane: ControlPlane, webhook: WebhookProcess):
    from webhook.core.presets import policy_text

    ns = "cluster-e2eprot"
    namespace(plane, ns)
    plane.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "wh", "namespace": ns},
                 "stringData": {"webhook.yaml": KUBECONFIG}})
    plane.apply(kkp_cluster("e2eprot", audit={"enabled": True, "policyPreset": "minimal",
                                              "webhookBackend": {"auditWebhookConfig": {"name": "wh"}}}))
    config = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audit-config", "namespace": ns},
              "data": {"policy.yaml": policy_text("minimal")}}
    deadline = time.monotonic() + 20
    while True:  # until the webhook's cache knows the cluster
        edited = {**config, "data": {"policy.yaml": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n"}}
        result = plane.apply(edited, extra=("--dry-run=server",), check=False)
        if result.returncode != 0 or time.monotonic() > deadline:
            break
        time.sleep(0.3)
    assert VALIDATE_CONFIG.search(result.stderr)
    assert 'uses the audit policy preset "minimal", which records' in result.stderr
    plane.apply(config)  # the preset's own text is accepted
    deleted = plane.kubectl("delete", "secret", "wh", "-n", ns, check=False)
    assert deleted.returncode != 0
    assert 'Secret "cluster-e2eprot/wh" is in use: cluster "e2eprot" needs it' in deleted.stderr
    deleted = plane.kubectl("delete", "configmap", "audit-config", "-n", ns, check=False)
    assert deleted.returncode != 0 and "is in use" in deleted.stderr
    plane.apply(kkp_cluster("e2eprot"))  # audit off: now both may go
    deadline = time.monotonic() + 20
    while plane.kubectl("delete", "secret", "wh", "-n", ns, check=False).returncode != 0:
        assert time.monotonic() < deadline
        time.sleep(0.3)


def test_a_policy_kube_apiserver_would_refuse_is_refused_at_edit_time(plane: ControlPlane, webhook: WebhookProcess):
    namespace(plane, "cluster-e2epol")
    bad = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audit-config", "namespace": "cluster-e2epol"},
           "data": {"policy.yaml": "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [Later]\nrules:\n"
                                   "- level: Verbose\n- level: None\n  nonResourceURLs: [healthz]\n"}}
    result = plane.apply(bad, check=False)
    assert result.returncode != 0
    assert VALIDATE_CONFIG.search(result.stderr)
    for fragment in ('data[policy.yaml].omitStages[0]: Unsupported value: "Later"',
                     'data[policy.yaml].rules[0].level: Unsupported value: "Verbose"',
                     "data[policy.yaml].rules[1].nonResourceURLs[0]: Invalid value: \"healthz\": non-resource URL rules "
                     "must begin with a '/' character"):
        assert fragment in result.stderr
    good = {**bad, "data": {"policy.yaml": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"}}
    plane.apply(good)
    other = {**bad, "metadata": {"name": "not-audit", "namespace": "cluster-e2epol"}}
    plane.apply(other)  # other ConfigMaps are none of our business


def _report(plane: ControlPlane) -> dict[str, dict[str, Any]]:
    result = subprocess.run([sys.executable, "-m", "webhook", "report", "--source", "kube", "--kubeconfig",
                             str(plane.kubeconfig), "-o", "json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return {row["cluster"]: row for row in json.loads(result.stdout)}


def test_report_over_the_api_and_files_that_clear_the_drift(plane: ControlPlane, webhook: WebhookProcess, tmp_path):
    namespace(plane, "cluster-e2erep")
    namespace(plane, "kubermatic")
    # The Seed of its datacenter, which enforces nothing: without it the report cannot call the row clean.
    seed = {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed",
            "metadata": {"name": "e2e-report-seed", "namespace": "kubermatic"},
            "spec": {"datacenters": {"e2e-report-dc": {"spec": {}}}}}
    plane.apply(seed)
    cluster = kkp_cluster("e2erep", dc="e2e-report-dc", audit={"enabled": True, "policyPreset": "minimal"})
    plane.apply(cluster)
    create_pod_when_injected(plane, "cluster-e2erep")
    row = _report(plane)["e2erep"]
    assert (row["audit"], row["preset"], row["apiserver_pods"]) == ("on", "minimal", 1)
    assert row["drift"] == [{"kind": "object_missing", "detail": "ConfigMap audit-config missing"},
                            {"kind": "object_missing", "detail": "Secret audit-logs-fluentbit missing"}], row
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(cluster))
    (tmp_path / "seed.yaml").write_text(yaml.safe_dump(seed))
    files = subprocess.run([sys.executable, "-m", "webhook", "files", "--mode", "standalone",
                            "--cluster", str(tmp_path / "cluster.yaml"),
                            "--seed", str(tmp_path / "seed.yaml")],
                           cwd=ROOT, capture_output=True, text=True, check=True).stdout
    plane.kubectl("apply", "-f", "-", stdin=files)  # the ConfigMap also passes the validating webhook
    assert _report(plane)["e2erep"]["drift"] == []


@pytest.mark.parametrize("overlay", ["kkp", "standalone"])
def test_each_overlay_is_accepted_by_kube_apiserver(plane: ControlPlane, webhook: WebhookProcess, overlay):
    """`kubectl apply -k deploy/overlays/X` as a server-side dry run: every object passes the real API's
    validation; no overlay carries a CRD (so no `delete -k` can delete one), and each sets its mode."""
    rendered = plane.kubectl("kustomize", str(ROOT / "deploy/overlays" / overlay)).stdout
    docs = list(yaml.safe_load_all(rendered))
    kinds = [doc["kind"] for doc in docs]
    for kind in ("Namespace", "ServiceAccount", "ClusterRole", "Role", "Deployment", "PodDisruptionBudget", "Service",
                 "MutatingWebhookConfiguration", "ValidatingWebhookConfiguration", "NetworkPolicy",
                 "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding"):
        assert kind in kinds
    assert "CustomResourceDefinition" not in kinds
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    assert set(deployments) == {"audit-webhook", "audit-webhook-reconciler"}
    for deployment in deployments.values():
        assert f"--mode={overlay}" in deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    server, reconciler = (deployments[n]["spec"]["template"]["spec"] for n in ("audit-webhook",
                                                                                  "audit-webhook-reconciler"))
    # Two identities: the server reads and answers, the reconciler writes; mutual TLS is on.
    assert (server["serviceAccountName"], reconciler["serviceAccountName"]) == ("audit-webhook",
                                                                              "audit-webhook-reconciler")
    assert server["containers"][0]["args"][0] == "serve" and "--reconcile" not in server["containers"][0]["args"]
    assert reconciler["containers"][0]["args"][0] == "reconcile"
    assert {"--client-ca=/client-ca/ca.crt", "--client-name=kube-apiserver-webhook-client"} <= set(
        server["containers"][0]["args"])
    namespace(plane, "audit-webhook")
    result = plane.kubectl("apply", "--dry-run=server", "-f", "-", stdin=rendered)
    assert "deployment.apps/audit-webhook created (server dry run)" in result.stdout
    assert "deployment.apps/audit-webhook-reconciler created (server dry run)" in result.stdout
