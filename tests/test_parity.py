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
from webhook.core.egress import classify, destinations, network_policy
from webhook.core.mutation import prepare
from webhook.core.options import Options
from webhook.core.patch import apply_patch
from webhook.core.presets import policy_text
from webhook.core.reconcile_plan import Owner, desired_objects, ownership, plan

SEED = seed({"dc1": {}, "dc-enforced": {"enforceAuditLogging": True}})


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


@pytest.mark.parametrize("obj", [c for c in CLUSTERS if c["metadata"]["name"] not in ("bad01", "lua01")],
                         ids=lambda o: o["metadata"]["name"])
def test_the_reconcilers_plan_and_files_print_the_same_objects(capsys, tmp_path, obj):
    """In an empty namespace the reconciler (standalone) creates exactly what `files` prints."""
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(SEED, sort_keys=False))
    code = main(["files", "--cluster", str(tmp_path / "c.yaml"), "--seed", str(tmp_path / "s.yaml"), "-o", "json"])
    out, _ = capsys.readouterr()
    printed = json.loads(out)["items"] if code == 0 else []
    for item in printed:  # `files` writes Secrets as stringData for people; the API stores data
        if "stringData" in item:
            item["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in item.pop("stringData").items()}
    settings = prepare(obj, SEED, Options.default()).settings
    egress = network_policy(settings, [classify(d, settings.namespace) for d in destinations(settings, None)], {})
    desired = desired_objects(settings, Options.default(), None, egress, "standalone")
    created = [a.obj for a in plan(settings, desired, [], ownership(settings, Owner.of(obj), "standalone"))]
    assert created == printed
    if obj["metadata"]["name"] == "plain01":
        assert created[0]["data"]["policy.yaml"] == policy_text("minimal")
