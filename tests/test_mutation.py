"""Which Pods get a patch: the mutating decision."""

import pytest

from tests.helpers import bare_pod, cluster, seed
from webhook.mutation import decide_mutation
from webhook.options import Options
from webhook.validation.admission import check_admission

OPTS = Options.default()
ON = cluster(audit={"enabled": True})


def unlabelled():
    pod = bare_pod()
    pod["metadata"]["labels"] = {"app": "etcd"}
    return pod


def no_apiserver():
    pod = bare_pod()
    pod["spec"]["containers"][0]["name"] = "main"
    return pod


@pytest.mark.parametrize(("operation", "pod", "cluster_obj", "seed_obj", "allowed", "patched", "reason"), [
    ("CREATE", bare_pod(), ON, None, True, True, "injected"),
    ("UPDATE", bare_pod(), ON, None, True, False, "not-create"),
    ("CREATE", unlabelled(), ON, None, True, False, "not-apiserver"),
    ("CREATE", bare_pod(), None, None, True, False, "no-cluster"),
    ("CREATE", bare_pod(), cluster(), None, True, False, "audit-off"),
    ("CREATE", bare_pod(), cluster(), seed({"dc1": {"enforceAuditLogging": True}}), True, True, "injected"),
    ("CREATE", no_apiserver(), ON, None, True, False, "no-apiserver-container"),
    ("CREATE", bare_pod(), cluster(audit={"enabled": True, "policyPreset": "loud"}), None, False, False,
     "invalid-settings"),
    ("CREATE", bare_pod(), ON, seed({"dc1": {"enforceAuditLogging": "yes"}}), False, False, "invalid-settings"),
    ("CREATE", "not a pod", ON, None, True, False, "not-apiserver"),
])
def test_decide_mutation(operation, pod, cluster_obj, seed_obj, allowed, patched, reason):
    answer = decide_mutation(operation, pod, cluster_obj, seed_obj, OPTS)
    assert (answer.allowed, bool(answer.patch), answer.reason) == (allowed, patched, reason)


def test_invalid_stored_cluster_is_refused_with_its_field_errors():
    answer = decide_mutation("CREATE", bare_pod(), cluster(audit={"enabled": True, "policyPreset": "loud"}), None, OPTS)
    assert answer.code == 422
    assert 'spec.auditLogging.policyPreset: Unsupported value: "loud"' in answer.message
    assert answer.message.startswith('cannot inject audit logging: Cluster.kubermatic.k8c.io "abc" is invalid')


def test_missing_apiserver_container_warns():
    answer = decide_mutation("CREATE", no_apiserver(), ON, None, OPTS)
    assert answer.warnings == ['audit-webhook: no container "apiserver", audit logging not injected']


def test_a_stored_cluster_that_breaks_a_later_policy_rule_is_still_injected_with_a_warning():
    """Tightening an admission-policy rule (here the sidecar ceiling) never stops a running control plane."""
    big = cluster(audit={"enabled": True, "sidecar": {"resources": {"limits": {"cpu": "4"}}}})
    answer = decide_mutation("CREATE", bare_pod(), big, None, Options.default())
    assert answer.allowed and answer.reason == "injected" and answer.patch
    assert answer.warnings == ["spec.auditLogging.sidecar.resources.limits[cpu]: Invalid value: breaks a rule the "
                               "Cluster predates; injected anyway, please fix"]
    # The same settings are refused when the Cluster itself is admitted.
    assert check_admission(big, None, seed=None, secrets={}).errors


def test_a_stored_cluster_whose_settings_are_unsafe_to_render_is_not_injected():
    lua = cluster(audit={"enabled": True, "sidecar": {"config": {"filters": [
        {"Name": "lua", "Match": "*", "code": "function f() os.execute('id') end", "call": "f"}]}}})
    answer = decide_mutation("CREATE", bare_pod(), lua, None, Options.default())
    assert not answer.allowed and answer.reason == "invalid-settings"
    assert '"lua" runs Lua code' in answer.message
