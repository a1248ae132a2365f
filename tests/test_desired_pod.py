"""What the mutation puts into an apiserver Pod, and what it leaves alone."""

import copy

import pytest

from tests.helpers import bare_pod, cluster, container, kkp_pod, seed, webhook_backend
from webhook.core import names
from webhook.core.desired_pod import NoApiserverContainer, desired_pod, injection_for, set_flags
from webhook.core.desired_pod import inject as inject_with_patch
from webhook.core.options import Options
from webhook.core.settings import effective_settings

OPTS = Options.default()
AUDIT_ON = cluster(name="c1", audit={"enabled": True, "policyPreset": "minimal"})
WEBHOOK_ONLY = cluster(name="c1", audit={"webhookBackend": webhook_backend("wh-secret", backoff="7s")})
BOTH = cluster(name="c1", audit={"enabled": True, "webhookBackend": webhook_backend("wh-secret")})
DC_WEBHOOK = (cluster(name="c1"), seed({"dc1": {"enforcedAuditWebhookSettings": {
    "auditWebhookConfig": {"name": "dc-secret", "namespace": "kubermatic"}, "auditWebhookInitialBackoff": "15s"}}}))


def inject(pod, obj, seed_obj=None, options=OPTS):
    return desired_pod(pod, injection_for(effective_settings(obj, seed_obj), options))


def patch_of(pod, obj):
    return inject_with_patch(pod, injection_for(effective_settings(obj, None), OPTS))[1]


def volume_names(pod):
    return [v["name"] for v in pod["spec"]["volumes"]]


def mounts(c):
    return [(m["name"], m["mountPath"], m.get("readOnly", False)) for m in c.get("volumeMounts", [])]


def test_kkp_pod_reuses_existing_volumes_mounts_and_flags():
    pod = kkp_pod()
    out = inject(pod, AUDIT_ON)
    # Containers keep their order; the sidecar comes last.
    assert [c["name"] for c in out["spec"]["containers"]] == [
        "konnectivity-server", "apiserver", "dnat-controller", "audit-logs"]
    # Existing volumes are reused, extras (defaultMode) kept, one new volume appended.
    assert volume_names(out) == ["apiserver-tls", "audit-config", "audit-log", "konnectivity-uds", "audit-logs-fluentbit"]
    assert out["spec"]["volumes"][1] == {"name": "audit-config", "configMap": {"name": "audit-config", "defaultMode": 420}}
    api = container(out, "apiserver")
    assert mounts(api) == mounts(container(pod, "apiserver"))
    args = api["args"]
    # Two-token flags are replaced in place, never duplicated.
    for flag, value in [("--audit-log-path", "/var/log/kubernetes/audit/audit.log"), ("--audit-log-maxage", "30"),
                        ("--audit-log-maxbackup", "3"), ("--audit-log-maxsize", "100")]:
        assert sum(1 for a in args if a == flag or a.startswith(flag + "=")) == 1
        assert args[args.index(flag) + 1] == value
    assert args[-1] == "--audit-policy-file=/etc/kubernetes/audit/policy.yaml"
    # Every foreign token keeps its place.
    original = container(pod, "apiserver")["args"]
    assert args[: len(original)] == [
        {"7": "30", "10": "3"}.get(a, a) if i in (original.index("--audit-log-maxage") + 1,
                                              original.index("--audit-log-maxbackup") + 1) else a
        for i, a in enumerate(original)]
    assert out["metadata"]["annotations"]["kubermatic.k8c.io/last-restart"] == ""
    assert len(out["metadata"]["annotations"][names.SETTINGS_HASH_ANNOTATION]) == 16


def test_sidecar_is_fluent_bit_with_its_mounts_env_and_default_resources():
    out = inject(bare_pod(), cluster(name="c1", audit={
        "enabled": True, "sidecar": {"extraEnvs": [{"name": "TEAM", "value": "payments"}]}}))
    sidecar = container(out, "audit-logs")
    assert sidecar["image"].startswith("docker.io/fluent/fluent-bit:4.")
    assert sidecar["command"] == ["/fluent-bit/bin/fluent-bit"]
    assert sidecar["args"] == ["-c", "/etc/fluent-bit/fluent-bit.conf"]
    assert mounts(sidecar) == [("audit-log", "/var/log/kubernetes/audit", False),
                               ("audit-logs-fluentbit", "/etc/fluent-bit/", True)]
    assert sidecar["env"] == [{"name": "CLUSTER_ID", "value": "c1"}, {"name": "TEAM", "value": "payments"}]
    assert sidecar["resources"] == {"requests": {"memory": "10Mi", "cpu": "5m"},
                                    "limits": {"memory": "60Mi", "cpu": "50m"}}
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes["audit-log"] == {"name": "audit-log", "emptyDir": {}}
    assert volumes["audit-config"] == {"name": "audit-config", "configMap": {"name": "audit-config"}}
    assert volumes["audit-logs-fluentbit"] == {"name": "audit-logs-fluentbit",
                                               "secret": {"secretName": "audit-logs-fluentbit"}}
    assert mounts(container(out, "apiserver")) == [("audit-config", "/etc/kubernetes/audit", True),
                                                   ("audit-log", "/var/log/kubernetes/audit", False)]


def test_given_sidecar_resources_replace_the_defaults_one_by_one():
    """Merged with the defaults, so a sidecar always has limits (an empty map or requests alone included)."""
    res = {"requests": {"cpu": "20m"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    out = inject(bare_pod(), cluster(audit={"enabled": True, "sidecar": {"resources": res}}))
    assert container(out, "audit-logs")["resources"] == {"requests": {"memory": "10Mi", "cpu": "20m"},
                                                         "limits": {"memory": "1Gi", "cpu": "1"}}
    out = inject(bare_pod(), cluster(audit={"enabled": True, "sidecar": {"resources": {}}}))
    assert container(out, "audit-logs")["resources"]["limits"] == {"memory": "60Mi", "cpu": "50m"}


def test_yaml_format_points_the_sidecar_at_the_yaml_file():
    out = inject(bare_pod(), AUDIT_ON, options=OPTS.model_copy(update={"fluentbit_format": "yaml"}))
    assert container(out, "audit-logs")["args"] == ["-c", "/etc/fluent-bit/fluent-bit.yaml"]


def test_webhook_only_adds_backend_without_sidecar():
    out = inject(bare_pod(args=["--foo=bar"]), WEBHOOK_ONLY)
    assert [c["name"] for c in out["spec"]["containers"]] == ["apiserver"]
    assert out["spec"]["volumes"] == [
        {"name": "audit-config", "configMap": {"name": "audit-config"}},
        {"name": "audit-webhook-backend", "secret": {"secretName": "wh-secret"}},
    ]
    api = container(out, "apiserver")
    assert mounts(api) == [("audit-config", "/etc/kubernetes/audit", True),
                           ("audit-webhook-backend", "/etc/kubernetes/audit/webhook", True)]
    assert api["args"] == ["--foo=bar", "--audit-policy-file=/etc/kubernetes/audit/policy.yaml",
                           "--audit-webhook-config-file=/etc/kubernetes/audit/webhook/webhook.yaml",
                           "--audit-webhook-initial-backoff=7s"]


def test_both_share_audit_config_and_the_policy_flag():
    out = inject(bare_pod(), BOTH)
    assert volume_names(out) == ["audit-log", "audit-config", "audit-logs-fluentbit", "audit-webhook-backend"]
    args = container(out, "apiserver")["args"]
    assert sum(a.startswith("--audit-policy-file") for a in args) == 1
    assert "--audit-webhook-initial-backoff=10s" in args
    assert [m[1] for m in mounts(container(out, "apiserver"))].count("/etc/kubernetes/audit") == 1


def test_datacenter_webhook_mounts_the_copy_by_name():
    out = inject(bare_pod(), *DC_WEBHOOK)
    assert {"name": "audit-webhook-backend", "secret": {"secretName": "dc-secret"}} in out["spec"]["volumes"]
    assert "--audit-webhook-initial-backoff=15s" in container(out, "apiserver")["args"]


@pytest.mark.parametrize(("before", "after"), [
    # --flag=value stays in that form, in place
    ({"args": ["--a", "--audit-log-maxage=5", "--b"]}, {"args": ["--a", "--audit-log-maxage=30", "--b"]}),
    # two tokens stay two tokens
    ({"args": ["--audit-log-maxage", "5", "--b"]}, {"args": ["--audit-log-maxage", "30", "--b"]}),
    # flags in command are replaced there; nothing new in args for them
    ({"command": ["kube-apiserver", "--audit-log-maxage=5"]}, {"command": ["kube-apiserver", "--audit-log-maxage=30"]}),
    # a dangling flag gets its value attached
    ({"args": ["--b", "--audit-log-maxage"]}, {"args": ["--b", "--audit-log-maxage=30"]}),
    # a flag given twice: the first is ours, the later one (which kube-apiserver would take) is dropped
    ({"args": ["--audit-log-maxage=1", "--audit-log-maxage", "2"]}, {"args": ["--audit-log-maxage=30"]}),
    # kube-apiserver reads `_` as `-`: another spelling is the same flag, and is ours in place
    ({"args": ["--a", "--audit_log_maxage=7", "--b"]}, {"args": ["--a", "--audit-log-maxage=30", "--b"]}),
    # a later spelling in args after ours in command cannot win
    ({"command": ["kube-apiserver", "--audit-log-maxage=30"], "args": ["--audit_log_maxage", "0", "--b"]},
     {"command": ["kube-apiserver", "--audit-log-maxage=30"], "args": ["--b"]}),
    # a flag whose name merely starts like ours is foreign
    ({"args": ["--audit-log-maxage-extra=1"]}, {"args": ["--audit-log-maxage-extra=1", "--audit-log-maxage=30"]}),
    # no args yet
    ({"command": ["kube-apiserver"]}, {"command": ["kube-apiserver"], "args": ["--audit-log-maxage=30"]}),
])
def test_set_flags(before, after):
    c = copy.deepcopy(before)
    set_flags(c, {"--audit-log-maxage": "30"})
    assert c == after


def test_an_owned_volume_with_another_source_is_repointed_in_place():
    pod = bare_pod()
    pod["spec"]["volumes"] = [{"name": "x", "emptyDir": {}},
                              {"name": "audit-config", "configMap": {"name": "something-else"}},
                              {"name": "audit-log", "hostPath": {"path": "/var/log"}}]
    out = inject(pod, AUDIT_ON)
    assert out["spec"]["volumes"][:3] == [{"name": "x", "emptyDir": {}},
                                          {"name": "audit-config", "configMap": {"name": "audit-config"}},
                                          {"name": "audit-log", "emptyDir": {}}]


def test_an_existing_mount_at_our_path_is_taken_over_not_duplicated():
    pod = bare_pod(volumeMounts=[{"name": "old-config", "mountPath": "/etc/kubernetes/audit/"},
                                 {"name": "audit-log", "mountPath": "/var/log/kubernetes/audit", "readOnly": True}])
    out = inject(pod, AUDIT_ON)
    assert mounts(container(out, "apiserver")) == [("audit-config", "/etc/kubernetes/audit/", True),
                                                   ("audit-log", "/var/log/kubernetes/audit", False)]


def test_an_existing_sidecar_keeps_what_kube_apiserver_defaulted():
    once = copy.deepcopy(inject(bare_pod(), AUDIT_ON))  # a Pod as the API returns it: its own objects
    sidecar = container(once, "audit-logs")
    sidecar.update({"terminationMessagePath": "/dev/termination-log", "imagePullPolicy": "IfNotPresent"})
    sidecar["resources"]["limits"]["cpu"] = "0.05"  # the same quantity, written another way
    sidecar["resources"]["limits"]["ephemeral-storage"] = "1Gi"  # added by a LimitRange
    twice = inject(once, AUDIT_ON)
    assert twice == once


def test_a_stale_sidecar_is_brought_to_the_desired_state():
    pod = bare_pod()
    pod["spec"]["containers"].insert(0, {"name": "audit-logs", "image": "old:1", "args": ["-x"],
                                         "env": [{"name": "CLUSTER_ID", "valueFrom": {"fieldRef": {}}},
                                                 {"name": "KEEP", "value": "1"}]})
    out = inject(pod, AUDIT_ON)
    sidecar = out["spec"]["containers"][0]
    assert sidecar["image"] == OPTS.sidecar_image
    assert sidecar["args"] == ["-c", "/etc/fluent-bit/fluent-bit.conf"]
    assert sidecar["env"] == [{"name": "CLUSTER_ID", "value": "c1"}, {"name": "KEEP", "value": "1"}]
    assert [c["name"] for c in out["spec"]["containers"]] == ["audit-logs", "apiserver"]


@pytest.mark.parametrize("broken", [{"resources": None}, {"resources": {"limits": None, "requests": "x"}},
                                    {"env": None}, {"resources": [], "env": {"a": 1}}])
def test_a_stale_sidecar_with_null_maps_gets_ours(broken):
    """A `null` (or another shape) where the sidecar's resources or env go is replaced, not a 500."""
    pod = bare_pod()
    pod["spec"]["containers"].append({"name": "audit-logs", "image": "old:1", **broken})
    sidecar = container(inject(pod, AUDIT_ON), "audit-logs")
    assert sidecar["resources"] == container(inject(bare_pod(), AUDIT_ON), "audit-logs")["resources"]
    assert sidecar["env"] == [{"name": "CLUSTER_ID", "value": "c1"}]


def test_no_apiserver_container_is_reported():
    pod = bare_pod()
    pod["spec"]["containers"][0]["name"] = "kube-apiserver"
    with pytest.raises(NoApiserverContainer):
        inject(pod, AUDIT_ON)


@pytest.mark.parametrize("obj", [AUDIT_ON, WEBHOOK_ONLY, BOTH], ids=["audit", "webhook", "both"])
@pytest.mark.parametrize("pod_factory", [kkp_pod, bare_pod], ids=["kkp", "bare"])
def test_second_pass_changes_nothing(obj, pod_factory):
    once = inject(pod_factory(), obj)
    assert inject(once, obj) == once
    assert patch_of(once, obj) == []


OWNED_PREFIXES = ("/metadata/annotations", "/spec/volumes", "/spec/containers")


@pytest.mark.parametrize("obj", [AUDIT_ON, WEBHOOK_ONLY, BOTH], ids=["audit", "webhook", "both"])
def test_patch_touches_only_what_we_own(obj):
    pod = kkp_pod()
    ops = patch_of(pod, obj)
    assert ops
    for op in ops:
        assert op["path"].startswith(OWNED_PREFIXES), op
        if op["op"] == "remove":
            pytest.fail(f"the mutation removed something: {op}")
    # Containers other than apiserver (index 1) are never touched; new ones are appended.
    for op in ops:
        if op["path"].startswith("/spec/containers/"):
            index = int(op["path"].split("/")[3])
            assert index == 1 or (index >= 3 and op["op"] == "add"), op


def test_mounts_inside_our_folders_and_extras_on_our_volumes_are_replaced_by_ours():
    pod = bare_pod()
    pod["spec"]["volumes"] = [
        {"name": "audit-log", "emptyDir": {"sizeLimit": "1Ki"}},
        {"name": "audit-config", "configMap": {"name": "audit-config", "defaultMode": 420,
                                              "items": [{"key": "other.yaml", "path": "policy.yaml"}]}},
        {"name": "tenant", "configMap": {"name": "tenant-policy"}},
    ]
    api = container(pod, "apiserver")
    api["volumeMounts"] = [{"name": "tenant", "mountPath": "/etc/kubernetes/audit/policy.yaml",
                            "subPath": "policy.yaml"},
                           {"name": "tenant", "mountPath": "/var/log/kubernetes/audit/audit.log", "subPath": "x"},
                           {"name": "tenant", "mountPath": "/etc/kubernetes/auditx"}]
    out = inject(pod, cluster(audit={"enabled": True}))
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    assert volumes["audit-log"] == {"name": "audit-log", "emptyDir": {}}
    assert volumes["audit-config"] == {"name": "audit-config", "configMap": {"name": "audit-config"}}
    assert volumes["tenant"] == {"name": "tenant", "configMap": {"name": "tenant-policy"}}  # not ours: kept
    paths = [m["mountPath"] for m in container(out, "apiserver")["volumeMounts"]]
    assert paths == ["/etc/kubernetes/auditx", "/etc/kubernetes/audit", "/var/log/kubernetes/audit"]
    # kube-apiserver's own defaultMode on our volume is fine, and nothing changes a second time.
    again = inject(out, cluster(audit={"enabled": True}))
    assert again == out
