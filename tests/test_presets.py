"""SPEC §3: every row of the preset table, with kube-apiserver's first-match semantics."""

import pytest

from webhook import presets
from webhook.policy_eval import AuditRequest, evaluate
from webhook.validation.errors import Path
from webhook.validation.policy import check_policy, check_policy_text

R = AuditRequest
WRITES = ["create", "update", "patch", "delete"]
WORKLOADS = [("", "pods"), ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
             ("apps", "replicasets")]

ROWS = []
for verb in WRITES:
    for group, resource in WORKLOADS:
        ROWS.append((f"{verb} {group or 'core'}/{resource}", R(verb, resource, group=group, namespace="default"),
                     ("Metadata", "RequestResponse", "RequestResponse")))
for sub, resource in [("exec", "pods"), ("attach", "pods"), ("portforward", "pods"), ("proxy", "pods"),
                      ("proxy", "services")]:
    for verb in ("create", "get"):
        ROWS.append((f"{verb} {resource}/{sub}", R(verb, resource, sub, namespace="default", name="x"),
                     ("Metadata", "RequestResponse", "RequestResponse")))
ROWS.append(("get pods/log", R("get", "pods", "log", namespace="default", name="x"),
             ("Metadata", "Metadata", "Metadata")))
for resource in ("secrets", "configmaps"):
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"):
        ROWS.append((f"{verb} {resource}", R(verb, resource, namespace="kube-system", name="anything"),
                     ("Metadata", "Metadata", "Metadata")))
ROWS += [
    ("get pods", R("get", "pods", namespace="default"), ("Metadata", "None", "Metadata")),
    ("list deployments", R("list", "deployments", group="apps"), ("Metadata", "None", "Metadata")),
    ("create services", R("create", "services", namespace="default"), ("Metadata", "None", "Metadata")),
    ("update nodes", R("update", "nodes", name="n1"), ("Metadata", "None", "Metadata")),
    ("patch pods/status", R("patch", "pods", "status", namespace="default"), ("Metadata", "None", "Metadata")),
    ("non-resource /healthz", R("get", path="/healthz"), ("Metadata", "None", "Metadata")),
]


@pytest.mark.parametrize(("request_", "levels"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
@pytest.mark.parametrize("preset_index", [0, 1, 2], ids=list(presets.PRESETS))
def test_preset_table(request_, levels, preset_index):
    policy = presets.policy(presets.PRESETS[preset_index])
    assert evaluate(policy, request_).level == levels[preset_index]


@pytest.mark.parametrize("name", presets.PRESETS)
def test_secrets_and_configmaps_never_above_metadata_whatever_the_name_or_user(name):
    policy = presets.policy(name)
    for resource in ("secrets", "configmaps"):
        for sub in ("", "status"):
            for verb in ("create", "update", "patch", "delete", "get"):
                req = R(verb, resource, sub, namespace="ns", name="pods", user="system:admin", groups=("system:masters",))
                assert evaluate(policy, req).level in ("Metadata", "None")


@pytest.mark.parametrize("name", presets.PRESETS)
def test_presets_are_policies_kube_apiserver_loads(name):
    found = check_policy_text(presets.policy_text(name), Path("data[policy.yaml]"))
    assert found.errors == [] and found.warnings == []


def test_no_preset_means_the_metadata_policy():
    assert presets.policy_text("") == presets.policy_text("metadata")
    assert check_policy(presets.policy(""), Path("")).errors == []


def test_unknown_preset_is_an_error():
    with pytest.raises(KeyError):
        presets.policy_text("verbose")
