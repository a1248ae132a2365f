"""One decision layer: the server, the offline commands and the reconciler give the same answers.

One table of objects goes through /validate (the live HTTPS server) and `check`, /mutate and
`render`, and the reconciler's plan and `files`; decisions and messages must be identical.
"""

from __future__ import annotations

import base64
import json

import pytest
import yaml

from tests.conftest import write_store
from tests.helpers import KUBECONFIG, kkp_pod, review, secret, seed
from webhook.adapters.cli import main
from webhook.core.egress import service_view
from webhook.core.mutation import prepare
from webhook.core.operator_config import OperatorConfig
from webhook.core.options import Options
from webhook.core.patch import apply_patch
from webhook.core.presets import policy_text
from webhook.core.reconcile_plan import (
    Owner,
    desired_state,
    egress_targets,
    ownership,
    plan,
    services_needed,
    webhook_sources,
)
from webhook.core.snapshot import Snapshot

SEED = seed({"dc1": {}, "dc-enforced": {"enforceAuditLogging": True}, "dc-hook": {"enforcedAuditWebhookSettings": {
    "auditWebhookConfig": {"name": "dc-wh", "namespace": "kubermatic"}}}})


def cluster(name, dc="dc1", **audit):
    return {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "metadata": {"name": name},
            "spec": {"cloud": {"dc": dc}, "auditLogging": audit}}


WEBHOOK = {"auditWebhookConfig": {"name": "wh"}, "auditWebhookInitialBackoff": "5s"}
CLUSTERS = [
    cluster("plain01", enabled=True, policyPreset="minimal"),
    cluster("hook01", webhookBackend=WEBHOOK),
    cluster("nosecret01", webhookBackend={"auditWebhookConfig": {"name": "missing"}}),
    cluster("bad01", enabled=True, policyPreset="verbose"),
    cluster("sink01", enabled=True, sidecar={"config": {"outputs": [
        {"Name": "forward", "Match": "*", "Host": "fluentd.logging.svc", "Port": "24224"}]}}),
    cluster("lua01", enabled=True, sidecar={"config": {"filters": [{"Name": "lua", "Match": "*", "code": "x"}]}}),
    cluster("off01", "dc-enforced"),
]
CONFIGMAPS = [
    # Preset-owned: an edit is refused (check used to say "ok" to this).
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audit-config", "namespace": "cluster-plain01"},
     "data": {"policy.yaml": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: None\n"}},
    {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "audit-config", "namespace": "cluster-hook01"},
     "data": {"policy.yaml": "apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n- level: Metadata\n"}},
]
SECRETS = [secret("cluster-hook01", "wh", {"webhook.yaml": KUBECONFIG})]
OBJECTS = [SEED, *CLUSTERS, *SECRETS]


# Changes to stored objects: `check` judges them as the UPDATE `kubectl apply` would send.
UPDATES = [
    # The red team's upd.yaml: a renamed webhook Secret that does not exist.
    cluster("hook01", webhookBackend={**WEBHOOK, "auditWebhookConfig": {"name": "renamed-missing"}}),
    cluster("plain01", enabled=True, policyPreset="recommended"),
    # The ratchet: a stored invalid value may stay while other fields change.
    {**cluster("bad01", enabled=True, policyPreset="verbose"), "metadata": {"name": "bad01", "labels": {"team": "a"}}},
]
NEW = [cluster("new01", enabled=True, policyPreset="minimal"), cluster("newbad01", enabled=True, policyPreset="x")]
STORED = {(o["kind"], o["metadata"]["name"]): o for o in [SEED, *CLUSTERS]}


def _check(capsys, root, obj, tmp_path):
    target = tmp_path / f"{obj['kind']}-{obj['metadata']['name']}-{obj['metadata'].get('namespace', '')}.yaml"
    target.write_text(yaml.safe_dump(obj, sort_keys=False))
    main(["check", str(target), "--source", str(root), "-o", "json"])
    return json.loads(capsys.readouterr().out)[0]


@pytest.mark.parametrize("obj", CLUSTERS + CONFIGMAPS + [SEED] + UPDATES + NEW,
                         ids=lambda o: f"{o['kind']}-{o['metadata']['name']}")
async def test_validate_and_check_decide_alike(start_server, capsys, tmp_path, obj):
    root = write_store(tmp_path / "store", OBJECTS)
    server = await start_server(root)
    kind, group = obj["kind"], "" if obj["kind"] == "ConfigMap" else "kubermatic.k8c.io"
    old = STORED.get((kind, obj["metadata"]["name"]))
    operation = "CREATE" if old is None else "UPDATE"
    status, body = await server.post("/validate", review(obj, kind=kind, group=group, operation=operation, old=old,
                                                         namespace=obj["metadata"].get("namespace", "")))
    assert status == 200
    answer = body["response"]
    offline = _check(capsys, root, obj, tmp_path)
    assert offline["operation"] == operation
    assert offline["allowed"] is answer["allowed"]
    assert offline["message"] == answer.get("status", {}).get("message", "")
    assert offline["warnings"] == answer.get("warnings", [])


@pytest.mark.parametrize("obj", CLUSTERS, ids=lambda o: o["metadata"]["name"])
async def test_mutate_and_render_decide_alike(start_server, capsys, tmp_path, obj):
    root = write_store(tmp_path / "store", OBJECTS)
    server = await start_server(root)
    namespace = f"cluster-{obj['metadata']['name']}"
    pod = kkp_pod()
    status, body = await server.post("/mutate", review(pod, namespace=namespace))
    assert status == 200
    answer = body["response"]
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SEED, sort_keys=False))
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(pod, sort_keys=False))
    code = main(["render", "--cluster", str(tmp_path / "c.yaml"), "--seed", str(tmp_path / "s.yaml"),
                 str(tmp_path / "p.yaml"), "-o", "json"])
    out, err = capsys.readouterr()
    assert (code == 0) is answer["allowed"]
    if answer["allowed"]:
        patch = json.loads(base64.b64decode(answer["patch"])) if "patch" in answer else []
        assert json.loads(out) == apply_patch(pod, patch)
    else:
        assert f"Error: {answer['status']['message']}" in err


# The reconciler's inputs for `files`: the datacenter's webhook Secret (copied into the cluster
# namespace), a sink's Service (its selector and targetPort make the egress peer), the operator's
# configuration (the allow-list opens the Service's namespace).
DC_HOOK = cluster("dchook01", "dc-hook")
SINK = cluster("svcsink01", enabled=True, sidecar={"config": {"outputs": [
    {"Name": "forward", "Match": "*", "Host": "fluentd.audit.svc", "Port": "24224"}]}})
SERVICE = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "fluentd", "namespace": "audit"},
           "spec": {"selector": {"app": "fluentd"}, "ports": [{"port": 24224, "targetPort": 24225}]}}
SOURCES = [*SECRETS, secret("kubermatic", "dc-wh", {"webhook.yaml": KUBECONFIG}), SERVICE]
CONFIG = {"egress": {"namespaces": ["audit"]}}
PARITY = [c for c in CLUSTERS if c["metadata"]["name"] not in ("bad01", "lua01")] + [DC_HOOK, SINK]


def _reconciler_creates(obj, mode, config, sources):
    """What the reconciler creates in an empty namespace: its inputs read from `sources` as it reads
    them from the API, then the one call it makes (desired_state) and its plan."""
    settings = prepare(obj, SEED, Options.default()).settings
    secrets = Snapshot.of(o for o in sources if o["kind"] == "Secret").secrets
    copy_ref, own_ref = webhook_sources(settings)
    source = secrets.get(copy_ref) if copy_ref else None
    webhook_config = (source or (secrets.get(own_ref) if own_ref else None) or {}).get("webhook.yaml")
    services = {(o["metadata"]["namespace"], o["metadata"]["name"]): service_view(o)
                for o in sources if o["kind"] == "Service"}
    needed = {ref: services.get(ref) for ref in services_needed(egress_targets(settings, webhook_config))}
    wanted = desired_state(settings, Options.default(), webhook_source=source, webhook_config=webhook_config,
                           services=needed, config=OperatorConfig.model_validate(config or {}),
                           webhook_namespace="audit-webhook", mode=mode, owner=Owner.of(obj))
    actions = plan(settings, wanted.objects, [], ownership(settings, Owner.of(obj), mode))
    assert {a.verb for a in actions} <= {"create"}
    return [a.obj for a in actions], copy_ref


@pytest.mark.parametrize("config", [None, CONFIG], ids=["no-config", "config"])
@pytest.mark.parametrize("mode", ["kkp", "standalone"])
@pytest.mark.parametrize("obj", PARITY, ids=lambda o: o["metadata"]["name"])
def test_the_reconcilers_plan_and_files_print_the_same_objects(capsys, tmp_path, obj, mode, config):
    """In an empty namespace the reconciler creates exactly what `files` prints, but for the copy of
    the datacenter's webhook Secret, which `files` names instead of printing."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SEED, sort_keys=False))
    (tmp_path / "src.yaml").write_text(yaml.safe_dump_all(SOURCES, sort_keys=False))
    args = ["files", "--cluster", str(tmp_path / "c.yaml"), "--seed", str(tmp_path / "s.yaml"), "--mode", mode,
            "--source", str(tmp_path / "src.yaml"), "-o", "json"]
    if config is not None:
        (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(config))
        args += ["--config", str(tmp_path / "cfg.yaml")]
    code = main(args)
    out, err = capsys.readouterr()
    printed = json.loads(out)["items"] if code == 0 else []
    created, copy_ref = _reconciler_creates(obj, mode, config, SOURCES)
    copies = [o for o in created if copy_ref and o["kind"] == "Secret" and o["metadata"]["name"] == copy_ref[1]]
    assert [o for o in created if o not in copies] == printed
    if copies:
        assert f"copies Secret {copy_ref[0]}/{copy_ref[1]}" in err
        assert base64.b64encode(KUBECONFIG.encode()).decode() not in out + err
    name = obj["metadata"]["name"]
    if name == "plain01" and mode == "standalone":
        assert created[0]["data"]["policy.yaml"] == policy_text("minimal")
    if name == "svcsink01":
        policies = [o for o in printed if o["kind"] == "NetworkPolicy"]
        if config is None:  # the allow-list is empty: nothing is opened, and `files` says why
            assert not policies and "egress to sidecar output 0 not opened" in err
        else:  # the Service's pods, on its targetPort, as the reconciler reads them from the Service
            peer, = policies[0]["spec"]["egress"][0]["to"]
            assert peer["podSelector"] == {"matchLabels": {"app": "fluentd"}}
            assert policies[0]["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 24225}]
    if name in ("hook01", "dchook01"):  # the backend's server, read from the given Secret, is opened when allowed
        policies = [o for o in printed if o["kind"] == "NetworkPolicy"]
        assert len(policies) == (config is not None)
        if policies:
            assert policies[0]["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 8443}]


def test_files_says_what_it_cannot_see(capsys, tmp_path):
    """Without the Service `files` allows its namespace on the Service port (as the reconciler does
    when the Service does not exist) and says what to pass; without the Secret, that the webhook
    backend's egress is left out."""
    for obj, name in ((SINK, "c1.yaml"), (DC_HOOK, "c2.yaml")):
        (tmp_path / name).write_text(yaml.safe_dump(obj, sort_keys=False))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SEED, sort_keys=False))
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(CONFIG))
    base = ["--seed", str(tmp_path / "s.yaml"), "--config", str(tmp_path / "cfg.yaml"), "-o", "json"]
    assert main(["files", "--cluster", str(tmp_path / "c1.yaml"), *base]) == 0
    out, err = capsys.readouterr()
    policy, = json.loads(out)["items"]
    created, _ = _reconciler_creates(SINK, "kkp", CONFIG, [])
    assert [policy] == created
    assert "podSelector" not in policy["spec"]["egress"][0]["to"][0]
    assert policy["spec"]["egress"][0]["ports"] == [{"protocol": "TCP", "port": 24224}]
    assert "Service audit/fluentd was not given (--source)" in err
    assert main(["files", "--cluster", str(tmp_path / "c2.yaml"), *base]) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["items"] == []
    assert "Secret kubermatic/dc-wh, which was not given (--source)" in err
