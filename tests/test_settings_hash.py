"""The settings hash is of what is rendered: it changes exactly when an apiserver would run
differently, in both directions."""

from __future__ import annotations

import copy

import pytest

from tests.helpers import cluster, seed, webhook_backend
from webhook.core import presets
from webhook.core.defaults import defaults
from webhook.core.mutation import prepare
from webhook.core.options import Options

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
