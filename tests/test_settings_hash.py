"""The settings hash is of what is rendered: it changes exactly when an apiserver would run
differently, in both directions."""

from __future__ import annotations

import copy
import json

import pytest

from tests.helpers import cluster, container, kkp_pod, seed, webhook_backend
from webhook.core import names, presets
from webhook.core.defaults import defaults
from webhook.core.mutation import decide_mutation, prepare
from webhook.core.objects import dig
from webhook.core.options import Options
from webhook.core.patch import apply_patch
from webhook.core.reconcile_plan import mounted_config, rollout_patch
from webhook.core.report import cluster_row

HASH = names.SETTINGS_HASH_ANNOTATION

OPTS = Options.default()
BASE = cluster(audit={"enabled": True, "policyPreset": "minimal"})


def hash_of(obj, seed_obj=None, options=OPTS):
    return prepare(obj, seed_obj, options).settings_hash


@pytest.mark.parametrize("variant", [
    cluster(audit={"enabled": True, "policyPreset": "recommended"}),
    cluster(audit={"enabled": True, "policyPreset": "minimal", "webhookBackend": webhook_backend()}),
    cluster(audit={"enabled": True, "policyPreset": "minimal", "webhookBackend": webhook_backend(backoff="9s")}),
    cluster(audit={"enabled": True, "policyPreset": "minimal", "sidecar": {"extraEnvs": [{"name": "T", "value": "x"}]}}),
    cluster(audit={"enabled": True, "policyPreset": "minimal", "sidecar": {"resources": {"limits": {"memory": "99Mi"}}}}),
    cluster(audit={"enabled": True, "policyPreset": "minimal", "sidecar": {"config": {"outputs": [
        {"Name": "stdout", "Match": "x"}]}}}),
    cluster(audit={"policyPreset": "minimal", "webhookBackend": webhook_backend()}),
])
def test_every_change_in_what_is_rendered_changes_the_hash(variant):
    assert hash_of(variant) != hash_of(BASE)


def test_datacenter_enforcement_changes_it_only_through_what_it_renders():
    enforcing = seed({"dc1": {"enforceAuditLogging": True}})
    # Enforcement keeps the default output beside the cluster's: different fluent-bit text.
    with_output = cluster(audit={"enabled": True, "policyPreset": "minimal", "sidecar": {"config": {"outputs": [
        {"Name": "stdout", "Match": "x"}]}}})
    assert hash_of(with_output, enforcing) != hash_of(with_output)
    # Without outputs of its own the rendered text is the same: nothing rolls.
    assert hash_of(BASE, enforcing) == hash_of(BASE)


def test_options_change_it_only_through_what_they_render():
    assert hash_of(BASE, options=OPTS.model_copy(update={"sidecar_image": "x/fluent-bit:1"})) != hash_of(BASE)
    assert hash_of(BASE, options=OPTS.model_copy(update={"cluster_id_record": False})) != hash_of(BASE)

    class MoreOptions(Options):
        """A later version with an option that renders nothing for these clusters."""

        unrelated_knob: str = "on"

    more = MoreOptions(**OPTS.model_dump())
    assert hash_of(BASE, options=more) == hash_of(BASE)
    # The old hash covered every option: it moved, and would have rolled every apiserver.
    assert prepare(BASE, None, more).legacy_hash != prepare(BASE, None, OPTS).legacy_hash


def test_a_data_file_edit_rolls_exactly_the_apiservers_it_changes(monkeypatch):
    """An edit of defaults.yaml's rotation flags or of a preset's text."""
    other = cluster(name="other", audit={"webhookBackend": webhook_backend()})  # no log files: no rotation
    recommended = cluster(audit={"enabled": True, "policyPreset": "recommended"})
    before = {name: hash_of(obj) for name, obj in (("base", BASE), ("other", other), ("recommended", recommended))}

    edited = copy.deepcopy(defaults())
    assert "--audit-log-maxage" in edited["auditLogRotation"]
    edited["auditLogRotation"]["--audit-log-maxage"] = "99"
    import webhook.core.desired_pod as inject_module

    with monkeypatch.context() as patched:
        patched.setattr("webhook.core.desired_pod.defaults", lambda: edited)
        inject_module._flags.cache_clear()
        after = {name: hash_of(obj) for name, obj in (("base", BASE), ("other", other),
                                                      ("recommended", recommended))}
    inject_module._flags.cache_clear()
    assert after["base"] != before["base"] and after["recommended"] != before["recommended"]
    assert after["other"] == before["other"]

    original = presets.policy_text
    monkeypatch.setattr("webhook.core.settings_hash.presets.policy_text",
                        lambda name: original(name) + ("# edited\n" if name == "minimal" else ""))
    assert hash_of(BASE) != before["base"]
    assert hash_of(recommended) == before["recommended"]


def test_the_upgrade_to_this_hash_rolls_nothing_by_itself():
    """Pods and Deployments carry the 0.1 hash of the same settings: it counts as current."""
    p = prepare(BASE, None, OPTS)
    assert p.is_current(p.settings_hash) and p.is_current(p.legacy_hash)
    assert not p.is_current(prepare(cluster(audit={"enabled": True}), None, OPTS).legacy_hash)
    assert not p.is_current(None)


# What is rendered for one Pod: an existing sidecar of the same repository keeps its image.
AIRGAP_IMAGE = "registry.airgap.example/fluent/fluent-bit:4.0.3"


def _with_sidecar(image):
    pod = kkp_pod()
    pod["spec"]["containers"].append({"name": "audit-logs", "image": image})
    return pod


def _injected(pod, options=OPTS):
    answer = decide_mutation("CREATE", pod, BASE, None, options)
    return apply_patch(pod, answer.patch)


def test_the_hash_is_of_what_is_rendered_for_that_pod():
    """A sidecar image that is not rendered (the Pod keeps its own) does not move the hash."""
    mirror = OPTS.model_copy(update={"sidecar_image": "mirror.example/fluent/fluent-bit:9.9"})
    pod = _with_sidecar(AIRGAP_IMAGE)
    out, out_mirror = _injected(pod), _injected(pod, mirror)
    assert out == out_mirror  # the same Pod, hash included: no false "stale settings hash"
    assert container(out, "audit-logs")["image"] == AIRGAP_IMAGE
    assert prepare(BASE, None, mirror).is_current(out["metadata"]["annotations"][HASH], out)
    # ... while a Pod that does get the image has another hash, and so does a sidecar of another repository.
    plain, plain_mirror = _injected(kkp_pod()), _injected(kkp_pod(), mirror)
    assert plain["metadata"]["annotations"][HASH] != plain_mirror["metadata"]["annotations"][HASH]
    other = _injected(_with_sidecar("quay.io/other/logger:1"))
    assert container(other, "audit-logs")["image"] == OPTS.sidecar_image
    assert other["metadata"]["annotations"][HASH] == plain["metadata"]["annotations"][HASH]


def test_report_shows_no_drift_for_a_sidecar_that_keeps_its_registry():
    mirror = OPTS.model_copy(update={"sidecar_image": "mirror.example/fluent/fluent-bit:9.9"})
    out = _injected(_with_sidecar(AIRGAP_IMAGE))
    out["metadata"]["namespace"] = "cluster-abc"
    row = cluster_row(BASE, None, pods=[out], secrets={}, configmaps={("cluster-abc", "audit-config")},
                      options=mirror)
    assert not [d for d in row.drift if "settings hash" in d.detail]
    stale = {**out, "metadata": {**out["metadata"], "annotations": {HASH: "0000000000000000"}}}
    row = cluster_row(BASE, None, pods=[stale], secrets={}, configmaps=set(), options=mirror)
    assert [d for d in row.drift if d.kind == "pod_outdated" and "stale settings hash 0000000000000000" in d.detail]


def _deployment(template=None, own=None):
    return {"metadata": {"annotations": dict(own or {})},
            "spec": {"template": {"metadata": {"annotations": dict(template or {})}, "spec": {"containers": []}}}}


def _applied(deployment, rolled):
    """The Deployment after the reconciler's merge patch."""
    out = copy.deepcopy(deployment)
    out["metadata"]["annotations"].update(dig(rolled.patch, "metadata", "annotations") or {})
    out["spec"]["template"]["metadata"]["annotations"].update(
        dig(rolled.patch, "spec", "template", "metadata", "annotations") or {})
    return out


HOOKED = cluster(audit={"enabled": True, "policyPreset": "minimal", "webhookBackend": webhook_backend()})
USER_POLICY = cluster(audit={"enabled": True})  # policyPreset "": audit-config is the user's
POLICY_CM = {"data": {"policy.yaml": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"}}


def _mounted(obj, webhook_yaml, policy=None):
    return mounted_config(prepare(obj, None, OPTS).settings, webhook_yaml, policy)


def test_a_change_of_the_webhook_secret_or_a_users_policy_rolls_exactly_those_apiservers():
    secret_a, secret_b = b"kind: Config\nserver: a\ntoken: s3cr3t-A\n", b"kind: Config\nserver: b\ntoken: s3cr3t-B\n"
    assert _mounted(HOOKED, secret_a) != _mounted(HOOKED, secret_b)
    assert _mounted(BASE, None, POLICY_CM) == _mounted(BASE, None, {"data": {"policy.yaml": "other"}}) == ""
    assert _mounted(USER_POLICY, None, POLICY_CM) != _mounted(USER_POLICY, None, {"data": {"policy.yaml": "x"}})
    for obj, before, after in ((HOOKED, secret_a, secret_b), (USER_POLICY, POLICY_CM, {"data": {"policy.yaml": "x"}})):
        p = prepare(obj, None, OPTS)
        args = (before, None) if obj is HOOKED else (None, before)
        now = _mounted(obj, *args)
        deploy = _deployment({HASH: p.settings_hash, names.MOUNTED_HASH_ANNOTATION: now})
        assert rollout_patch(deploy, p, mounted=now) is None  # unchanged: nothing rolls
        changed = _mounted(obj, *((after, None) if obj is HOOKED else (None, after)))
        rolled = rollout_patch(deploy, p, mounted=changed)
        assert rolled is not None and rolled.rolls
        assert rolled.patch["spec"]["template"]["metadata"]["annotations"][names.MOUNTED_HASH_ANNOTATION] == changed
        assert b"s3cr3t" not in json.dumps(rolled.patch).encode() + rolled.why.encode()
        assert rollout_patch(_applied(deploy, rolled), p, mounted=changed) is None
    # Another cluster's apiserver, whose Secret did not change, does not roll.
    p = prepare(BASE, None, OPTS)
    assert rollout_patch(_deployment({HASH: p.settings_hash}), p, mounted="") is None


def test_the_upgrade_records_the_mounted_digest_and_a_later_change_rolls():
    p = prepare(HOOKED, None, OPTS)
    first, second = _mounted(HOOKED, b"one"), _mounted(HOOKED, b"two")
    deploy = _deployment({HASH: p.settings_hash})  # rolled by a version without the mounted digest
    recorded = rollout_patch(deploy, p, mounted=first)
    assert recorded is not None and not recorded.rolls and "spec" not in recorded.patch
    deploy = _applied(deploy, recorded)
    assert rollout_patch(deploy, p, mounted=first) is None
    assert rollout_patch(deploy, p, mounted=second).rolls


def test_a_later_change_rolls_a_deployment_that_still_carries_the_legacy_hash(monkeypatch):
    """legacy2.py: the upgrade rolls nothing; `--audit-log-maxage` 30 -> 90 afterwards rolls."""
    p = prepare(BASE, None, OPTS)
    deploy = _deployment({HASH: p.legacy_hash})
    recorded = rollout_patch(deploy, p)
    assert recorded is not None and not recorded.rolls
    deploy = _applied(deploy, recorded)
    assert rollout_patch(deploy, p) is None  # and again: still nothing
    edited = copy.deepcopy(defaults())
    edited["auditLogRotation"]["--audit-log-maxage"] = "90"
    import webhook.core.desired_pod as inject_module

    monkeypatch.setattr("webhook.core.desired_pod.defaults", lambda: edited)
    inject_module._flags.cache_clear()
    try:
        after = prepare(BASE, None, OPTS)
        assert after.legacy_hash == p.legacy_hash  # 0.1's hash never saw defaults.yaml
        rolled = rollout_patch(deploy, after)
        assert rolled is not None and rolled.rolls
        assert rolled.patch["spec"]["template"]["metadata"]["annotations"][HASH] == after.settings_hash
        assert rollout_patch(_applied(deploy, rolled), after) is None
        # In KKP mode the Deployment is KKP's: nothing is rolled or recorded.
        assert rollout_patch(deploy, after, mode="kkp") is None
    finally:
        inject_module._flags.cache_clear()
