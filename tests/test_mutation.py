"""Which Pods get a patch: the mutating decision."""

import pytest

from tests.helpers import bare_pod, cluster, seed
from webhook.mutation import decide_mutation
from webhook.options import Options

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
