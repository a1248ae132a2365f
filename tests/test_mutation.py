"""Which Pods get a patch: the mutating decision."""

import pytest

from tests.helpers import bare_pod, cluster, seed
from webhook.core.mutation import decide_mutation
from webhook.core.options import Options
from webhook.core.validation.admission import check_admission
from webhook.core.validation.context import Context

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
    ("CREATE", no_apiserver(), ON, None, False, False, "unverifiable"),
    ("CREATE", no_apiserver(), cluster(), None, True, False, "audit-off"),
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


def test_missing_apiserver_container_is_refused_for_an_audited_cluster():
    answer = decide_mutation("CREATE", no_apiserver(), ON, None, OPTS)
    assert (answer.allowed, answer.code) == (False, 403)
    assert answer.message == ('audit-webhook: cluster "abc" needs audit logging, but this Pod cannot be shown to run '
                              'with it: it has no container named "apiserver" for the audit flags')


def _with(**changes):
    pod = bare_pod()
    api = pod["spec"]["containers"][0]
    for key, value in changes.items():
        if key == "initContainers":
            pod["spec"]["initContainers"] = value
        elif key == "extra_container":
            pod["spec"]["containers"].append(value)
        else:
            api[key] = value
    return pod


@pytest.mark.parametrize(("pod", "why"), [
    (_with(command=["sh", "-c", 'exec kube-apiserver "$@" --audit-policy-file=/tmp/none', "--"]),
     'container "apiserver" runs \'sh\', not kube-apiserver'),
    (_with(command=["/bin/bash", "-c", "kube-apiserver"]), "runs 'bash'"),
    (_with(initContainers=[{"name": "apiserver", "image": "kube-apiserver", "restartPolicy": "Always"}]),
     'initContainer "apiserver" runs kube-apiserver'),
    (_with(initContainers=[{"name": "side", "image": "x", "command": ["/usr/local/bin/kube-apiserver"]}]),
     'initContainer "side" runs kube-apiserver'),
    (_with(extra_container={"name": "api2", "image": "x", "command": ["kube-apiserver", "--secure-port=7443"]}),
     'container "api2" runs kube-apiserver'),
])
def test_a_pod_whose_flags_cannot_reach_kube_apiserver_is_refused(pod, why):
    answer = decide_mutation("CREATE", pod, ON, None, OPTS)
    assert not answer.allowed and answer.reason == "unverifiable"
    assert why in answer.message


@pytest.mark.parametrize(("args", "why"), [
    # pflag gives a non-boolean flag without `=` the next token, whatever it looks like.
    (["--external-hostname", "--audit-policy-file=x", "--secure-port", "6443"],
     '"--audit-policy-file=/etc/kubernetes/audit/policy.yaml" would be read as the value of --external-hostname'),
    (["--external_hostname", "--audit_log_path", "-"], "would be read as the value of --external-hostname"),
    (["-v", "--audit-log-maxage=1"], "would be read as the value of -v"),
    # Ours are appended at the end: a dangling flag there would take the first of them.
    (["--secure-port=6443", "--etcd-servers"], "would be read as the value of --etcd-servers"),
    # After `--` nothing is a flag any more.
    (["--secure-port=6443", "--", "--audit-policy-file=x"], "would be '(unset)'"),
])
def test_a_flag_of_ours_that_kube_apiserver_would_read_as_a_value_is_refused(args, why):
    answer = decide_mutation("CREATE", bare_pod(args=args), ON, None, OPTS)
    assert not answer.allowed and answer.reason == "unverifiable", answer
    assert why in answer.message, answer.message


@pytest.mark.parametrize(("env", "args", "why"), [
    # Kubernetes expands $(NAME) before kube-apiserver reads its flags.
    # Ours is rewritten where it stands; the expanded one after it would win.
    ([{"name": "X", "value": "--audit-policy-file=/tmp/none"}], ["--audit-policy-file=/p", "$(X)"],
     "--audit-policy-file would be '/tmp/none'"),
    ([{"name": "X", "value": "--external-hostname"}], ["$(X)"], "would be read as the value of --external-hostname"),
    # The red team's two shapes: a later empty value, and a flag that swallows ours.
    ([{"name": "P", "value": "--audit-policy-file="}, {"name": "L", "value": "--audit-log-path="}],
     ["--audit-policy-file=/x", "--audit-log-path=/x", "$(P)", "$(L)"], "would be ''"),
    ([{"name": "S", "value": "--external-hostname"}], ["$(S)", "--audit-policy-file=/x", "$(S)", "--audit-log-path=/x"],
     "would be read as the value of --external-hostname"),
    ([{"name": "X", "valueFrom": {"configMapKeyRef": {"name": "c", "key": "k"}}}], ["$(X)"],
     '"$(X)" in its command line is filled in from the environment at run time'),
])
def test_flags_the_environment_fills_in_are_read_as_kube_apiserver_gets_them(env, args, why):
    pod = bare_pod(args=args)
    pod["spec"]["containers"][0]["env"] = env
    answer = decide_mutation("CREATE", pod, ON, None, OPTS)
    assert not answer.allowed and answer.reason == "unverifiable", answer
    assert why in answer.message, answer.message


def test_references_that_stay_literal_or_are_escaped_are_fine():
    pod = bare_pod(args=["--external-hostname=$(UNDEFINED)", "--etcd-prefix=$$(X)", "--secure-port=$(PORT)"])
    pod["spec"]["containers"][0]["env"] = [{"name": "PORT", "value": "6443"}]
    assert decide_mutation("CREATE", pod, ON, None, OPTS).reason == "injected"
    pod["spec"]["containers"][0]["envFrom"] = [{"configMapRef": {"name": "c"}}]  # UNDEFINED may come from it
    assert decide_mutation("CREATE", pod, ON, None, OPTS).reason == "unverifiable"


@pytest.mark.parametrize("args", [
    ["--profiling", "--audit-policy-file=x"],               # a boolean flag takes no value
    ["--allow-privileged", "--audit_log_path", "/x"],        # ours in two tokens, after a boolean
    ["--external-hostname", "api.example", "--audit-policy-file", "x", "-v", "4"],
    ["--feature-gates=A=true", "--v=2"],
])
def test_flags_kube_apiserver_reads_as_ours_are_injected(args):
    from webhook.core.apiserver_flags import parse, tokens_of
    from webhook.core.patch import apply_patch

    answer = decide_mutation("CREATE", bare_pod(args=args), ON, None, OPTS)
    assert answer.allowed and answer.reason == "injected", answer.message
    pod = apply_patch(bare_pod(args=args), answer.patch)
    values = parse(tokens_of(pod["spec"]["containers"][0])).values
    assert values["--audit-policy-file"] == "/etc/kubernetes/audit/policy.yaml"
    assert values["--audit-log-path"] == "/var/log/kubernetes/audit/audit.log"


def test_kube_apiserver_by_path_or_by_the_image_entrypoint_is_fine():
    for pod in (_with(command=["/usr/local/bin/kube-apiserver"]), _with(command=None)):
        assert decide_mutation("CREATE", pod, ON, None, OPTS).reason == "injected"


def test_a_stored_cluster_that_breaks_a_later_policy_rule_is_still_injected_with_a_warning():
    """Tightening an admission-policy rule (here the sidecar ceiling) never stops a running control plane."""
    big = cluster(audit={"enabled": True, "sidecar": {"resources": {"limits": {"cpu": "4"}}}})
    answer = decide_mutation("CREATE", bare_pod(), big, None, Options.default())
    assert answer.allowed and answer.reason == "injected" and answer.patch
    assert answer.warnings == ["spec.auditLogging.sidecar.resources.limits[cpu]: breaks a rule the Cluster predates, "
                               'injected anyway (please fix): Invalid value: "4": must be at most 1, the ceiling the '
                               "operator sets for audit sidecars [sidecar.resource-ceiling]"]
    assert answer.warning_rules == ["sidecar.resource-ceiling"]
    # The same settings are refused when the Cluster itself is admitted.
    assert check_admission(big, None, Context(secrets={})).errors


def test_a_stored_cluster_whose_settings_are_unsafe_to_render_is_not_injected():
    lua = cluster(audit={"enabled": True, "sidecar": {"config": {"filters": [
        {"Name": "lua", "Match": "*", "code": "function f() os.execute('id') end", "call": "f"}]}}})
    answer = decide_mutation("CREATE", bare_pod(), lua, None, Options.default())
    assert not answer.allowed and answer.reason == "invalid-settings"
    assert '"lua" runs Lua code' in answer.message
