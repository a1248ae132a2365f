"""The webhook configuration's namespace lists: Fail for the namespaces of audited clusters,
Ignore for the rest (webhook/core/audited_namespaces.py)."""

from pathlib import Path

import yaml

from webhook.core.audited_namespaces import NONE_PLACEHOLDER, selector_patch, wanted_selector

DEPLOYED = next(yaml.safe_load_all((Path(__file__).resolve().parents[1] / "deploy/overlays/kkp/webhooks.yaml").read_text()))


def test_the_deployed_configuration_starts_with_no_audited_namespace():
    assert selector_patch(DEPLOYED, "audit-webhook", []) is None
    policies = {w["name"].split(".")[0]: w["failurePolicy"] for w in DEPLOYED["webhooks"]}
    assert policies == {"inject": "Fail", "inject-marked": "Fail", "inject-other": "Ignore"}


def test_audited_namespaces_fail_closed_and_leave_the_others_to_ignore():
    patch = selector_patch(DEPLOYED, "audit-webhook", ["cluster-b", "cluster-a", "cluster-a"])
    by_name = {w["name"].split(".")[0]: w["namespaceSelector"]["matchExpressions"][0] for w in patch["webhooks"]}
    assert by_name["inject"] == {"key": "kubernetes.io/metadata.name", "operator": "In",
                                 "values": ["cluster-a", "cluster-b"]}
    for other in ("inject-marked", "inject-other"):
        assert by_name[other]["operator"] == "NotIn"
        assert by_name[other]["values"] == ["audit-webhook", "cluster-a", "cluster-b"]
    # Applied, nothing more to change; and back to none, the placeholder keeps `In` non-empty.
    applied = {"webhooks": [{**w, **next(p for p in patch["webhooks"] if p["name"] == w["name"])}
                            for w in DEPLOYED["webhooks"]]}
    assert selector_patch(applied, "audit-webhook", ["cluster-a", "cluster-b"]) is None
    assert wanted_selector("inject.x", "audit-webhook", [])["matchExpressions"][0]["values"] == [NONE_PLACEHOLDER]
    assert wanted_selector("protect.x", "audit-webhook", ["cluster-a"]) is None


VALIDATING = list(yaml.safe_load_all((Path(__file__).resolve().parents[1] / "deploy/overlays/kkp/webhooks.yaml").read_text()))[1]


def test_audit_config_fails_closed_only_in_audited_namespaces():
    assert selector_patch(VALIDATING, "audit-webhook", []) is None
    patch = selector_patch(VALIDATING, "audit-webhook", ["cluster-a"])
    by_name = {w["name"].split(".")[0]: w["namespaceSelector"]["matchExpressions"][0] for w in patch["webhooks"]}
    assert by_name == {
        "validate-config": {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["cluster-a"]},
        "protect-pod": {"key": "kubernetes.io/metadata.name", "operator": "In", "values": ["cluster-a"]},
        "validate-config-other": {"key": "kubernetes.io/metadata.name", "operator": "NotIn",
                                  "values": ["audit-webhook", "cluster-a"]}}
    policies = {w["name"].split(".")[0]: w["failurePolicy"] for w in VALIDATING["webhooks"]}
    assert policies["validate-config"] == "Fail" and policies["validate-config-other"] == "Ignore"
