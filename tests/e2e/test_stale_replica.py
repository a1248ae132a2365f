"""Two webhook replicas that disagree: one admits an apiserver Pod with the settings of before, and
the reconciler finds that Pod by its settings hash and rolls its Deployment.

Real: etcd, kube-apiserver (which calls the webhooks), two `serve` processes sharing one CA, and
`audit-webhook reconcile` (standalone). Simulated, and how:
- the lagging replica: a `serve --source DIR` process answering from a snapshot of the Cluster and
  Seed taken before the change, as a replica whose watch has not delivered the change yet would;
- which replica a Pod reaches (a Service's choice in a seed): the test points the mutating webhook
  configuration at the lagging replica for the one Pod, then back;
- the ReplicaSet controller (no kube-controller-manager runs here): the test creates the Pod of the
  rolled template itself, through kube-apiserver and the up-to-date replica.
"""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.cluster import ControlPlane, ReconcilerProcess, WebhookProcess, eventually
from tests.e2e.test_kube import kkp_cluster, namespace
from webhook.core import names

NS = "cluster-e2estale"
SEED = {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed",
        "metadata": {"name": "e2e-stale-seed", "namespace": "kubermatic"},
        "spec": {"datacenters": {"e2e-stale-dc": {"spec": {}}}}}
DEPLOYMENT = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "apiserver", "namespace": NS},
              "spec": {"replicas": 0, "selector": {"matchLabels": {"app": "apiserver"}},
                       "template": {"metadata": {"labels": {"app": "apiserver"}},
                                    "spec": {"containers": [{"name": "apiserver", "image": "kube-apiserver"}]}}}}


def cluster(preset: str) -> dict[str, Any]:
    return kkp_cluster("e2estale", dc="e2e-stale-dc", audit={"enabled": True, "policyPreset": preset})


@pytest.fixture(scope="module")
def reconciler(plane: ControlPlane, webhook: WebhookProcess) -> Iterator[ReconcilerProcess]:
    namespace(plane, "audit-webhook")
    proc = ReconcilerProcess(plane, label="stale-reconciler", extra=("--mode", "standalone"))
    proc.start()
    yield proc
    assert proc.stop() == 0


def template(plane: ControlPlane) -> dict[str, str]:
    deploy = json.loads(plane.kubectl("get", "deployment", "apiserver", "-n", NS, "-o", "json").stdout)
    return deploy["spec"]["template"]["metadata"].get("annotations") or {}


def admitted_hash(plane: ControlPlane, pod: dict[str, Any], *extra: str) -> str | None:
    created = plane.create_json(pod, *extra)
    return (created["metadata"].get("annotations") or {}).get(names.SETTINGS_HASH_ANNOTATION)


def pod(name: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": NS, "labels": {"app": "apiserver"},
                         "annotations": annotations or {}},
            "spec": {"containers": [{"name": "apiserver", "image": "kube-apiserver"}]}}


def point_mutating_webhooks_at(plane: ControlPlane, port: int) -> None:
    config = json.loads(plane.kubectl("get", "mutatingwebhookconfiguration", "audit-webhook", "-o", "json").stdout)
    ops = [{"op": "replace", "path": f"/webhooks/{i}/clientConfig/url",
            "value": hook["clientConfig"]["url"].rsplit(":", 1)[0] + f":{port}/" +
            hook["clientConfig"]["url"].rsplit(":", 1)[1].split("/", 1)[1]}
           for i, hook in enumerate(config["webhooks"])]
    plane.kubectl("patch", "mutatingwebhookconfiguration", "audit-webhook", "--type=json", "-p", json.dumps(ops))


def stale_pod_rollouts(reconciler: ReconcilerProcess) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{reconciler.port}/metrics", timeout=5) as r:
        metrics = r.read().decode()
    line = next(x for x in metrics.splitlines() if x.startswith("audit_webhook_stale_pod_rollouts_total "))
    return float(line.split()[1])


def test_a_pod_admitted_with_stale_settings_rolls_its_deployment(plane: ControlPlane, webhook: WebhookProcess,
                                                                reconciler: ReconcilerProcess):
    namespace(plane, "kubermatic")
    namespace(plane, NS)
    plane.apply(SEED, DEPLOYMENT, cluster("minimal"))
    before = eventually(lambda: template(plane).get(names.SETTINGS_HASH_ANNOTATION))
    assert before, "the reconciler did not roll the new cluster's Deployment"
    # The up-to-date replica injects new Pods once the namespace's webhooks fail closed.
    assert eventually(lambda: admitted_hash(plane, pod("probe"), "--dry-run=server") == before)

    # The lagging replica: the Cluster and Seed as they were before the change.
    snapshot = plane.work / "stale-snapshot"
    snapshot.mkdir()
    for kind, name, ns in (("cluster", "e2estale", ()), ("seed", "e2e-stale-seed", ("-n", "kubermatic"))):
        (snapshot / f"{kind}.yaml").write_text(plane.kubectl("get", kind, name, *ns, "-o", "yaml").stdout)
    lagging = WebhookProcess(plane, webhook.cert_dir, label="lagging-replica", extra=("--source", str(snapshot)))
    lagging.start()
    try:
        plane.apply(cluster("recommended"))
        current = eventually(lambda: (h := template(plane).get(names.SETTINGS_HASH_ANNOTATION)) != before and h)
        assert current, "the settings change did not roll the Deployment"
        assert stale_pod_rollouts(reconciler) == 0

        # kube-apiserver's call for one Pod lands on the lagging replica.
        point_mutating_webhooks_at(plane, lagging.port)
        try:
            assert eventually(lambda: admitted_hash(plane, pod("probe"), "--dry-run=server") == before)
            assert admitted_hash(plane, pod("apiserver-stale")) == before
        finally:
            point_mutating_webhooks_at(plane, webhook.port)
    finally:
        lagging.stop()

    # The reconciler finds it by its settings hash and rolls the Deployment once more.
    stale = json.loads(plane.kubectl("get", "pod", "apiserver-stale", "-n", NS, "-o", "json").stdout)
    rolled = eventually(lambda: template(plane).get(names.ROLLED_PODS_ANNOTATION))
    assert rolled == stale["metadata"]["creationTimestamp"]
    assert template(plane)[names.SETTINGS_HASH_ANNOTATION] == current  # the settings themselves are current
    assert stale_pod_rollouts(reconciler) == 1
    events = json.loads(plane.kubectl("get", "events", "-n", "default", "--field-selector",
                                      "involvedObject.name=e2estale", "-o", "json").stdout)["items"]
    assert any(e["reason"] == "ApiserverRolledOut" and "Pod apiserver-stale runs stale audit settings" in e["message"]
               for e in events)

    # The rollout's new Pod (as the ReplicaSet controller would create it) gets the current settings,
    # and the old one going away rolls nothing more.
    assert eventually(lambda: admitted_hash(plane, pod("probe"), "--dry-run=server") == current)
    assert admitted_hash(plane, pod("apiserver-new", template(plane))) == current
    plane.kubectl("delete", "pod", "apiserver-stale", "-n", NS, "--wait=false")
    time.sleep(2)  # the reconciler hears of both Pods
    assert stale_pod_rollouts(reconciler) == 1
    assert template(plane)[names.ROLLED_PODS_ANNOTATION] == rolled
