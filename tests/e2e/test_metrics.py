"""The /metrics pages of a running webhook and reconciler against the real API: they pass
`promtool check metrics`, they carry every series the alerts and the dashboard read, the promtool
unit tests' series use names and labels these pages really have, and each Cluster's `report` row
appears as metrics and goes with the Cluster."""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
import yaml

from tests.e2e.cluster import ControlPlane, ReconcilerProcess, WebhookProcess, eventually
from tests.e2e.test_kube import kkp_cluster, namespace, pod_in
from tests.monitoring import ALERT_TESTS, TARGET_LABELS, families, promtool, sampled_names, used_metric_names

NS = "cluster-e2emet"
# A sink the operator's (empty) egress allow-list does not cover: admitted, with a warning.
AUDIT_ON = {"enabled": True, "policyPreset": "minimal", "sidecar": {"config": {"outputs": [
    {"Name": "forward", "Match": "*", "Host": "10.0.0.9", "Port": "24224"}]}}}


@pytest.fixture(scope="module")
def reconciler(plane: ControlPlane, webhook: WebhookProcess) -> Iterator[ReconcilerProcess]:
    """`audit-webhook reconcile`, reporting each Cluster when its watches see a change: the sweep
    (every 6 hours by default) never comes in this test, so every series below follows an event."""
    namespace(plane, "audit-webhook")
    proc = ReconcilerProcess(plane, label="metrics-reconciler", extra=("--mode", "standalone"))
    proc.start()
    yield proc
    assert proc.stop() == 0


def webhook_page(hook: WebhookProcess) -> str:
    """The webhook's /metrics, on its HTTPS port behind the client pin, as kube-apiserver's identity."""
    ctx = hook.plane.client_context(hook.cert_dir / "ca.crt")
    with urllib.request.urlopen(f"https://127.0.0.1:{hook.port}/metrics", context=ctx, timeout=5) as r:
        return r.read().decode()


def reconciler_page(proc: ReconcilerProcess) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{proc.port}/metrics", timeout=5) as r:
        return r.read().decode()


def samples(page: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """The values of one series name on a page, by their sorted labels."""
    return {tuple(sorted(s.labels.items())): s.value for f in families(page).values() for s in f.samples
            if s.name == name}


def cluster_series(proc: ReconcilerProcess, cluster: str) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    page = reconciler_page(proc)
    return {name: {labels: v for labels, v in samples(page, name).items() if ("cluster", cluster) in labels}
            for name in ("audit_webhook_cluster_audit_state", "audit_webhook_cluster_drift")}


def drift_kinds(proc: ReconcilerProcess, cluster: str) -> set[str]:
    return {dict(labels)["kind"] for labels in cluster_series(proc, cluster)["audit_webhook_cluster_drift"]}


def test_the_metrics_pages_carry_what_alerts_and_dashboard_read(plane: ControlPlane, webhook: WebhookProcess,
                                                               reconciler: ReconcilerProcess):
    namespace(plane, "kubermatic")
    namespace(plane, NS)
    plane.apply({"apiVersion": "kubermatic.k8c.io/v1", "kind": "Seed",
                 "metadata": {"name": "e2e-met-seed", "namespace": "kubermatic"},
                 "spec": {"datacenters": {"e2e-met-dc": {"spec": {}}}}})
    # An apiserver Pod created while the cluster needs no audit logging: not injected.
    plane.apply(kkp_cluster("e2emet", dc="e2e-met-dc"))
    assert eventually(lambda: cluster_series(reconciler, "e2emet")["audit_webhook_cluster_audit_state"].get(
        (("cluster", "e2emet"), ("state", "off"))) == 1.0, timeout=60), reconciler_page(reconciler)
    plain = plane.create_json(pod_in(NS))
    assert not any(c["name"] == "audit-logs" for c in plain["spec"]["containers"])
    assert drift_kinds(reconciler, "e2emet") == set()

    # Audit logging on: admitted with a warning; the reconciler creates what the Pods mount; the
    # running Pod is now drift, which the Lease holder reports as `report` would.
    admitted = plane.apply(kkp_cluster("e2emet", dc="e2e-met-dc", audit=AUDIT_ON))
    assert "Warning" in admitted.stderr, admitted.stderr
    assert eventually(lambda: cluster_series(reconciler, "e2emet")["audit_webhook_cluster_audit_state"].get(
        (("cluster", "e2emet"), ("state", "on"))) == 1.0)
    # The Pod is drift; what it mounts is not (the reconciler created it).
    assert eventually(lambda: {"pod_not_injected", "pod_flags"} <= drift_kinds(reconciler, "e2emet")
                      and "object_missing" not in drift_kinds(reconciler, "e2emet")), cluster_series(reconciler, "e2emet")

    # A refused apiserver Pod (no apiserver container), a refused Cluster, a body that is no review.
    broken = pod_in(NS)
    broken["metadata"]["name"] = "apiserver-broken"
    broken["spec"]["containers"] = [{"name": "not-apiserver", "image": "busybox"}]
    assert plane.apply(broken, check=False).returncode != 0
    refused = plane.apply(kkp_cluster("e2emetbad", dc="e2e-met-dc", audit={"enabled": True, "policyPreset": "x"}),
                          check=False)
    assert refused.returncode != 0
    ctx = plane.client_context(webhook.cert_dir / "ca.crt")
    garbage = urllib.request.Request(f"https://127.0.0.1:{webhook.port}/mutate", data=b"{}",
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as bad:
        urllib.request.urlopen(garbage, context=ctx, timeout=5)
    assert bad.value.code == 400

    pages = {"webhook": webhook_page(webhook), "reconciler": reconciler_page(reconciler)}
    for component, page in pages.items():
        lint = promtool("check", "metrics", stdin=page)
        assert lint.returncode == 0, f"{component}: {lint.stdout}{lint.stderr}"
        (build,) = samples(page, "audit_webhook_build_info")
        assert dict(build)["component"] == component
    assert samples(pages["webhook"], "audit_webhook_admission_requests_total")[(
        ("decision", "denied"), ("handler", "mutate"), ("kind", "Pod"), ("operation", "CREATE"))] >= 1
    assert samples(pages["webhook"], "audit_webhook_bad_requests_total")[(("code", "400"),)] >= 1

    everything = pages["webhook"] + pages["reconciler"]
    missing = used_metric_names() - sampled_names(everything)
    assert not missing, f"read by an alert or the dashboard, absent from both pages: {sorted(missing)}"

    # The promtool unit tests feed series of these names, with these labels (and target labels).
    labels_of: dict[str, set[str]] = {}
    for f in families(everything).values():
        for s in f.samples:
            labels_of.setdefault(s.name, set()).update(s.labels)
    for test in yaml.safe_load(ALERT_TESTS.read_text())["tests"]:
        for series in test["input_series"]:
            name, _, labels = series["series"].partition("{")
            assert name in labels_of, f"{name} is on neither page"
            assert set(re.findall(r'(\w+)="', labels)) - TARGET_LABELS <= labels_of[name], series["series"]


def test_a_clusters_series_go_with_the_cluster(plane: ControlPlane, reconciler: ReconcilerProcess):
    namespace(plane, "cluster-e2emetgone")
    plane.apply(kkp_cluster("e2emetgone", dc="nowhere"))
    assert eventually(lambda: drift_kinds(reconciler, "e2emetgone") == {"seed_missing"}, timeout=60)
    plane.kubectl("delete", "cluster", "e2emetgone")
    assert eventually(lambda: cluster_series(reconciler, "e2emetgone") == {
        "audit_webhook_cluster_audit_state": {}, "audit_webhook_cluster_drift": {}})
