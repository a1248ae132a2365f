"""Every row of the preset table, with kube-apiserver's first-match semantics."""

from __future__ import annotations

import itertools
from importlib import resources
from pathlib import Path as FsPath

import pytest
import yaml

from webhook.core import presets
from webhook.core.policy_eval import AuditRequest, evaluate
from webhook.core.validation.errors import Path
from webhook.core.validation.policy import LEVELS, check_policy, check_policy_text

R = AuditRequest
M, RR, NONE = "Metadata", "RequestResponse", "None"


def levels(metadata: str, minimal: str, recommended: str) -> dict[str, str]:
    """One row of the table: the level each preset gives the request."""
    return {"metadata": metadata, "minimal": minimal, "recommended": recommended}


WRITES = ["create", "update", "patch", "delete", "deletecollection"]
WORKLOADS = [("", "pods"), ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"),
             ("apps", "replicasets")]
MACHINES = ["machines", "machinesets", "machinedeployments"]

# (test id, request, {preset: level}): the table of README's "Configuration", row by row.
ROWS: list[tuple[str, AuditRequest, dict[str, str]]] = []
for verb in WRITES:
    for group, resource in WORKLOADS:
        ROWS.append((f"{verb} {group or 'core'}/{resource}", R(verb, resource, group=group, namespace="default"),
                     levels(M, RR, RR)))
    for resource in MACHINES:
        ROWS.append((f"{verb} cluster.k8s.io/{resource}",
                     R(verb, resource, group="cluster.k8s.io", namespace="kube-system", name="m"), levels(M, RR, RR)))
# Every write subresource of Pods, and those of the workloads.
ROWS += [
    ("patch pods/status", R("patch", "pods", "status", namespace="default", name="x"), levels(M, RR, RR)),
    ("update pods/status", R("update", "pods", "status", namespace="default", name="x"), levels(M, RR, RR)),
    ("create pods/eviction", R("create", "pods", "eviction", namespace="default", name="x"), levels(M, RR, RR)),
    ("create pods/binding", R("create", "pods", "binding", namespace="default", name="x"), levels(M, RR, RR)),
    ("patch pods/ephemeralcontainers", R("patch", "pods", "ephemeralcontainers", namespace="default", name="x"),
     levels(M, RR, RR)),
    ("patch pods/resize", R("patch", "pods", "resize", namespace="default", name="x"), levels(M, RR, RR)),
    ("get pods/status", R("get", "pods", "status", namespace="default", name="x"), levels(M, NONE, M)),
]
for group, resource, sub in [("apps", "deployments", "scale"), ("apps", "deployments", "status"),
                             ("apps", "statefulsets", "scale"), ("apps", "statefulsets", "status"),
                             ("apps", "daemonsets", "status"), ("apps", "replicasets", "scale"),
                             ("apps", "replicasets", "status"), ("cluster.k8s.io", "machinedeployments", "scale"),
                             ("cluster.k8s.io", "machines", "status")]:
    for verb in ("update", "patch"):
        ROWS.append((f"{verb} {group}/{resource}/{sub}", R(verb, resource, sub, group=group, namespace="ns", name="x"),
                     levels(M, RR, RR)))
for sub, resource in [("exec", "pods"), ("attach", "pods"), ("portforward", "pods"), ("proxy", "pods"),
                      ("proxy", "services")]:
    for verb in ("create", "get"):
        ROWS.append((f"{verb} {resource}/{sub}", R(verb, resource, sub, namespace="default", name="x"),
                     levels(M, RR, RR)))
ROWS.append(("get pods/log", R("get", "pods", "log", namespace="default", name="x"), levels(M, M, M)))
for resource in ("secrets", "configmaps"):
    for verb in ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"):
        ROWS.append((f"{verb} {resource}", R(verb, resource, namespace="kube-system", name="anything"),
                     levels(M, M, M)))
ROWS += [
    # KKP's presets record this Secret's changes in full; ours never record a Secret's body.
    ("update secrets usersshkeys", R("update", "secrets", namespace="kube-system", name="usersshkeys"),
     levels(M, M, M)),
    ("create templates.gatekeeper.sh/constrainttemplates", R("create", "constrainttemplates",
                                                              group="templates.gatekeeper.sh", name="t"),
     levels(M, RR, RR)),
    ("patch templates.gatekeeper.sh/constrainttemplates/status",
     R("patch", "constrainttemplates", "status", group="templates.gatekeeper.sh", name="t"), levels(M, RR, RR)),
    ("delete templates.gatekeeper.sh/k8srequiredlabels", R("delete", "k8srequiredlabels",
                                                            group="templates.gatekeeper.sh", name="t"),
     levels(M, RR, RR)),
    ("get templates.gatekeeper.sh/constrainttemplates", R("get", "constrainttemplates",
                                                           group="templates.gatekeeper.sh", name="t"),
     levels(M, NONE, M)),
    ("get cluster.k8s.io/machines", R("get", "machines", group="cluster.k8s.io", namespace="kube-system"),
     levels(M, NONE, M)),
    ("get pods", R("get", "pods", namespace="default"), levels(M, NONE, M)),
    ("list deployments", R("list", "deployments", group="apps"), levels(M, NONE, M)),
    ("create services", R("create", "services", namespace="default"), levels(M, NONE, M)),
    ("update nodes", R("update", "nodes", name="n1"), levels(M, NONE, M)),
    ("patch nodes/status", R("patch", "nodes", "status", name="n1"), levels(M, NONE, M)),
    ("non-resource /healthz", R("get", path="/healthz"), levels(M, NONE, M)),
]


@pytest.mark.parametrize(("request_", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
@pytest.mark.parametrize("name", presets.PRESETS)
def test_preset_table(request_, expected, name):
    assert evaluate(presets.policy(name), request_).level == expected[name]


def test_the_table_has_a_column_for_every_preset():
    assert presets.PRESETS == ("metadata", "minimal", "recommended")
    assert all(set(expected) == set(presets.PRESETS) for _, _, expected in ROWS)


def test_presets_are_the_yaml_files_of_the_presets_folder():
    folder = resources.files("webhook").joinpath("presets")
    files = sorted(e.name for e in folder.iterdir() if e.name.endswith(".yaml"))
    assert tuple(f.removesuffix(".yaml") for f in files) == presets.PRESETS
    assert ("", *presets.PRESETS) == presets.SUPPORTED_VALUES
    assert presets.DEFAULT_PRESET == "metadata"


def test_metadata_records_every_request_at_every_stage():
    policy = presets.policy("metadata")
    assert "omitStages" not in policy
    assert policy["rules"] == [{"level": "Metadata"}]


@pytest.mark.parametrize("name", presets.PRESETS)
def test_secrets_and_configmaps_never_above_metadata_whatever_the_name_or_user(name):
    policy = presets.policy(name)
    for resource in ("secrets", "configmaps"):
        for sub in ("", "status"):
            for verb in ("create", "update", "patch", "delete", "get"):
                for obj in ("pods", "usersshkeys"):
                    req = R(verb, resource, sub, namespace="ns", name=obj, user="system:admin",
                            groups=("system:masters",))
                    assert evaluate(policy, req).level in ("Metadata", "None")


@pytest.mark.parametrize("name", presets.PRESETS)
def test_presets_are_policies_kube_apiserver_loads(name):
    text = presets.policy_text(name)
    assert presets.policy(name)["apiVersion"] == "audit.k8s.io/v1"
    found = check_policy_text(text, Path("data[policy.yaml]"))
    assert found.errors == [] and found.warnings == []


def test_no_preset_means_the_metadata_policy():
    assert presets.policy_text("") == presets.policy_text("metadata")
    assert check_policy(presets.policy(""), Path("")).errors == []


def test_unknown_preset_is_an_error():
    with pytest.raises(KeyError):
        presets.policy_text("verbose")


# KKP's own presets, as KKP ships them; the checkout's sibling folder holds a copy.
KKP_PRESETS = FsPath(__file__).resolve().parents[2] / "shared/kkp/audit-policies"
RANK = {level: i for i, level in enumerate(LEVELS)}  # None < Metadata < Request < RequestResponse


def kkp_policy(name: str) -> dict:
    path = KKP_PRESETS / f"{name}.yaml"
    assert path.is_file(), f"KKP's preset policies belong beside the checkout ({path} is missing)"
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def requests_around(*policies: dict) -> list[AuditRequest]:
    """Every combination of verb, group, resource, subresource, name and namespace the policies name, and more."""
    by_group: dict[str, set[str]] = {"": {"nodes", "services", "namespaces", "serviceaccounts"},
                                     "batch": {"jobs"}, "rbac.authorization.k8s.io": {"clusterroles"},
                                     "templates.gatekeeper.sh": {"constrainttemplates", "k8srequiredlabels"}}
    subresources = {"", "status", "scale", "eviction", "binding", "ephemeralcontainers", "resize", "log", "exec",
                    "attach", "portforward", "proxy", "token"}
    names = {"", "x", "usersshkeys"}
    for policy in policies:
        for rule in policy["rules"]:
            for gr in rule.get("resources") or []:
                group = by_group.setdefault(gr.get("group", ""), set())
                for res in gr.get("resources") or []:
                    resource, _, sub = res.partition("/")
                    group.add(resource)
                    subresources.add(sub)
                names.update(gr.get("resourceNames") or [])
    subresources.discard("*")
    verbs = ["get", "list", "watch", "create", "update", "patch", "delete", "deletecollection"]
    found = [R(verb, resource, sub, group=group, namespace=ns, name=name)
             for group, group_resources in sorted(by_group.items())
             for resource, sub, verb, ns, name in itertools.product(
                 sorted(group_resources - {"*"}), sorted(subresources), verbs, ("", "kube-system"), sorted(names))]
    found += [R(verb, path=path) for verb in ("get", "post") for path in ("/healthz", "/version", "/metrics", "/api")]
    return found


@pytest.mark.parametrize("name", presets.PRESETS)
def test_every_preset_records_at_least_what_kkps_preset_of_that_name_records(name):
    kkp, ours = kkp_policy(name), presets.policy(name)
    short = []
    for req in requests_around(kkp, ours):
        theirs, mine = evaluate(kkp, req).level, evaluate(ours, req).level
        if RANK[mine] < RANK[theirs]:
            short.append((req, theirs, mine))
    # The one exception, by design: KKP records changes of its "usersshkeys" Secret in full; a Secret's
    # body never reaches our logs, only its metadata.
    exceptions = [(req, theirs, mine) for req, theirs, mine in short
                  if req.resource == "secrets" and req.name == "usersshkeys"]
    assert short == exceptions
    assert all(theirs == "RequestResponse" and mine == "Metadata" for _, theirs, mine in exceptions)
    if name == "metadata":
        assert exceptions == [] and ours == kkp
    else:
        assert {(req.verb, req.subresource) for req, _, _ in exceptions} == {
            (verb, "") for verb in ("create", "update", "patch", "delete")}
