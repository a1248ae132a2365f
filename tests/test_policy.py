"""Audit policy validation (mirrors kube-apiserver) and rule matching (mirrors its checker)."""

import pytest
import yaml

from webhook.core.policy_eval import AuditRequest, evaluate, rule_matches
from webhook.core.validation.errors import Path
from webhook.core.validation.policy import check_policy

HEAD = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy"}


def errors(rules, **extra):
    return [str(e) for e in check_policy({**HEAD, **extra, "rules": rules}, Path("p")).errors]


@pytest.mark.parametrize(("rules", "extra", "expected"), [
    ([{"level": "Metadata"}], {}, []),
    ([{}], {}, ["p.rules[0].level: Required value: one of None, Metadata, Request, RequestResponse"]),
    ([{"level": "Verbose"}], {},
     ['p.rules[0].level: Unsupported value: "Verbose": supported values: "None", "Metadata", "Request", "RequestResponse"']),
    ([{"level": "metadata"}], {}, 1),
    ([{"level": "None", "omitStages": ["Done"]}], {},
     ['p.rules[0].omitStages[0]: Unsupported value: "Done": supported values: "RequestReceived", "ResponseStarted", '
      '"ResponseComplete", "Panic"']),
    ([{"level": "None"}], {"omitStages": ["RequestReceived", "Later"]}, 1),
    ([{"level": "None", "nonResourceURLs": ["healthz"]}], {},
     ['p.rules[0].nonResourceURLs[0]: Invalid value: "healthz": non-resource URL rules must begin with a \'/\' character']),
    ([{"level": "None", "nonResourceURLs": ["/a*b"]}], {},
     ['p.rules[0].nonResourceURLs[0]: Invalid value: "/a*b": non-resource URL wildcards \'*\' must be the final '
      "character of the rule"]),
    ([{"level": "None", "nonResourceURLs": ["*", "/healthz*"]}], {}, []),
    ([{"level": "None", "nonResourceURLs": ["/x"], "resources": [{"group": ""}]}], {},
     ['p.rules[0].nonResourceURLs: Invalid value: ["/x"]: rules cannot apply to both regular resources and '
      "non-resource URLs"]),
    ([{"level": "None", "nonResourceURLs": ["/x"], "namespaces": ["a"]}], {}, 1),
    ([{"level": "None", "resources": [{"group": "apps/v1"}]}], {},
     ['p.rules[0].resources[0].group: Invalid value: "apps/v1": must be "" (the core group), "*" or a lowercase '
      'DNS-1123 subdomain such as "apps" (no version)']),
    ([{"level": "None", "resources": [{"group": "*"}, {"group": "rbac.authorization.k8s.io"}, {"group": ""}]}], {}, []),
    ([{"level": "None", "resources": [{"group": "", "resourceNames": ["x"]}]}], {},
     ['p.rules[0].resources[0].resourceNames: Invalid value: ["x"]: using resourceNames requires at least one resource']),
    ([{"level": "None", "verbs": "get"}], {}, ['p.rules[0].verbs: Invalid value: "get": must be a list of strings']),
    ([], {}, ["p.rules: Required value: a policy needs at least one rule, e.g. `- level: Metadata`"]),
    ("x", {}, ["p.rules: Required value: a policy needs at least one rule, e.g. `- level: Metadata`"]),
])
def test_policy_rules(rules, extra, expected):
    got = errors(rules, **extra)
    if isinstance(expected, int):
        assert len(got) == expected, got
    else:
        assert got == expected


@pytest.mark.parametrize(("doc", "expected"), [
    ({"apiVersion": "audit.k8s.io/v1beta1", "kind": "Policy", "rules": [{"level": "None"}]},
     ['p.apiVersion: Unsupported value: "audit.k8s.io/v1beta1": supported values: "audit.k8s.io/v1"']),
    ({"apiVersion": "audit.k8s.io/v1", "kind": "Pod", "rules": [{"level": "None"}]},
     ['p.kind: Unsupported value: "Pod": supported values: "Policy"']),
    ("just text", ['p: Invalid value: "str": must be an audit.k8s.io/v1 Policy']),
])
def test_policy_document(doc, expected):
    assert [str(e) for e in check_policy(doc, Path("p")).errors] == expected


def test_unknown_fields_warn_but_pass():
    found = check_policy({**HEAD, "rules": [{"level": "None", "levle": "x"}], "extra": 1}, Path("p"))
    assert found.errors == []
    assert found.warnings == ["p.extra: unknown field, ignored by kube-apiserver",
                              "p.rules[0].levle: unknown field, ignored by kube-apiserver"]


R = AuditRequest


@pytest.mark.parametrize(("rule", "req", "matches"), [
    ({"level": "None"}, R("get", "pods"), True),
    ({"level": "None"}, R("get", path="/healthz"), True),
    ({"level": "None", "users": ["alice"]}, R("get", "pods", user="bob"), False),
    ({"level": "None", "userGroups": ["admins"]}, R("get", "pods", groups=("devs", "admins")), True),
    ({"level": "None", "verbs": ["get"]}, R("list", "pods"), False),
    ({"level": "None", "resources": [{"group": ""}]}, R("get", "deployments", group="apps"), False),
    ({"level": "None", "resources": [{"group": "*"}]}, R("get", "deployments", group="apps"), True),
    ({"level": "None", "resources": [{"group": "", "resources": ["pods"]}]}, R("get", "pods", "log"), False),
    ({"level": "None", "resources": [{"group": "", "resources": ["pods/*"]}]}, R("get", "pods", "log"), True),
    ({"level": "None", "resources": [{"group": "", "resources": ["*/log"]}]}, R("get", "pods", "log"), True),
    ({"level": "None", "resources": [{"group": "", "resources": ["*"]}]}, R("get", "pods", "log"), True),
    ({"level": "None", "resources": [{"group": "", "resources": ["pods"], "resourceNames": ["a"]}]},
     R("get", "pods", name="b"), False),
    ({"level": "None", "namespaces": ["kube-system"]}, R("get", "pods", namespace="default"), False),
    ({"level": "None", "namespaces": [""]}, R("get", "nodes"), True),
    ({"level": "None", "namespaces": ["a"]}, R("get", path="/x"), False),
    ({"level": "None", "resources": [{"group": ""}]}, R("get", path="/api"), False),
    ({"level": "None", "nonResourceURLs": ["/healthz*"]}, R("get", path="/healthz/etcd"), True),
    ({"level": "None", "nonResourceURLs": ["/healthz"]}, R("get", path="/healthz/etcd"), False),
    ({"level": "None", "nonResourceURLs": ["*"]}, R("get", "pods"), False),
])
def test_rule_matching(rule, req, matches):
    assert rule_matches(rule, req) is matches


def test_first_matching_rule_wins_and_no_match_is_none():
    policy = yaml.safe_load("""
rules:
- level: RequestResponse
  resources: [{group: "", resources: [secrets]}]
- level: Metadata
""")
    assert evaluate(policy, R("get", "secrets")).level == "RequestResponse"
    assert evaluate(policy, R("get", "secrets")).rule == 0
    assert evaluate(policy, R("get", "pods")).rule == 1
    assert evaluate({"rules": []}, R("get", "pods")).level == "None"
    assert evaluate({"rules": []}, R("get", "pods")).rule is None


def test_an_alias_bomb_is_refused_before_it_is_built():
    """A 300-byte "billion laughs" policy would expand to 387 million nodes; it is refused on the
    parser's events, without building it."""
    from webhook.core.validation.errors import Path as FieldPath
    from webhook.core.validation.policy import check_policy_text

    levels = ["a: &a [x,x,x,x,x,x,x,x,x]"]
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        levels.append(f"{name}: &{name} [" + ",".join([f"*{prev}"] * 9) + "]")
    bomb = "\n".join(levels) + "\n"
    errors = [str(e) for e in check_policy_text(bomb, FieldPath("data[policy.yaml]")).errors]
    assert errors == ['data[policy.yaml]: Invalid value: "<policy.yaml>": has more than 200000 nodes with its '
                      "aliases expanded"]
