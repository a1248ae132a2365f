"""The reconciler's decisions: which objects to create, update, delete, and when to roll."""

from __future__ import annotations

import base64
import datetime as dt

import pytest

from tests import helpers
from tests.helpers import seed, webhook_backend
from webhook.adapters.leader import expired
from webhook.core import names
from webhook.core.manifests import CLUSTER_LABEL, MANAGED_BY_LABEL
from webhook.core.mutation import prepare
from webhook.core.options import Options
from webhook.core.presets import policy_text
from webhook.core.reconcile_plan import Owner, desired_objects, ownership, plan, rollout_patch

OPTS = Options.default()
DC_WEBHOOK = seed({"dc1": {"enforcedAuditWebhookSettings": {"auditWebhookConfig": {"name": "dcwh",
                                                                                     "namespace": "kubermatic"}}}})
SOURCE = {"webhook.yaml": b"apiVersion: v1\nkind: Config\n"}


def cluster(name="abc", **kw):
    """A Cluster as the API returns it: with a UID, which our objects name as their owner."""
    obj = helpers.cluster(name, **kw)
    obj["metadata"]["uid"] = f"uid-{name}"
    return obj


def settings_of(obj, seed_obj=None):
    return prepare(obj, seed_obj, OPTS).settings


def desired(obj, seed_obj=None, source=SOURCE, mode="standalone", egress=None):
    return desired_objects(settings_of(obj, seed_obj), OPTS, source, egress, mode, Owner.of(obj))


def ours(obj, seed_obj=None, mode="standalone"):
    return ownership(settings_of(obj, seed_obj), Owner.of(obj), mode)


def kinds(objects):
    return [(o["kind"], o["metadata"]["name"]) for o in objects]


def test_what_each_kind_of_cluster_needs():
    assert kinds(desired(cluster(audit={"enabled": True}))) == [("ConfigMap", "audit-config"),
                                                                 ("Secret", "audit-logs-fluentbit")]
    assert kinds(desired(cluster(audit={"webhookBackend": webhook_backend()}))) == [("ConfigMap", "audit-config")]
    assert kinds(desired(cluster(), DC_WEBHOOK)) == [("ConfigMap", "audit-config"), ("Secret", "dcwh")]
    assert kinds(desired(cluster(), DC_WEBHOOK, source=None)) == [("ConfigMap", "audit-config")]
    assert desired(cluster()) == []


def test_managed_objects_are_labelled_and_secrets_hold_data():
    for obj in desired(cluster(audit={"enabled": True}), DC_WEBHOOK):
        assert obj["metadata"]["namespace"] == "cluster-abc"
        assert obj["metadata"]["labels"] == {MANAGED_BY_LABEL: "audit-webhook", CLUSTER_LABEL: "abc"}
        assert "stringData" not in obj
    copy = desired(cluster(), DC_WEBHOOK)[1]
    assert base64.b64decode(copy["data"]["webhook.yaml"]) == SOURCE["webhook.yaml"]


def existing(obj, rv="7", **changes):
    out = {**obj, "metadata": {**obj["metadata"], "resourceVersion": rv}}
    out.update(changes)
    return out


def verbs(actions):
    return [(a.verb, a.obj["kind"], a.obj["metadata"]["name"]) for a in actions]


def test_plan_creates_what_is_missing_and_leaves_what_is_right():
    obj = cluster(audit={"enabled": True, "policyPreset": "minimal"})
    want = desired(obj)
    assert verbs(plan(settings_of(obj), want, [], ours(obj))) == [("create", "ConfigMap", "audit-config"),
                                                        ("create", "Secret", "audit-logs-fluentbit")]
    assert plan(settings_of(obj), want, [existing(o) for o in want], ours(obj)) == []


def test_a_preset_restores_manual_edits_and_a_custom_policy_is_left_alone():
    preset = cluster(audit={"enabled": True, "policyPreset": "minimal"})
    edited = existing(desired(preset)[0], data={"policy.yaml": "rules: [{level: None}]"})
    actions = plan(settings_of(preset), desired(preset), [edited, existing(desired(preset)[1])], ours(preset))
    assert verbs(actions) == [("update", "ConfigMap", "audit-config")]
    assert actions[0].obj["data"]["policy.yaml"] == policy_text("minimal")
    assert actions[0].obj["metadata"]["resourceVersion"] == "7"
    assert actions[0].reason == 'restored ConfigMap audit-config to the "minimal" preset'
    custom = cluster(audit={"enabled": True})
    users = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audit-config", "namespace": "cluster-abc"},
             "data": {"policy.yaml": "my own"}}
    assert verbs(plan(settings_of(custom), desired(custom), [users], ours(custom))) == [("create", "Secret", "audit-logs-fluentbit")]


def test_turning_audit_off_deletes_only_what_we_manage():
    on = cluster(audit={"enabled": True})
    mine = [existing(o) for o in desired(on)]
    foreign = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "apiserver-tls", "namespace": "cluster-abc",
                                                                  "labels": {MANAGED_BY_LABEL: "kubermatic"}}}
    other_cluster = existing(desired(cluster(name="zzz", audit={"enabled": True}))[1])
    actions = plan(settings_of(cluster()), [], [*mine, foreign, other_cluster], ours(cluster()))
    assert verbs(actions) == [("delete", "ConfigMap", "audit-config"), ("delete", "Secret", "audit-logs-fluentbit")]


def test_changed_sidecar_settings_update_the_fluent_bit_secret():
    before = cluster(audit={"enabled": True})
    after = cluster(audit={"enabled": True, "sidecar": {"config": {"outputs": [{"Name": "stdout", "Match": "x"}]}}})
    actions = plan(settings_of(after), desired(after), [existing(o) for o in desired(before)], ours(after))
    assert verbs(actions) == [("update", "Secret", "audit-logs-fluentbit")]


def deployment(hash_value=None, replaced_until=None):
    annotations = {} if hash_value is None else {names.SETTINGS_HASH_ANNOTATION: hash_value}
    if replaced_until is not None:
        annotations[names.ROLLED_PODS_ANNOTATION] = replaced_until
    return {"spec": {"template": {"metadata": {"annotations": annotations}}}}


def pod(name, created, hash_value=None, going=False):
    meta = {"name": name, "creationTimestamp": created}
    if hash_value is not None:
        meta["annotations"] = {names.SETTINGS_HASH_ANNOTATION: hash_value}
    if going:
        meta["deletionTimestamp"] = created
    return {"metadata": meta}


@pytest.mark.parametrize(("obj", "deploy", "rolls"), [
    (cluster(audit={"enabled": True}), deployment(), True),            # newly audited
    (cluster(audit={"enabled": True}), deployment("stale"), True),     # settings changed
    (cluster(), deployment(), False),                                  # never audited: never rolled
    (cluster(), deployment("was-on"), True),                           # turned off: roll the sidecar out
    (cluster(audit={"enabled": True}), None, False),                   # no Deployment (yet)
])
def test_rollouts(obj, deploy, rolls):
    p = prepare(obj, None, OPTS)
    rolled = rollout_patch(deploy, p)
    assert (rolled is not None) is rolls
    if rolled:
        assert rolled.rolls and rolled.why == f"audit settings changed ({p.settings_hash})"
        template = rolled.patch["spec"]["template"]["metadata"]["annotations"]
        assert template[names.SETTINGS_HASH_ANNOTATION] == p.settings_hash
        assert rollout_patch(deployment(p.settings_hash), p) is None  # nothing changed
        # Injected by 0.1: nothing changed either; what its hash stands for is recorded, nothing rolls.
        recorded = rollout_patch(deployment(p.legacy_hash), p)
        assert recorded is not None and not recorded.rolls and "spec" not in recorded.patch
        assert recorded.patch["metadata"]["annotations"] == {names.MIGRATED_HASH_ANNOTATION: p.settings_hash}


T1, T2, T3 = "2026-11-29T12:00:01Z", "2026-11-29T12:00:02Z", "2026-11-29T12:00:03Z"
AUDITED = prepare(cluster(audit={"enabled": True}), None, OPTS)
CURRENT = AUDITED.settings_hash


@pytest.mark.parametrize(("deploy", "pods", "replaced_until"), [
    # A Pod admitted with stale settings after the last rollout (a lagging replica): roll again.
    (deployment(CURRENT), [pod("a", T1, CURRENT), pod("b", T2, "stale")], T2),
    (deployment(CURRENT, T1), [pod("b", T2, "stale")], T2),
    # Already being replaced by the rollout that recorded it, or on its way out: nothing to do.
    (deployment(CURRENT, T2), [pod("b", T2, "stale"), pod("a", T1, "stale")], None),
    (deployment(CURRENT), [pod("b", T2, "stale", going=True)], None),
    # Current, or never injected (admitted while not audited: the settings rollout handles those).
    (deployment(CURRENT), [pod("a", T1, CURRENT), pod("c", T3)], None),
    (deployment(CURRENT), [pod("a", T1, AUDITED.legacy_hash)], None),
    # A settings rollout replaces every Pod there is: they roll nothing afterwards.
    (deployment("old"), [pod("a", T1, "old"), pod("b", T3, "old")], T3),
    (deployment("old"), [], None),
])
def test_rollouts_for_pods_with_stale_settings(deploy, pods, replaced_until):
    rolled = rollout_patch(deploy, AUDITED, pods=pods)
    annotations = rolled.patch["spec"]["template"]["metadata"]["annotations"] if rolled else {}
    assert annotations.get(names.ROLLED_PODS_ANNOTATION) == replaced_until
    if rolled and names.SETTINGS_HASH_ANNOTATION not in annotations:
        assert rolled.why == f"Pod b runs stale audit settings (stale, current {CURRENT})"
        after = deployment(CURRENT, replaced_until)
        assert rollout_patch(after, AUDITED, pods=pods) is None  # once per stale Pod


NOW = dt.datetime(2026, 11, 29, 12, 0, 0, tzinfo=dt.UTC)


@pytest.mark.parametrize(("renewed", "duration", "is_expired"), [
    (None, None, True), (NOW - dt.timedelta(seconds=5), 15, False), (NOW - dt.timedelta(seconds=16), 15, True),
    ((NOW - dt.timedelta(seconds=5)).replace(tzinfo=None), 15, False),
])
def test_lease_expiry(renewed, duration, is_expired):
    assert expired(renewed, duration, NOW) is is_expired


def kkp_owned(obj):
    """The same object as KKP's controllers write it: no labels of ours."""
    return existing({**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "labels"}})


def test_an_object_of_our_name_that_is_not_ours_is_reported_and_left_alone():
    obj = cluster(audit={"enabled": True, "policyPreset": "minimal"})
    want = desired(obj)
    kkp_secret = kkp_owned({**want[1], "data": {"fluent-bit.conf": "S0tQ"}})
    kkp_config = kkp_owned({**want[0], "data": {"policy.yaml": "KKP's own minimal text"}})
    actions = plan(settings_of(obj), want, [kkp_config, kkp_secret], ours(obj))
    assert verbs(actions) == [("report", "ConfigMap", "audit-config"), ("report", "Secret", "audit-logs-fluentbit")]
    assert actions[1].reason == "Secret audit-logs-fluentbit exists and is not managed by audit-webhook: left alone"
    # Never deleted either, even when nothing is needed any more.
    assert plan(settings_of(cluster()), [], [kkp_config, kkp_secret], ours(cluster())) == []


def test_kkp_mode_keeps_only_the_egress_policy_and_never_rolls():
    obj = cluster(audit={"enabled": True, "sidecar": {"config": {"outputs": [
        {"Name": "forward", "Match": "*", "Host": "10.0.0.7", "Port": "24224"}]}}})
    s = settings_of(obj)
    egress = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "audit-logging-egress", "namespace": "cluster-abc"}, "spec": {}}
    assert kinds(desired_objects(s, OPTS, SOURCE, egress, mode="kkp")) == [("NetworkPolicy", "audit-logging-egress")]
    assert kinds(desired_objects(s, OPTS, SOURCE, egress, mode="standalone")) == [
        ("ConfigMap", "audit-config"), ("Secret", "audit-logs-fluentbit"), ("NetworkPolicy", "audit-logging-egress")]
    p = prepare(obj, None, OPTS)
    assert rollout_patch(deployment(), p, mode="kkp") is None
    assert rollout_patch(deployment(), p, mode="standalone") is not None


def test_kkp_mode_copies_a_datacenter_webhook_secret_kkp_does_not_copy():
    """KKP copies it only where the datacenter also enforces audit logging; elsewhere the Pod would
    mount a Secret nobody made. Where KKP copies it, we never race KKP for it."""
    s = settings_of(cluster(), DC_WEBHOOK)
    want = desired_objects(s, OPTS, SOURCE, None, mode="kkp")
    assert kinds(want) == [("Secret", "dcwh")]
    assert verbs(plan(s, want, [], ours(cluster(), DC_WEBHOOK, "kkp"))) == [("create", "Secret", "dcwh")]
    assert plan(s, want, [kkp_owned(want[0])], ours(cluster(), DC_WEBHOOK, "kkp")) == []
    enforcing = seed({"dc1": {"enforceAuditLogging": True, "enforcedAuditWebhookSettings": {
        "auditWebhookConfig": {"name": "dcwh", "namespace": "kubermatic"}}}})
    assert desired_objects(settings_of(cluster(), enforcing), OPTS, SOURCE, None, mode="kkp") == []


def labelled_by_a_tenant(kind, name, owner_uid=None):
    """An object someone who may only patch it dressed up as ours (labels, and perhaps KKP's ownerReference)."""
    meta = {"name": name, "namespace": "cluster-abc", "resourceVersion": "3",
            "labels": {MANAGED_BY_LABEL: "audit-webhook", CLUSTER_LABEL: "abc"}}
    if owner_uid:
        meta["ownerReferences"] = [{"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "name": "abc",
                                    "uid": owner_uid, "controller": True}]
    return {"apiVersion": "v1", "kind": kind, "metadata": meta, "data": {}}


@pytest.mark.parametrize("mode", ["kkp", "standalone"])
@pytest.mark.parametrize(("kind", "name", "owner_uid"), [
    ("Secret", "kkp-ca", None),                        # labels alone
    ("Secret", "kkp-ca", "uid-abc"),                   # labels and KKP's own ownerReference: not a name of ours
    ("NetworkPolicy", "default-deny", "uid-abc"),
    ("Secret", "audit-logs-fluentbit", None),          # our name, but no ownerReference: an old or forged copy
    ("NetworkPolicy", "audit-logging-egress", "uid-other"),
])
def test_labels_a_tenant_can_write_never_make_an_object_ours(mode, kind, name, owner_uid):
    obj = cluster(audit={"enabled": True})
    forged = labelled_by_a_tenant(kind, name, owner_uid)
    assert not ours(obj, mode=mode).owns(forged)
    for settings_from in (obj, cluster()):  # while audited, and after audit logging is turned off
        actions = plan(settings_of(settings_from), desired(settings_from, mode=mode), [forged], ours(settings_from,
                                                                                                     mode=mode))
        assert all(a.verb in ("create", "report") for a in actions), verbs(actions)


def test_what_we_created_carries_an_owner_reference_and_is_ours():
    obj = cluster(audit={"enabled": True})
    for made in desired(obj, DC_WEBHOOK):
        assert made["metadata"]["ownerReferences"] == [
            {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "name": "abc", "uid": "uid-abc"}]
        assert ours(obj, DC_WEBHOOK).owns(made)
    # Without a UID (a manifest read offline) there is no owner to name, and nothing is ever ours.
    anonymous = helpers.cluster(audit={"enabled": True})
    assert all("ownerReferences" not in o["metadata"] for o in desired(anonymous))
    assert not any(ours(anonymous).owns(o) for o in desired(obj))


def test_a_copy_of_a_datacenter_webhook_secret_is_removed_when_the_datacenter_stops_naming_it():
    copied = [existing(o) for o in desired(cluster(), DC_WEBHOOK) if o["kind"] == "Secret"]
    assert kinds(copied) == [("Secret", "dcwh")]
    renamed = seed({"dc1": {"enforcedAuditWebhookSettings": {"auditWebhookConfig": {"name": "dcwh2",
                                                                                      "namespace": "kubermatic"}}}})
    after = settings_of(cluster(), renamed)
    remembered = ownership(after, Owner.of(cluster()), "kkp", frozenset({"dcwh"}))
    actions = plan(after, desired(cluster(), renamed, mode="kkp"), copied, remembered)
    assert verbs(actions) == [("create", "Secret", "dcwh2"), ("delete", "Secret", "dcwh")]
    # A name we never copied is never ours, whatever its labels say.
    assert plan(after, [], copied, ours(cluster(), renamed, "kkp")) == []


def test_per_cluster_series_follow_the_report_rows_and_go_with_their_cluster():
    from prometheus_client.parser import text_string_to_metric_families

    from webhook.adapters.metrics import ReconcilerMetrics
    from webhook.core.report import Drift, Row

    def row(name, audit, *drift):
        return Row(name, f"cluster-{name}", "dc1", audit, "", "", drift=[Drift(*d) for d in drift])

    def series(m, family):
        return {tuple(sorted(s.labels.items())): s.value for f in text_string_to_metric_families(m.render().decode())
                if f.name == family for s in f.samples}

    m = ReconcilerMetrics()
    m.report([row("a", "on", ("pod_outdated", "x"), ("pod_outdated", "y"), ("object_missing", "z")),
              row("b", "invalid", ("settings_invalid", "w"))])
    assert series(m, "audit_webhook_cluster_audit_state") == {
        (("cluster", c), ("state", s)): float((c, s) in {("a", "on"), ("b", "invalid")})
        for c in "ab" for s in ("on", "off", "invalid")}
    assert series(m, "audit_webhook_cluster_drift") == {
        (("cluster", "a"), ("kind", "pod_outdated")): 2.0, (("cluster", "a"), ("kind", "object_missing")): 1.0,
        (("cluster", "b"), ("kind", "settings_invalid")): 1.0}
    assert series(m, "audit_webhook_cluster_report_timestamp_seconds")[()] > 0
    # a's Pods were rolled, b was deleted: their series go.
    m.report([row("a", "off", ("object_missing", "z"))])
    assert series(m, "audit_webhook_cluster_drift") == {(("cluster", "a"), ("kind", "object_missing")): 1.0}
    assert {labels for labels, v in series(m, "audit_webhook_cluster_audit_state").items() if v} == {
        (("cluster", "a"), ("state", "off"))}
    assert len(series(m, "audit_webhook_cluster_audit_state")) == 3
    # Another replica leads: it reports them, this one shows none.
    m.forget_clusters()
    assert series(m, "audit_webhook_cluster_drift") == series(m, "audit_webhook_cluster_audit_state") == {}
    assert series(m, "audit_webhook_cluster_report_timestamp_seconds") == {(): 0.0}
