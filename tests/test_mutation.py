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


class _Counted:
    """decide_mutation, counting its calls."""

    def __init__(self):
        self.calls = 0

    def __call__(self, *args, **kwargs):
        self.calls += 1
        return decide_mutation(*args, **kwargs)


def _memo_request(pod, uid="u1", operation="CREATE"):
    from webhook.core.review import AdmissionRequest

    return AdmissionRequest.model_validate({"uid": uid, "kind": {"version": "v1", "kind": "Pod"},
                                            "namespace": "cluster-abc", "operation": operation, "object": pod})


def _memo_case(monkeypatch):
    from webhook.adapters.store import MemoryStore
    from webhook.core import decide
    from webhook.core.snapshot import Snapshot

    counted = _Counted()
    monkeypatch.setattr(decide, "decide_mutation", counted)
    return decide, MemoryStore(Snapshot.of([cluster(audit={"enabled": True})])), counted


def _renamed_arg(pod):
    pod["spec"]["containers"][0].setdefault("args", []).append("--v=4")
    return pod


def _nan_label(pod):
    pod["metadata"]["labels"]["x"] = float("nan")
    return pod


def _null_label(pod):
    pod["metadata"]["labels"]["x"] = None
    return pod


@pytest.mark.parametrize(("first", "second", "decided"), [
    (bare_pod, bare_pod, 1),  # the replicas of one ReplicaSet: one Pod to admission
    (bare_pod, lambda: _renamed_arg(bare_pod()), 2),  # any other byte is another Pod
    (lambda: _nan_label(bare_pod()), lambda: _null_label(bare_pod()), 2),  # NaN is not null
])
def test_the_memo_decides_each_distinct_pod_once(monkeypatch, first, second, decided):
    decide, store, counted = _memo_case(monkeypatch)
    cache, memo = decide.PreparedCache(), decide.InjectionMemo()
    a = decide.mutate_pod(_memo_request(first(), "u1"), store, OPTS, cache, memo)
    b = decide.mutate_pod(_memo_request(second(), "u2"), store, OPTS, cache, memo)
    assert counted.calls == decided
    assert a.reason == b.reason == "injected"
    assert (a is b) == (decided == 1)


def test_a_changed_cluster_misses_the_memo_and_the_memo_is_bounded(monkeypatch):
    from webhook.adapters.store import MemoryStore
    from webhook.core.snapshot import Snapshot

    decide, store, counted = _memo_case(monkeypatch)
    cache, memo = decide.PreparedCache(), decide.InjectionMemo(size=2)
    first = decide.mutate_pod(_memo_request(bare_pod()), store, OPTS, cache, memo)
    store = MemoryStore(Snapshot.of([cluster(audit={"enabled": True, "policyPreset": "minimal"})]))
    second = decide.mutate_pod(_memo_request(bare_pod()), store, OPTS, cache, memo)
    assert counted.calls == 2 and first.patch != second.patch  # the new settings, not the remembered ones
    for i in range(3):
        decide.mutate_pod(_memo_request(_renamed_arg(bare_pod()) if i else bare_pod()), store, OPTS, cache, memo)
    assert len(memo._entries) == 2


def test_large_or_unencodable_pods_are_decided_but_not_remembered(monkeypatch):
    """An answer can quote its Pod: the memo holds none of a Pod past its size bound, and a Pod
    JSON cannot encode (a lone surrogate) is still decided."""
    decide, store, counted = _memo_case(monkeypatch)
    memo = decide.InjectionMemo(max_pod_bytes=4096)
    big = bare_pod()
    big["spec"]["initContainers"] = [{"name": "x" * 8192, "image": "busybox"}]
    odd = bare_pod()
    odd["metadata"]["labels"]["x"] = "\ud800"
    for pod in (big, big, odd, odd):
        assert decide.mutate_pod(_memo_request(pod), store, OPTS, decide.PreparedCache(), memo).reason
    assert counted.calls == 4 and not memo._entries


@pytest.mark.parametrize("operation", ["UPDATE", "DELETE"])
def test_only_creates_of_apiserver_pods_are_remembered(monkeypatch, operation):
    decide, store, counted = _memo_case(monkeypatch)
    memo = decide.InjectionMemo()
    for _ in range(2):
        decide.mutate_pod(_memo_request(bare_pod(), operation=operation), store, OPTS, decide.PreparedCache(), memo)
        decide.mutate_pod(_memo_request(unlabelled()), store, OPTS, decide.PreparedCache(), memo)
    assert counted.calls == 4 and not memo._entries
