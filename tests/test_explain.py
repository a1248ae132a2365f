"""`audit-webhook explain`: every row of the preset table through the command, plus its other inputs."""

from __future__ import annotations

import json

import pytest
import yaml

from tests.test_presets import ROWS
from webhook.adapters.cli import main
from webhook.core import presets
from webhook.core.explain import known_groups


def explain(capsys, *argv):
    code = main(["explain", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def request_args(req):
    args = ["--verb", req.verb]
    if req.resource:
        args += ["--resource", f"{req.resource}/{req.subresource}" if req.subresource else req.resource,
                 "--group", req.group, "--namespace", req.namespace, "--name", req.name]
        if req.group not in known_groups():
            args.append("--custom-resource")
    else:
        args += ["--path", req.path]
    return args


@pytest.mark.parametrize(("req", "expected"), [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
@pytest.mark.parametrize("name", presets.PRESETS)
def test_every_row_of_the_preset_table(capsys, req, expected, name):
    code, out, _ = explain(capsys, "--preset", name, *request_args(req), "-o", "json")
    assert code == 0
    answer = json.loads(out)
    assert answer["level"] == expected[name]
    policy = presets.policy(name)
    assert answer["rule"] == policy["rules"][answer["rule_index"]]


@pytest.mark.parametrize(("argv", "level", "index"), [
    (["--preset", "minimal", "--verb", "patch", "--resource", "pods/status"], "RequestResponse", 3),
    (["--preset", "recommended", "--verb", "create", "--resource", "pods", "--subresource", "eviction"],
     "RequestResponse", 3),
    (["--preset", "minimal", "--verb", "patch", "--resource", "machinedeployments/scale", "--group", "cluster.k8s.io"],
     "RequestResponse", 3),
    (["--preset", "minimal", "--verb", "update", "--resource", "secrets", "--name", "usersshkeys"], "Metadata", 0),
    (["--preset", "metadata", "--verb", "patch", "--resource", "pods/status"], "Metadata", 0),
])
def test_text_output_of_pod_writes_machines_and_secrets(capsys, argv, level, index):
    code, out, _ = explain(capsys, *argv)
    assert code == 0
    assert out.startswith(f'level: {level}\nrule:  rules[{index}] of preset "{argv[1]}"\n')


def test_text_output_names_the_rule(capsys):
    code, out, _ = explain(capsys, "--preset", "minimal", "--verb", "get", "--resource", "pods", "--subresource", "log")
    assert code == 0
    assert out.startswith('level: Metadata\nrule:  rules[1] of preset "minimal"\n')
    assert "pods/log" in out


def test_a_policy_file_and_a_configmap_give_the_same_answer(capsys, tmp_path):
    policy = {"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [
        {"level": "RequestResponse", "users": ["alice"]},
        {"level": "None", "userGroups": ["system:nodes"]},
        {"level": "Metadata"}]}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(policy))
    (tmp_path / "cm.yaml").write_text(yaml.safe_dump({"apiVersion": "v1", "kind": "ConfigMap",
                                                      "metadata": {"name": "audit-config"},
                                                      "data": {"policy.yaml": yaml.safe_dump(policy)}}))
    for source in ("p.yaml", "cm.yaml"):
        code, out, _ = explain(capsys, "--policy", str(tmp_path / source), "--verb", "get", "--resource", "pods",
                               "--user", "bob", "--groups", "system:authenticated,system:nodes", "-o", "json")
        assert code == 0
        assert json.loads(out)["level"] == "None" and json.loads(out)["rule_index"] == 1
        code, out, _ = explain(capsys, "--policy", str(tmp_path / source), "--verb", "get", "--path", "/version",
                               "--user", "alice", "-o", "json")
        assert code == 0
        assert json.loads(out)["rule_index"] == 0


def test_no_matching_rule_means_not_logged(capsys, tmp_path):
    (tmp_path / "p.yaml").write_text(yaml.safe_dump({"apiVersion": "audit.k8s.io/v1", "kind": "Policy",
                                                     "rules": [{"level": "Metadata", "verbs": ["delete"]}]}))
    code, out, _ = explain(capsys, "--policy", str(tmp_path / "p.yaml"), "--verb", "get", "--resource", "pods")
    assert code == 0
    assert out.startswith("level: None\nrule:  none of the rules")


@pytest.mark.parametrize(("argv", "message"), [
    (["--preset", "minimal", "--verb", "get"], "give either --resource"),
    (["--preset", "minimal", "--verb", "get", "--resource", "pods", "--path", "/x"], "give either --resource"),
    # Never a silent answer for a request that was mistyped.
    (["--preset", "minimal", "--verb", "GET", "--resource", "pods"], '--verb: Unsupported value: "GET"'),
    (["--preset", "minimal", "--verb", "frobnicate", "--resource", "pods"], '--verb: Unsupported value: "frobnicate"'),
    (["--preset", "minimal", "--verb", "get", "--resource", "Pods"], 'resources are lowercase plurals, e.g. "pods"'),
    (["--preset", "minimal", "--verb", "get", "--resource", "widgets"], '"widgets" is not a resource explain knows'),
    (["--preset", "minimal", "--verb", "get", "--resource", "pods", "--group", "appz"],
     '--group: "appz" is not an API group explain knows ("pods" is in \'\'); for a custom resource, add '
     "--custom-resource"),
    # A well-known resource in a group not listed, or a resource no list holds: errors unless the user says
    # it is a custom resource.
    (["--preset", "minimal", "--verb", "get", "--resource", "pods", "--group", "frob.io"],
     '--group: "frob.io" is not an API group explain knows ("pods" is in \'\')'),
    (["--preset", "minimal", "--verb", "get", "--resource", "widgets", "--group", "example.com"],
     '--group: "example.com" is not an API group explain knows; for a custom resource, add --custom-resource'),
    (["--preset", "minimal", "--verb", "get", "--resource", "widgets", "--custom-resource"],
     "--custom-resource: give the custom resource's --group"),
    (["--preset", "minimal", "--verb", "get", "--resource", "widgets/exec", "--group", "example.com",
      "--custom-resource"], '--subresource: "exec": a custom resource has only the subresources "scale", "status"'),
    (["--preset", "minimal", "--verb", "get", "--resource", "pods/frob"],
     '--subresource: "frob" is not a subresource of pods (it has "attach", '),
    (["--preset", "minimal", "--verb", "get", "--resource", "secrets", "--subresource", "status"],
     '--subresource: "status" is not a subresource of secrets (it has none)'),
    (["--preset", "minimal", "--verb", "get", "--resource", "pods/exec", "--subresource", "log"],
     "--resource pods/exec and --subresource log: give the subresource once"),
    (["--preset", "minimal", "--verb", "get", "--resource", "pods", "--group", "apps"], 'not a resource of group "apps"'),
    (["--preset", "minimal", "--verb", "get", "--path", "healthz"], 'must start with "/"'),
])
def test_usage_errors(capsys, argv, message):
    code, _, err = explain(capsys, *argv)
    assert code == 2 and message in err


@pytest.mark.parametrize(("argv", "level"), [
    (["--resource", "widgets", "--group", "example.com", "--custom-resource"], "Metadata"),
    (["--resource", "widgets/status", "--group", "example.com", "--custom-resource"], "Metadata"),
    (["--resource", "pods/exec", "--subresource", "exec"], "RequestResponse"),
])
def test_a_custom_resource_is_explained_when_the_user_says_so(capsys, argv, level):
    code, out, err = explain(capsys, "--preset", "recommended", "--verb", "create", *argv)
    assert code == 0, err
    assert out.startswith(f"level: {level}\n")


def test_a_policy_kube_apiserver_would_refuse_is_reported(capsys, tmp_path):
    (tmp_path / "p.yaml").write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Loud\n")
    code, _, err = explain(capsys, "--policy", str(tmp_path / "p.yaml"), "--verb", "get", "--resource", "pods")
    assert code == 2
    assert 'rules[0].level: Unsupported value: "Loud"' in err


@pytest.mark.parametrize(("resource", "level"), [("deployments", "RequestResponse"), ("machines", "RequestResponse"),
                                                 ("pods/exec", "RequestResponse"), ("secrets", "Metadata")])
def test_a_well_known_resource_gets_its_group(capsys, resource, level):
    """`--resource deployments` without `--group` is apps' deployments, as in the README's table."""
    code, out, _ = explain(capsys, "--preset", "recommended", "--verb", "create", "--resource", resource)
    assert code == 0 and out.startswith(f"level: {level}\n")
