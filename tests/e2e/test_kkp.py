"""Beside KKP on a real kube-apiserver: KKP's own CRDs (not ours), a KKP-shaped Seed, Clusters as
KKP's defaulting writes them, KKP's audit-config texts and KKP's apiserver Pods.

Real: etcd, kube-apiserver, kubectl, KKP's CRDs from `shared/kkp/crds/`, the admission server and
the reconciler (KKP mode) as two processes, each with the token of its own `deploy/` ServiceAccount,
under the RBAC and the ValidatingAdmissionPolicy of the `kkp` overlay. Not real: KKP's controllers do not run here, so the objects they would write
(audit-config, audit-logs-fluentbit, the copied webhook Secret, the apiserver Pods from KKP's
rendered Deployment) are written by the test, exactly as KKP writes them.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import ROOT, ControlPlane, ReconcilerProcess, WebhookProcess, eventually, webhook_configurations
from tests.helpers import KUBECONFIG
from tests.monitoring import families
from webhook.adapters.certs import ServiceName, ensure_certs
from webhook.core import names
from webhook.core.egress import classify, destinations, network_policy
from webhook.core.mutation import prepare
from webhook.core.operator_config import OperatorConfig
from webhook.core.options import Options

KKP = ROOT.parent / "shared/kkp"
KKP_DEPLOYMENTS = {p.stem: yaml.safe_load(p.read_text()) for p in sorted((KKP / "apiserver").glob("*.yaml"))}
RBAC_KINDS = ("Namespace", "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding",
              "ValidatingAdmissionPolicy", "ValidatingAdmissionPolicyBinding")
SERVER_SA = "system:serviceaccount:audit-webhook:audit-webhook"
RECONCILER_SA = "system:serviceaccount:audit-webhook:audit-webhook-reconciler"
DC_SECRET = "dc-audit-webhook"
# Each datacenter kind of a KKP seed: (datacenter spec, Cluster auditLogging as KKP's defaulting leaves it,
# whether the webhook backend is injected). KKP's defaulting copies a datacenter's enforced webhook
# settings into the Cluster only where the datacenter also enforces audit logging; the webhook
# applies them in every datacenter that has them.
ENFORCED_WEBHOOK = {"auditWebhookConfig": {"name": DC_SECRET, "namespace": "kubermatic"},
                    "auditWebhookInitialBackoff": "0s"}
DATACENTERS = {
    "plain": ({}, {"enabled": True, "policyPreset": "minimal"}, False),
    "enforced": ({"enforceAuditLogging": True}, {"enabled": True, "policyPreset": "recommended"}, False),
    "enforced-webhook": ({"enforceAuditLogging": True, "enforcedAuditWebhookSettings": ENFORCED_WEBHOOK},
                         {"enabled": True, "policyPreset": "metadata", "webhookBackend": ENFORCED_WEBHOOK}, True),
    "webhook-only": ({"enforcedAuditWebhookSettings": ENFORCED_WEBHOOK}, None, True),
}
KKP_SIDECAR_IMAGE = "registry.corp.example/fluent/fluent-bit:4.0.0"


def kkp_cluster(name: str, dc: str, audit: dict[str, Any] | None) -> dict[str, Any]:
    """A Cluster with the fields KKP's CRD requires and its defaulting fills in."""
    spec: dict[str, Any] = {
        "cloud": {"dc": dc, "providerName": "bringyourown", "bringyourown": {}},
        "clusterNetwork": {"dnsDomain": "cluster.local", "pods": {"cidrBlocks": ["172.25.0.0/16"]},
                           "proxyMode": "ipvs", "services": {"cidrBlocks": ["10.240.16.0/20"]}},
        "exposeStrategy": "NodePort", "humanReadableName": name, "version": "1.36.0",
    }
    if audit is not None:
        spec["auditLogging"] = copy.deepcopy(audit)
    return {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "metadata": {"name": name}, "spec": spec}


def kkp_seed() -> dict[str, Any]:
    return {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed", "metadata": {"name": "kubermatic",
                                                                               "namespace": "kubermatic"},
            "spec": {"country": "DE", "kubeconfig": {"name": "kubeconfig-seed", "namespace": "kubermatic"},
                     "datacenters": {f"kkp-{dc}": {"country": "DE", "location": dc, "spec": {"aws": {"region": "x"},
                                                                                            **spec}}
                                     for dc, (spec, _, _) in DATACENTERS.items()}}}


def kkp_pod(ns: str, fixture: str, with_sidecar: bool) -> dict[str, Any]:
    """An apiserver Pod from KKP's rendered Deployment; with KKP's own audit sidecar and policy flag if asked."""
    template = copy.deepcopy(KKP_DEPLOYMENTS[fixture]["spec"]["template"])
    name = f"apiserver-{sorted(KKP_DEPLOYMENTS).index(fixture)}"
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": name, "namespace": ns},
           "spec": template["spec"]}
    if with_sidecar:
        api = next(c for c in pod["spec"]["containers"] if c["name"] == "apiserver")
        api["args"] += ["--audit-policy-file", "/etc/kubernetes/audit/policy.yaml"]
        pod["spec"]["containers"].append({
            "name": "audit-logs", "image": KKP_SIDECAR_IMAGE, "args": ["-c", "/etc/fluent-bit/fluent-bit.conf"],
            "volumeMounts": [{"name": "audit-log", "mountPath": "/var/log/kubernetes/audit"},
                             {"name": "fluent-bit", "mountPath": "/etc/fluent-bit", "readOnly": True}]})
        pod["spec"]["volumes"].append({"name": "fluent-bit", "secret": {"secretName": "audit-logs-fluentbit"}})
    return pod


def _get(plane: ControlPlane, *args: str) -> dict[str, Any] | None:
    result = plane.kubectl("get", *args, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def _sa_kubeconfig(plane: ControlPlane, work: Path, account: str) -> Path:
    token = plane.kubectl("create", "token", account, "-n", "audit-webhook", "--duration=2h").stdout.strip()
    path = work / f"{account}-kubeconfig"
    admin = yaml.safe_load(plane.kubeconfig.read_text())
    admin["users"] = [{"name": "admin", "user": {"token": token}}]
    path.write_text(yaml.safe_dump(admin))
    return path


@dataclass
class KKPSeed:
    """The control plane and the two halves of audit-webhook running beside KKP's objects."""

    plane: ControlPlane
    server: WebhookProcess
    reconciler: ReconcilerProcess


@pytest.fixture(scope="module")
def kkp(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KKPSeed]:
    """A control plane with KKP's CRDs, and the server and reconciler of the kkp overlay, each as its
    own ServiceAccount."""
    work = tmp_path_factory.mktemp("kkp")
    plane = ControlPlane(work)
    hook = reconciler = None
    try:
        plane.start()
        plane.kubectl("apply", "--server-side", "-f", str(KKP / "crds"))
        plane.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusters.kubermatic.k8c.io",
                      "crd/seeds.kubermatic.k8c.io")
        rendered = list(yaml.safe_load_all(plane.kubectl("kustomize", str(ROOT / "deploy/overlays/kkp")).stdout))
        plane.apply(*[d for d in rendered if d["kind"] in RBAC_KINDS])
        plane.kubectl("create", "namespace", "kubermatic")
        cert_dir = work / "webhook-certs"
        ensure_certs(cert_dir, ServiceName())
        hook = WebhookProcess(plane, cert_dir, kubeconfig=_sa_kubeconfig(plane, work, "audit-webhook"), extra=(
            "--mode", "kkp", "--namespace", "audit-webhook"))
        plane.apply(*webhook_configurations(hook.port))
        hook.start()
        reconciler = ReconcilerProcess(plane, _sa_kubeconfig(plane, work, "audit-webhook-reconciler"), extra=(
            "--mode", "kkp", "--namespace", "audit-webhook"))  # the report follows watch events, no sweep
        reconciler.start()
        # Admissions go through once the webhook has written its CA into both configurations.
        for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
            bundles = eventually(lambda kind=kind: all(w.get("clientConfig", {}).get("caBundle") for w in
                                                  _get(plane, kind, "audit-webhook")["webhooks"]), timeout=60)
            assert bundles, f"{kind} never got the webhook's caBundle"
        yield KKPSeed(plane, hook, reconciler)
    finally:
        for process in (reconciler, hook):
            if process is not None:
                process.stop()
        plane.stop()


def test_kkp_objects_are_accepted_injected_and_never_written(kkp: KKPSeed):
    plane, hook = kkp.plane, kkp.server
    plane.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": DC_SECRET, "namespace": "kubermatic"},
                 "stringData": {"webhook.yaml": KUBECONFIG}})
    plane.apply(kkp_seed())  # through our validating webhook

    kkp_owned: dict[tuple[str, str, str], str] = {}
    for dc, (_, audit_or_none, webhook) in DATACENTERS.items():
        audit = audit_or_none or {}
        name = f"kkp{dc.replace('-', '')}"
        ns = f"cluster-{name}"
        plane.kubectl("create", "namespace", ns)
        # As KKP's defaulting writes it, Seed-namespace Secret included: accepted.
        plane.apply(kkp_cluster(name, f"kkp-{dc}", audit_or_none))
        # What KKP's controllers write, unlabelled: accepted, and never touched by us.
        preset = audit.get("policyPreset") or "metadata"
        objects = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audit-config", "namespace": ns},
                    "data": {"policy.yaml": (KKP / "audit-policies" / f"{preset}.yaml").read_text()}}]
        if audit.get("enabled"):
            objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": names.SECRET_FLUENTBIT,
                                                                              "namespace": ns},
                            "stringData": {"fluent-bit.conf": "[INPUT]\n    Name tail\n"}})
        if "webhookBackend" in audit:
            objects.append({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": DC_SECRET, "namespace": ns},
                            "stringData": {"webhook.yaml": KUBECONFIG}})
        for obj in objects:
            plane.apply(obj)
            created = _get(plane, obj["kind"].lower(), obj["metadata"]["name"], "-n", ns)
            kkp_owned[(obj["kind"].lower(), ns, obj["metadata"]["name"])] = created["metadata"]["resourceVersion"]

        for fixture in KKP_DEPLOYMENTS:
            for with_sidecar in (False, True):
                _check_injected(plane, ns, fixture, with_sidecar, webhook=webhook, enabled=bool(audit.get("enabled")))

    # Several reconcile passes later, no KKP object was written, relabelled or deleted.
    time.sleep(2)
    for (kind, ns, name), version in kkp_owned.items():
        now = _get(plane, kind, name, "-n", ns)
        assert now is not None, (kind, ns, name)
        assert now["metadata"]["resourceVersion"] == version, (kind, ns, name)
        assert "app.kubernetes.io/managed-by" not in (now["metadata"].get("labels") or {})
    # Where KKP does not copy the datacenter's webhook Secret (no enforcement), the reconciler does: ours.
    copy = eventually(lambda: _get(plane, "secret", DC_SECRET, "-n", "cluster-kkpwebhookonly"))
    assert copy["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "audit-webhook"
    # The reconciler still did its own part: the namespace lists of the webhook configuration.
    config = _get(plane, "mutatingwebhookconfiguration", "audit-webhook")
    audited = next(w for w in config["webhooks"] if w["name"].startswith("inject."))
    wanted = {f"cluster-kkp{dc.replace('-', '')}" for dc in DATACENTERS}
    assert set(audited["namespaceSelector"]["matchExpressions"][0]["values"]) == wanted
    # An apply of the manifests (a Helm upgrade or rollback, `kubectl apply -k`) writes the lists back
    # to the shipped placeholder. The reconciler watches its configurations and puts them back at
    # once, not at its next resync (600 s here).
    shipped = next(d for d in yaml.safe_load_all((ROOT / "deploy/overlays/kkp/webhooks.yaml").read_text())
                   if d and d["kind"] == "MutatingWebhookConfiguration")
    placeholder = next(w for w in shipped["webhooks"] if w["name"].startswith("inject."))["namespaceSelector"]
    assert placeholder != audited["namespaceSelector"]
    index = next(i for i, w in enumerate(config["webhooks"]) if w["name"].startswith("inject."))
    plane.kubectl("patch", "mutatingwebhookconfiguration", "audit-webhook", "--type=json", "-p", json.dumps(
        [{"op": "replace", "path": f"/webhooks/{index}/namespaceSelector", "value": placeholder}]))

    def inject_namespaces() -> set[str]:
        hooks = _get(plane, "mutatingwebhookconfiguration", "audit-webhook")["webhooks"]
        return set(next(w for w in hooks if w["name"].startswith("inject."))["namespaceSelector"]
                   ["matchExpressions"][0]["values"])

    assert eventually(lambda: inject_namespaces() == wanted), inject_namespaces()
    # The reconciler's metrics report each Cluster as `report` does: on or off, and with KKP's objects
    # and injected Pods in place, no drift.
    expected = {f"kkp{dc.replace('-', '')}": "on" if audit else "off" for dc, (_, audit, _) in DATACENTERS.items()}
    assert eventually(lambda: _cluster_metrics(kkp.reconciler) == (expected, {})), _cluster_metrics(kkp.reconciler)
    # Each ServiceAccount may do all it needs: no request of the server or the reconciler was refused.
    for log in (hook.log_path.read_text(), kkp.reconciler.log_path.read_text()):
        assert not re.search(r"(API error|HTTP) 403|is forbidden", log), re.findall(r".*403.*forbidden.*", log)[:3]


def _cluster_metrics(reconciler: ReconcilerProcess) -> tuple[dict[str, str], dict[tuple[str, str], float]]:
    """Each Cluster's audit state, and its drift by kind, from the reconciler's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{reconciler.port}/metrics", timeout=5) as r:
        found = families(r.read().decode())
    states = {s.labels["cluster"]: s.labels["state"] for s in found["audit_webhook_cluster_audit_state"].samples
              if s.value == 1}
    drift = {(s.labels["cluster"], s.labels["kind"]): s.value for s in found["audit_webhook_cluster_drift"].samples}
    return states, drift


def _check_injected(plane: ControlPlane, ns: str, fixture: str, with_sidecar: bool, *, webhook: bool,
                    enabled: bool) -> None:
    pod = kkp_pod(ns, fixture, with_sidecar)
    pod["metadata"]["name"] += "-sidecar" if with_sidecar else ""
    created = eventually(lambda: _created_when_injected(plane, pod))
    spec, original = created["spec"], pod["spec"]
    # Every container, volume and foreign flag of KKP's is kept, in order.
    assert [c["name"] for c in spec["containers"]][: len(original["containers"])] == [
        c["name"] for c in original["containers"]]
    assert {v["name"] for v in original["volumes"]} <= {v["name"] for v in spec["volumes"]}
    api = next(c for c in spec["containers"] if c["name"] == "apiserver")
    kkp_api = next(c for c in original["containers"] if c["name"] == "apiserver")
    foreign = [a for a in kkp_api["args"] if not a.startswith("--audit")]
    assert [a for a in api["args"] if a in foreign] == foreign
    assert ("--audit-webhook-config-file=" + names.WEBHOOK_CONFIG_PATH in api["args"]) is webhook
    sidecar = next((c for c in spec["containers"] if c["name"] == names.SIDECAR_CONTAINER), None)
    assert (sidecar is not None) is (enabled or with_sidecar)
    if with_sidecar:
        assert sidecar["image"] == KKP_SIDECAR_IMAGE  # KKP's registry and tag are kept
    # Idempotent: the admitted Pod, admitted again, comes back unchanged.
    again = copy.deepcopy(created)
    again["metadata"] = {k: v for k, v in created["metadata"].items()
                         if k in ("labels", "annotations", "namespace")} | {"name": pod["metadata"]["name"] + "-again"}
    replay = plane.create_json(again, "--dry-run=server")
    assert replay["spec"]["containers"] == spec["containers"]
    assert replay["spec"]["volumes"] == spec["volumes"]


def _created_when_injected(plane: ControlPlane, pod: dict[str, Any]) -> dict[str, Any] | None:
    """Create the Pod once the webhook's cache knows its cluster (a dry run shows the settings hash)."""
    trial = plane.create_json(pod, "--dry-run=server")
    if names.SETTINGS_HASH_ANNOTATION not in (trial["metadata"].get("annotations") or {}):
        return None
    return plane.create_json(pod)


def test_a_cluster_cannot_move_its_status_into_another_clusters_namespace(kkp: KKPSeed):
    """status.namespaceName is written through the status subresource; the webhook sees that too."""
    plane = kkp.plane
    plane.apply(kkp_cluster("kkpholder", "kkp-plain", {"enabled": True}))
    plane.apply(kkp_cluster("kkpthief", "kkp-plain", None))
    moved = plane.kubectl("patch", "cluster", "kkpthief", "--subresource=status", "--type=merge", "-p",
                          json.dumps({"status": {"namespaceName": "cluster-kkpholder"}}), check=False)
    assert moved.returncode != 0
    assert 'status.namespaceName: Forbidden: namespace "cluster-kkpholder" belongs to Cluster "kkpholder"' \
        in moved.stderr
    other = plane.kubectl("patch", "cluster", "kkpthief", "--subresource=status", "--type=merge", "-p",
                          json.dumps({"status": {"namespaceName": "cluster-kkpthief"}}), check=False)
    assert other.returncode == 0, other.stderr


def test_an_injected_apiserver_pod_keeps_its_audit_setup(kkp: KKPSeed):
    """After admission, neither a new sidecar image nor an ephemeral container on the audit log."""
    plane = kkp.plane
    ns = "cluster-kkpplain"  # audited, from the first test; its Pods exist
    pod = next(p for p in json.loads(plane.kubectl("get", "pods", "-n", ns, "-o", "json").stdout)["items"]
               if any(c["name"] == "audit-logs" for c in p["spec"]["containers"]))
    name = pod["metadata"]["name"]
    swapped = plane.kubectl("set", "image", f"pod/{name}", "-n", ns, "audit-logs=evil.example/fluent-bit:1",
                            check=False)
    assert swapped.returncode != 0
    assert 'container "audit-logs" of an audited apiserver Pod cannot change after admission' in swapped.stderr
    debug = {"spec": {"ephemeralContainers": [{"name": "dbg", "image": "busybox", "volumeMounts": [
        {"name": "audit-log", "mountPath": "/log"}]}]}}
    mounted = plane.kubectl("patch", "pod", name, "-n", ns, "--subresource=ephemeralcontainers",
                            "--type=strategic", "-p", json.dumps(debug), check=False)
    assert mounted.returncode != 0 and 'ephemeral container "dbg" may not mount audit-log' in mounted.stderr
    plane.kubectl("label", "pod", name, "-n", ns, "checked=yes")  # labels are none of our business


# (ServiceAccount, verb, resource, namespace or "" for all, allowed): what `kubectl auth can-i` must say.
# docs/security.md lists the same rights in words.
CAN_I = [
    # The admission server reads; it writes only its TLS Secret and its webhook configurations.
    (SERVER_SA, "list", "clusters.kubermatic.k8c.io", "", True),
    (SERVER_SA, "watch", "seeds.kubermatic.k8c.io", "kubermatic", True),
    (SERVER_SA, "get", "secrets", "cluster-kkpplain", True),
    (SERVER_SA, "patch", "mutatingwebhookconfigurations/audit-webhook", "", True),
    (SERVER_SA, "update", "secrets/audit-webhook-tls", "audit-webhook", True),
    (SERVER_SA, "create", "secrets", "audit-webhook", False),  # no token Secret for the reconciler's account
    (SERVER_SA, "list", "secrets", "", False),
    (SERVER_SA, "list", "secrets", "cluster-kkpplain", False),
    (SERVER_SA, "watch", "secrets", "kube-system", False),
    (SERVER_SA, "create", "secrets", "kube-system", False),
    (SERVER_SA, "create", "secrets", "cluster-kkpplain", False),
    (SERVER_SA, "update", "secrets/kkp-ca", "cluster-kkpplain", False),
    (SERVER_SA, "patch", "deployments", "kube-system", False),
    (SERVER_SA, "delete", "configmaps", "kube-system", False),
    (SERVER_SA, "create", "networkpolicies", "cluster-kkpplain", False),
    (SERVER_SA, "patch", "mutatingwebhookconfigurations/someone-else", "", False),
    (SERVER_SA, "update", "leases/audit-webhook-reconciler", "audit-webhook", False),
    (SERVER_SA, "create", "events", "default", False),
    (SERVER_SA, "update", "clusters.kubermatic.k8c.io", "", False),
    # The reconciler writes what it manages, by name; it lists no Secret and touches no KKP object kind.
    (RECONCILER_SA, "get", "secrets", "cluster-kkpplain", True),
    (RECONCILER_SA, "create", "networkpolicies", "cluster-kkpplain", True),
    (RECONCILER_SA, "patch", "deployments", "cluster-kkpplain", False),  # KKP's: only standalone rolls it
    (RECONCILER_SA, "create", "events", "default", True),
    (RECONCILER_SA, "update", "leases/audit-webhook-reconciler", "audit-webhook", True),
    # It watches the objects of the names it keeps or reports on, namespaces and apiserver Pods; on a KKP
    # seed no Deployment.
    (RECONCILER_SA, "watch", "networkpolicies/audit-logging-egress", "", True),
    (RECONCILER_SA, "list", "networkpolicies", "", False),
    (RECONCILER_SA, "watch", "namespaces", "", True),
    (RECONCILER_SA, "list", "secrets/audit-logs-fluentbit", "", True),  # KKP's: watched by name for the report
    (RECONCILER_SA, "watch", "configmaps/audit-config", "", True),
    (RECONCILER_SA, "list", "secrets", "", False),
    (RECONCILER_SA, "list", "secrets", "cluster-kkpplain", False),
    (RECONCILER_SA, "watch", "secrets", "", False),
    (RECONCILER_SA, "list", "configmaps", "", False),
    (RECONCILER_SA, "patch", "secrets", "cluster-kkpplain", False),
    (RECONCILER_SA, "update", "clusters.kubermatic.k8c.io", "", False),
    (RECONCILER_SA, "list", "pods", "cluster-kkpplain", True),  # apiserver Pods, by label, for /metrics
    (RECONCILER_SA, "list", "pods", "", True),  # RBAC cannot hold a list to a namespace KKP creates later
    (RECONCILER_SA, "watch", "pods", "", True),  # by label, their metadata: which namespace's report to redo
    (RECONCILER_SA, "create", "pods", "cluster-kkpplain", False),
    (RECONCILER_SA, "delete", "pods", "cluster-kkpplain", False),
    (RECONCILER_SA, "delete", "namespaces", "", False),
    (RECONCILER_SA, "create", "rolebindings", "cluster-kkpplain", False),
    (RECONCILER_SA, "patch", "mutatingwebhookconfigurations/someone-else", "", False),
    (RECONCILER_SA, "update", "leases/kube-controller-manager", "kube-system", False),
]


def test_each_identity_has_exactly_the_rights_the_docs_list(kkp: KKPSeed):
    wrong = []
    for user, verb, resource, ns, allowed in CAN_I:
        where = ("-n", ns) if ns else ("-A",)
        answer = kkp.plane.kubectl("auth", "can-i", verb, resource, *where, f"--as={user}", check=False)
        if (answer.stdout.strip() == "yes") is not allowed:
            wrong.append((user.rsplit(":", 1)[1], verb, resource, ns or "*", answer.stdout.strip()))
    assert wrong == []


def _as_reconciler(plane: ControlPlane, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return plane.kubectl(*args, f"--as={RECONCILER_SA}", stdin=stdin, check=False)


def egress_policy(namespace: str, spec: dict[str, Any]) -> str:
    return json.dumps({"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                       "metadata": {"name": "audit-logging-egress", "namespace": namespace,
                                    "labels": {"app.kubernetes.io/managed-by": "audit-webhook"}},
                       "spec": {"podSelector": {"matchLabels": {"app": "apiserver"}}, **spec}})


_PORT = [{"protocol": "TCP", "port": 80}]
# What a compromised reconciler might try to open through the one NetworkPolicy it may write.
FORBIDDEN_EGRESS = {
    "everywhere": {"policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": _PORT}]},
    "on every port": {"policyTypes": ["Egress"], "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.7/32"}}]}]},
    "to metadata": {"policyTypes": ["Egress"],
                    "egress": [{"to": [{"ipBlock": {"cidr": "169.254.169.254/32"}}], "ports": _PORT}]},
    "to kube-system": {"policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {"matchLabels": {
        "kubernetes.io/metadata.name": "kube-system"}}}], "ports": _PORT}]},
    "to another control plane": {"policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {
        "matchLabels": {"kubernetes.io/metadata.name": "cluster-other"}}}], "ports": _PORT}]},
    "to every namespace": {"policyTypes": ["Egress"], "egress": [{"to": [{"namespaceSelector": {}}], "ports": _PORT}]},
    "with ingress": {"policyTypes": ["Ingress", "Egress"], "ingress": [{}],
                     "egress": [{"to": [{"ipBlock": {"cidr": "10.0.0.7/32"}}], "ports": _PORT}]},
}


def _refused_by(result: subprocess.CompletedProcess[str], policy: str) -> bool:
    return result.returncode != 0 and f"ValidatingAdmissionPolicy '{policy}'" in result.stderr


def test_the_reconcilers_cluster_wide_write_rights_are_confined_to_what_it_owns(kkp: KKPSeed):
    """RBAC cannot name KKP's cluster namespaces; the ValidatingAdmissionPolicy of deploy/ does."""
    plane = kkp.plane
    ns = "cluster-kkpplain"
    plane.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kkp-ca", "namespace": ns},
                 "stringData": {"ca.crt": "KKP's CA"}})
    ours = {"app.kubernetes.io/managed-by": "audit-webhook"}
    for namespace in ("kube-system", ns):
        plane.kubectl("create", "deployment", "apiserver", "--image=registry.k8s.io/x:1", "-n", namespace)
    annotate = json.dumps({"spec": {"template": {"metadata": {"annotations": {"x": "y"}}}}})

    def obj(kind: str, name: str, namespace: str, labels: dict[str, str] | None = None, **extra: Any) -> str:
        meta = {"name": name, "namespace": namespace, "labels": labels or {}, **extra.pop("meta", {})}
        body = {"Secret": {"apiVersion": "v1", "stringData": {"k": "v"}},
                "NetworkPolicy": {"apiVersion": "networking.k8s.io/v1",
                                  "spec": {"podSelector": {"matchLabels": {"app": "apiserver"}}}}}[kind]
        return json.dumps({**body, "kind": kind, "metadata": meta, **extra})

    # On a KKP seed the apiserver Deployment is KKP's: the reconciler may not even patch it.
    denied = _as_reconciler(plane, "patch", "deployment", "apiserver", "-n", ns, "--type=merge", "-p", annotate)
    assert denied.returncode != 0 and 'cannot get resource "deployments"' in denied.stderr
    refused = {
        "a Secret in kube-system": _as_reconciler(plane, "create", "-f", "-", stdin=obj("Secret", "x", "kube-system",
                                                                                       ours)),
        "a Secret beside the webhook's": _as_reconciler(plane, "create", "-f", "-",
                                                        stdin=obj("Secret", "x", "audit-webhook", ours)),
        "a ConfigMap of kube-system deleted": _as_reconciler(plane, "delete", "configmap", "extension-apiserver-"
                                                             "authentication", "-n", "kube-system"),
        "an unlabelled Secret of its own": _as_reconciler(plane, "create", "-f", "-", stdin=obj("Secret", "y", ns)),
        "KKP's Secret replaced": _as_reconciler(plane, "replace", "-f", "-", stdin=obj("Secret", "kkp-ca", ns, ours)),
        "KKP's Secret deleted": _as_reconciler(plane, "delete", "secret", "kkp-ca", "-n", ns),
        "a finalizer": _as_reconciler(plane, "create", "-f", "-", stdin=obj(
            "Secret", "z", ns, ours, meta={"finalizers": ["example.com/block"]})),
        "an owner that is not a Cluster": _as_reconciler(plane, "create", "-f", "-", stdin=obj(
            "Secret", "z", ns, ours, meta={"ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap",
                                                               "name": "x", "uid": "0000-1"}]})),
        "a NetworkPolicy of another name": _as_reconciler(plane, "create", "-f", "-", stdin=obj(
            "NetworkPolicy", "allow-all", ns, ours)),
        "a service account token": _as_reconciler(plane, "create", "-f", "-", stdin=obj(
            "Secret", "minted", ns, ours, type="kubernetes.io/service-account-token",
            meta={"annotations": {"kubernetes.io/service-account.name": "etcd-launcher"}})),
        "an Event about a Node": _as_reconciler(plane, "create", "-f", "-", stdin=json.dumps({
            "apiVersion": "v1", "kind": "Event", "metadata": {"name": "x", "namespace": "default"},
            "involvedObject": {"kind": "Node", "name": "node-1"}, "reason": "Rebooted",
            "source": {"component": "audit-webhook"}})),
        **{f"egress {what}": _as_reconciler(plane, "create", "-f", "-", stdin=egress_policy(ns, spec))
           for what, spec in FORBIDDEN_EGRESS.items()},
    }
    for what, result in refused.items():
        assert _refused_by(result, "audit-webhook-reconciler-writes"), (what, result.stderr)

    # With the standalone overlay's right to roll Deployments, only the pod-template annotations move.
    plane.kubectl("apply", "-f", str(ROOT / "deploy/overlays/standalone/rollouts.yaml"))
    try:
        changes = {
            "a Deployment of kube-system": ("apiserver", "kube-system", "merge", annotate),
            "the apiserver's containers": ("apiserver", ns, "json", json.dumps([
                {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": "evil:1"}])),
            "paused": ("apiserver", ns, "merge", json.dumps({"spec": {"paused": True}})),
            "a strategy": ("apiserver", ns, "merge", json.dumps({"spec": {"minReadySeconds": 60}})),
            "a finalizer": ("apiserver", ns, "merge", json.dumps({"metadata": {"finalizers": ["x.example/y"]}})),
            "an owner": ("apiserver", ns, "merge", json.dumps({"metadata": {"ownerReferences": [
                {"apiVersion": "v1", "kind": "ConfigMap", "name": "x", "uid": "0000-1"}]}})),
            "pod labels": ("apiserver", ns, "merge", json.dumps({"spec": {"template": {"metadata": {
                "labels": {"extra": "x"}}}}})),
            # Of the Deployment's own annotations only the two records of the upgrade (names.py).
            "another annotation of its own": ("apiserver", ns, "merge", json.dumps({"metadata": {"annotations": {
                "deployment.kubernetes.io/revision": "99"}}})),
            "a record beside another annotation": ("apiserver", ns, "merge", json.dumps({"metadata": {"annotations": {
                names.MIGRATED_HASH_ANNOTATION: "0123456789abcdef", "example.com/x": "y"}}})),
        }
        for what, (name, namespace, kind, patch) in changes.items():
            result = _as_reconciler(plane, "patch", "deployment", name, "-n", namespace, f"--type={kind}", "-p", patch)
            assert _refused_by(result, "audit-webhook-reconciler-writes"), (what, result.stderr)
        rolled = _as_reconciler(plane, "patch", "deployment", "apiserver", "-n", ns, "--type=merge", "-p", annotate)
        assert rolled.returncode == 0, rolled.stderr
        recorded = _as_reconciler(plane, "patch", "deployment", "apiserver", "-n", ns, "--type=merge", "-p",
                                  json.dumps({"metadata": {"annotations": {
                                      names.MIGRATED_HASH_ANNOTATION: "0123456789abcdef",
                                      names.MOUNTED_BASELINE_ANNOTATION: "fedcba9876543210"}}}))
        assert recorded.returncode == 0, recorded.stderr
    finally:
        plane.kubectl("delete", "-f", str(ROOT / "deploy/overlays/standalone/rollouts.yaml"))
    made = _as_reconciler(plane, "create", "-f", "-", stdin=obj("Secret", "audit-test", ns, ours))
    assert made.returncode == 0, made.stderr
    assert _as_reconciler(plane, "delete", "secret", "audit-test", "-n", ns).returncode == 0
    # What the reconciler itself writes passes: single addresses, an allowed namespace, kube-dns.
    settings = prepare(kkp_cluster("kkpplain", "kkp-plain", {"enabled": True, "sidecar": {"config": {"outputs": [
        {"Name": "forward", "Match": "*", "Host": "10.0.0.7", "Port": "24224"},
        {"Name": "forward", "Match": "*", "Host": "fd00:20::7", "Port": "24224"},
        {"Name": "http", "Match": "*", "Host": "sink.logging.svc", "Port": "8080"}]}}}), None,
        Options.default()).settings
    allow = OperatorConfig.model_validate({"egress": {"cidrs": ["10.0.0.0/8", "fd00::/8"], "namespaces": ["logging"]}})
    own = network_policy(settings, [classify(d, ns) for d in destinations(settings, None)],
                         {("logging", "sink"): {"selector": {"app": "sink"}, "ports": {}}}, allow)
    assert len(own["spec"]["egress"]) == 4  # two addresses, the namespace, DNS
    written = _as_reconciler(plane, "create", "-f", "-", stdin=json.dumps(own))
    assert written.returncode == 0, written.stderr
    assert _as_reconciler(plane, "delete", "networkpolicy", "audit-logging-egress", "-n", ns).returncode == 0
    assert _get(plane, "secret", "kkp-ca", "-n", ns)["data"]["ca.crt"]


def test_each_identity_may_change_one_field_of_its_webhook_configurations(kkp: KKPSeed):
    """The server its caBundle, the reconciler its namespace lists; neither may aim, widen or open them."""
    plane = kkp.plane

    def patch(user: str, kind: str, ops: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
        return plane.kubectl("patch", kind, "audit-webhook", "--type=json", "-p", json.dumps(ops), "--dry-run=server",
                             f"--as={user}", check=False)

    everything = [{"op": "replace", "path": "/webhooks/0/rules", "value": [{
        "apiGroups": ["*"], "apiVersions": ["*"], "resources": ["*/*"], "operations": ["*"], "scope": "*"}]}]
    elsewhere = [{"op": "replace", "path": "/webhooks/0/clientConfig", "value": {"url": "https://attacker.example/x"}}]
    fail_open = [{"op": "replace", "path": "/webhooks/0/failurePolicy", "value": "Ignore"}]
    selector = [{"op": "replace", "path": "/webhooks/0/namespaceSelector", "value": {"matchLabels": {"x": "y"}}}]
    owned = [{"op": "add", "path": "/metadata/ownerReferences", "value": [
        {"apiVersion": "v1", "kind": "Namespace", "name": "gone", "uid": "00000000-0000-0000-0000-000000000001"}]}]
    held = [{"op": "add", "path": "/metadata/finalizers", "value": ["example.com/block"]}]
    bundle = [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": "Zm9v"}]
    policy = "audit-webhook-configuration-writes"
    for kind in ("mutatingwebhookconfiguration", "validatingwebhookconfiguration"):
        for user, ops in ((SERVER_SA, everything), (SERVER_SA, elsewhere), (SERVER_SA, fail_open),
                          (SERVER_SA, selector), (RECONCILER_SA, everything), (RECONCILER_SA, fail_open),
                          (RECONCILER_SA, bundle), (SERVER_SA, owned), (RECONCILER_SA, owned), (SERVER_SA, held),
                          (RECONCILER_SA, held)):
            assert _refused_by(patch(user, kind, ops), policy), (kind, user, ops)
        assert patch(SERVER_SA, kind, bundle).returncode == 0
        assert patch(RECONCILER_SA, kind, selector).returncode == 0
    never = [{"op": "replace", "path": "/webhooks/0/reinvocationPolicy", "value": "Never"}]
    assert _refused_by(patch(SERVER_SA, "mutatingwebhookconfiguration", never), policy)


def test_labels_a_tenant_patches_onto_kkps_objects_never_get_them_deleted(kkp: KKPSeed):
    """Someone who may only patch labels dresses KKP's CA Secret and its default-deny policy up as ours."""
    plane = kkp.plane
    ns = "cluster-kkpplain"
    uid = _get(plane, "cluster", "kkpplain")["metadata"]["uid"]
    forged = {"app.kubernetes.io/managed-by": "audit-webhook", "audit-webhook.kubermatic.k8c.io/cluster": "kkpplain"}
    owner = [{"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "name": "kkpplain", "uid": uid}]
    plane.apply({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kkp-ca", "namespace": ns},
                 "stringData": {"ca.crt": "KKP's CA"}},
                {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
                 "metadata": {"name": "default-deny", "namespace": ns},
                 "spec": {"podSelector": {}, "policyTypes": ["Ingress"]}})
    for kind, name in (("secret", "kkp-ca"), ("networkpolicy", "default-deny")):
        plane.kubectl("patch", kind, name, "-n", ns, "--type=merge", "-p",
                      json.dumps({"metadata": {"labels": forged, "ownerReferences": owner}}))
    versions = {k: _get(plane, k, n, "-n", ns)["metadata"]["resourceVersion"]
                for k, n in (("secret", "kkp-ca"), ("networkpolicy", "default-deny"))}
    time.sleep(2)  # several reconcile passes
    for kind, version in versions.items():
        name = "kkp-ca" if kind == "secret" else "default-deny"
        now = _get(plane, kind, name, "-n", ns)
        assert now is not None and now["metadata"]["resourceVersion"] == version, (kind, name)


def test_apply_and_delete_of_the_kkp_overlay_keep_kkps_crds_clusters_and_seeds(
        kkp: KKPSeed):
    plane, hook = kkp.plane, kkp.server
    plane.apply(kkp_cluster("kkpkeep", "kkp-plain", None))
    schema_before = _get(plane, "crd", "clusters.kubermatic.k8c.io")["spec"]["versions"]
    kkp.reconciler.stop()
    hook.stop()
    plane.kubectl("delete", "mutatingwebhookconfiguration,validatingwebhookconfiguration", "audit-webhook")
    overlay = str(ROOT / "deploy/overlays/kkp")
    plane.kubectl("apply", "-k", overlay)
    assert _get(plane, "crd", "clusters.kubermatic.k8c.io")["spec"]["versions"] == schema_before
    # Uninstall in the documented order: webhook configurations first, then the overlay.
    plane.kubectl("delete", "mutatingwebhookconfiguration,validatingwebhookconfiguration", "audit-webhook")
    plane.kubectl("delete", "-k", overlay, "--ignore-not-found", "--wait=false")
    for crd in ("clusters.kubermatic.k8c.io", "seeds.kubermatic.k8c.io"):
        assert _get(plane, "crd", crd) is not None
    assert _get(plane, "crd", "clusters.kubermatic.k8c.io")["spec"]["versions"] == schema_before
    assert _get(plane, "cluster", "kkpkeep") is not None
    assert _get(plane, "seed", "kubermatic", "-n", "kubermatic") is not None
