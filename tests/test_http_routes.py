"""The HTTPS edge, end to end: real TLS, real HTTP, real YAML store."""

from __future__ import annotations

import asyncio
import base64
import json
import socket
import ssl

import jsonpatch
import pytest
import yaml

from tests.conftest import write_store
from tests.helpers import EXAMPLES, KUBECONFIG, cluster, container, kkp_pod, review, secret, webhook_backend
from webhook.adapters import handlers
from webhook.adapters.certs import server_context


def decoded_patch(body):
    response = body["response"]
    if "patch" not in response:
        return None
    assert response["patchType"] == "JSONPatch"
    return json.loads(base64.b64decode(response["patch"]))


# Every example namespace, with what its apiserver Pod must come back with.
MUTATE_EXAMPLES = [
    # namespace, sidecar injected, webhook Secret mounted, backoff
    ("cluster-auditon01", True, None, None),
    ("cluster-webhookonly", False, "audit-webhook-backend", "5s"),
    ("cluster-both01", True, "audit-webhook-backend", "10s"),
    ("cluster-enforced01", True, None, None),
    ("cluster-edge01", True, None, None),
    ("cluster-dcwebhook01", False, "audit-webhook-backend-secret", "15s"),
    ("cluster-optout01", False, None, None),
    ("cluster-plain01", False, None, None),
    ("kube-system", False, None, None),
]


@pytest.mark.parametrize(("namespace", "sidecar", "webhook_secret", "backoff"), MUTATE_EXAMPLES)
async def test_mutate_bundled_examples(start_server, namespace, sidecar, webhook_secret, backoff):
    server = await start_server(EXAMPLES)
    pod = kkp_pod()
    status, body = await server.post("/mutate", review(pod, namespace=namespace, uid=f"uid-{namespace}"))
    assert status == 200
    assert body["apiVersion"] == "admission.k8s.io/v1"
    assert body["kind"] == "AdmissionReview"
    assert body["response"]["uid"] == f"uid-{namespace}"
    assert body["response"]["allowed"] is True
    ops = decoded_patch(body)
    if not sidecar and webhook_secret is None:
        assert ops is None
        return
    out = jsonpatch.apply_patch(pod, ops)
    names = [c["name"] for c in out["spec"]["containers"]]
    assert ("audit-logs" in names) is sidecar
    args = container(out, "apiserver")["args"]
    volumes = {v["name"]: v for v in out["spec"]["volumes"]}
    if webhook_secret:
        assert volumes["audit-webhook-backend"]["secret"]["secretName"] == webhook_secret
        assert f"--audit-webhook-initial-backoff={backoff}" in args
    else:
        assert "audit-webhook-backend" not in volumes
    # Re-invocation on our own output: no patch at all.
    status, again = await server.post("/mutate", review(out, namespace=namespace))
    assert status == 200
    assert decoded_patch(again) is None


async def test_the_replicas_of_a_replicaset_each_get_their_own_answer(start_server, tmp_path):
    """kube-apiserver admits every replica as the same object (no name or uid yet): the second is
    answered from the memo, under its own uid, with the same patch; a changed Cluster is not."""
    root = write_store(tmp_path / "live", [cluster("rs", audit={"enabled": True})])
    server = await start_server(root)
    pod = kkp_pod()
    answers = [await server.post("/mutate", review(pod, namespace="cluster-rs", uid=f"replica-{i}")) for i in range(3)]
    assert [body["response"]["uid"] for _, body in answers] == ["replica-0", "replica-1", "replica-2"]
    assert all(decoded_patch(body) == decoded_patch(answers[0][1]) is not None for _, body in answers)
    write_store(root, [cluster("rs", audit={"enabled": True, "policyPreset": "minimal"})])
    assert server.webhook.store.refresh() is True
    _, after = await server.post("/mutate", review(pod, namespace="cluster-rs", uid="replica-3"))
    assert decoded_patch(after) != decoded_patch(answers[0][1])


async def test_v1beta1_is_answered_in_v1beta1(start_server):
    server = await start_server(EXAMPLES)
    status, body = await server.post("/mutate", review(kkp_pod(), namespace="cluster-auditon01",
                                                       version="admission.k8s.io/v1beta1"))
    assert status == 200
    assert body["apiVersion"] == "admission.k8s.io/v1beta1"
    assert decoded_patch(body)


async def test_validate_rejects_with_every_field_error(start_server):
    server = await start_server(EXAMPLES)
    bad = yaml.safe_load((EXAMPLES / "rejected" / "cluster-bad.yaml").read_text())
    status, body = await server.post("/validate", review(bad, kind="Cluster", group="kubermatic.k8c.io", uid="bad-1"))
    assert status == 200
    response = body["response"]
    assert response["uid"] == "bad-1"
    assert response["allowed"] is False
    assert "patch" not in response and "patchType" not in response
    assert response["status"]["code"] == 422
    message = response["status"]["message"]
    assert message.startswith('Cluster.kubermatic.k8c.io "rejected01" is invalid: [')
    for fragment in ['spec.auditLogging.policyPreset: Unsupported value: "verbose"',
                     "spec.auditLogging.sidecar.extraEnvs[0].name: Forbidden",
                     'spec.auditLogging.sidecar.config.outputs[0][Host]: Invalid value: "fluentd\\n@INCLUDE /etc/passwd"']:
        assert fragment in message
    # On CREATE the cluster's own namespace may not exist yet, let alone the Secret: a warning.
    assert any("cluster-rejected01/does-not-exist does not exist yet" in w for w in response["warnings"])


async def test_validate_reads_secrets_from_the_store(start_server):
    objects = [secret("cluster-abc", "wh", {"webhook.yaml": KUBECONFIG}),
               secret("cluster-abc", "empty", {"other": "x"})]
    server = await start_server(objects)
    ok = cluster(audit={"webhookBackend": webhook_backend("wh")})
    status, body = await server.post("/validate", review(ok, kind="Cluster", group="kubermatic.k8c.io"))
    assert status == 200
    assert body["response"]["allowed"] is True
    no_key = cluster(audit={"webhookBackend": webhook_backend("empty")})
    status, body = await server.post("/validate", review(no_key, kind="Cluster", group="kubermatic.k8c.io"))
    assert status == 200
    assert body["response"]["allowed"] is False
    assert 'the Secret has no key "webhook.yaml"' in body["response"]["status"]["message"]


async def test_validate_returns_warnings(start_server):
    server = await start_server(EXAMPLES)
    obj = cluster(audit={"enabled": False, "sidecar": {"config": {"service": {"Flush": "1"}}}})
    status, body = await server.post("/validate", review(obj, kind="Cluster", group="kubermatic.k8c.io"))
    assert status == 200
    assert body["response"]["allowed"] is True
    assert body["response"]["warnings"] == ["spec.auditLogging.sidecar: has no effect while audit logging is off"]


async def test_validate_ignores_deletes_status_and_other_kinds(start_server):
    server = await start_server([])
    bad = cluster(audit={"policyPreset": "nope"})
    for req in (review(bad, kind="Cluster", group="kubermatic.k8c.io", operation="DELETE"),
                review({"kind": "Deployment", "apiVersion": "apps/v1"}, kind="Deployment", group="apps")):
        status, body = await server.post("/validate", req)
        assert status == 200
        assert body["response"]["allowed"] is True
    status_update = review(bad, kind="Cluster", group="kubermatic.k8c.io", operation="UPDATE", old=bad)
    status_update["request"]["subResource"] = "status"
    status, body = await server.post("/validate", status_update)
    assert status == 200
    assert body["response"]["allowed"] is True


@pytest.mark.parametrize(("body", "fragment"), [
    (b"{not json", "request body is not JSON"),
    (b"[" * 200_000 + b"]" * 200_000, "nested too deeply"),
    (b"\xff\xfe", "request body is not JSON"),
    (b"[1, 2]", "must be a JSON object"),
    (b'{"apiVersion": "admission.k8s.io/v2", "kind": "AdmissionReview", "request": {"uid": "x"}}',
     "apiVersion must be one of admission.k8s.io/v1, admission.k8s.io/v1beta1"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "Review", "request": {"uid": "x"}}', "kind must be AdmissionReview"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "AdmissionReview has no request"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"kind": {}}}',
     "AdmissionReview request has no uid"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": "x", "kind": "Pod"}}',
     "AdmissionReview request is malformed: kind"),
])
@pytest.mark.parametrize("path", ["/mutate", "/validate"])
async def test_bad_bodies_get_400_with_a_reason(start_server, path, body, fragment):
    server = await start_server([])
    status, answer = await server.post(path, body)
    assert status == 400
    assert fragment in answer["error"]


async def test_body_over_7_mib_gets_413(start_server):
    server = await start_server([])
    big = review({"metadata": {"annotations": {"x": "a" * (7 * 1024 * 1024)}}})
    status, answer = await server.post("/mutate", big)
    assert status == 413
    assert "larger than" in answer["error"]
    # A large body under the limit is fine.
    status, _ = await server.post("/mutate", review({"metadata": {"annotations": {"x": "a" * (3 * 1024 * 1024)}}}))
    assert status == 200


async def test_an_exception_answers_that_request_and_the_server_goes_on(start_server, monkeypatch):
    server = await start_server(EXAMPLES)

    async def boom(*_args):
        raise RuntimeError("simulated bug")

    monkeypatch.setattr(handlers, "mutate", boom)
    status, body = await server.post("/mutate", review(kkp_pod(), namespace="cluster-auditon01", uid="boom-1"))
    assert status == 200
    assert body["response"]["uid"] == "boom-1"
    assert body["response"]["allowed"] is False
    assert body["response"]["status"]["code"] == 500
    assert "internal error while handling request boom-1" in body["response"]["status"]["message"]
    monkeypatch.undo()
    status, body = await server.post("/mutate", review(kkp_pod(), namespace="cluster-auditon01"))
    assert status == 200 and decoded_patch(body)
    status, text = await server.get("/metrics")
    assert 'audit_webhook_handler_errors_total{handler="mutate"} 1.0' in text


async def test_health_readiness_and_metrics(start_server):
    server = await start_server(EXAMPLES)
    assert await server.get("/healthz") == (200, "ok")
    assert await server.get("/readyz") == (200, "ok")
    await server.post("/mutate", review(kkp_pod(), namespace="cluster-auditon01"))
    await server.post("/mutate", review(kkp_pod(), namespace="cluster-plain01"))
    await server.post("/validate", review(cluster(audit={"policyPreset": "x"}), kind="Cluster", group="kubermatic.k8c.io"))
    await server.post("/mutate", b"nope")
    status, text = await server.get("/metrics")
    assert status == 200
    expected = [
        'audit_webhook_admission_requests_total{decision="allowed",handler="mutate",kind="Pod",operation="CREATE"} 2.0',
        'audit_webhook_admission_requests_total{decision="denied",handler="validate",kind="Cluster",operation="CREATE"} 1.0',
        "audit_webhook_injections_total 1.0",
        'audit_webhook_rejections_total{handler="validate",rule="audit.preset-supported"} 1.0',
        'audit_webhook_bad_requests_total{code="400"} 1.0',
        'audit_webhook_admission_duration_seconds_count{handler="mutate"} 2.0',
    ]
    for line in expected:
        assert line in text


async def test_store_directory_changes_are_picked_up(start_server, tmp_path):
    root = write_store(tmp_path / "live", [cluster(name="late")])
    server = await start_server(root)
    status, body = await server.post("/mutate", review(kkp_pod(), namespace="cluster-late"))
    assert status == 200
    assert decoded_patch(body) is None
    write_store(root, [cluster(name="late", audit={"enabled": True})])
    assert server.webhook.store.refresh() is True
    status, body = await server.post("/mutate", review(kkp_pod(), namespace="cluster-late"))
    assert status == 200
    assert decoded_patch(body)


def _handshake(port, minimum, maximum, ciphers, ca):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.load_verify_locations(ca)
    ctx.minimum_version, ctx.maximum_version = minimum, maximum
    ctx.set_ciphers(ciphers)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            ctx.wrap_socket(raw, server_hostname="localhost") as tls:
        return tls.version()


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
async def test_tls_below_1_2_and_non_aead_ciphers_are_refused(start_server, cert_dir, aiohttp_server):
    """A client that offers only TLS 1.1, or only CBC suites, fails; the same client works against a
    permissive server, so the refusal is the webhook's, not the client's."""
    import asyncio

    server = await start_server([])
    port = int(server.url.rsplit(":", 1)[1])
    ca = str(cert_dir / "ca.crt")
    legacy = (ssl.TLSVersion.TLSv1_1, ssl.TLSVersion.TLSv1_1, "ALL:@SECLEVEL=0")
    cbc = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA")
    aead = (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_2, "ECDHE-ECDSA-AES128-GCM-SHA256")
    for offer in (legacy, cbc):
        with pytest.raises(ssl.SSLError):
            await asyncio.to_thread(_handshake, port, *offer, ca)
    assert await asyncio.to_thread(_handshake, port, *aead, ca) == "TLSv1.2"

    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.minimum_version = ssl.TLSVersion.TLSv1
    permissive.set_ciphers("ALL:@SECLEVEL=0")
    permissive.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
    control = await aiohttp_server(server.webhook.app(), ssl=permissive)
    assert await asyncio.to_thread(_handshake, control.port, *legacy, ca) == "TLSv1.1"
    assert server_context(cert_dir).minimum_version == ssl.TLSVersion.TLSv1_2


@pytest.mark.parametrize(("name", "allowed", "patched"), [
    ("mutate-apiserver.json", True, True),
    ("validate-rejected.json", False, False),
])
async def test_the_readme_review_examples(start_server, name, allowed, patched):
    """The review files the README sends with curl give the answers it describes."""
    server = await start_server(EXAMPLES)
    body = (EXAMPLES / "reviews" / name).read_bytes()
    path = "/" + name.split("-")[0]
    status, answer = await server.post(path, body)
    assert status == 200
    assert answer["response"]["uid"] == json.loads(body)["request"]["uid"]
    assert answer["response"]["allowed"] is allowed
    assert bool(decoded_patch(answer)) is patched


def _store_for_validation_tables():
    from tests.test_validation import MORE_SECRETS

    return [secret(ns, name, {k: v.decode() for k, v in data.items()}) for (ns, name), data in MORE_SECRETS.items()]


def _validation_cases():
    from tests.test_validation import CLUSTER_ERRORS

    return [(case_id, obj, expected) for case_id, obj, expected in CLUSTER_ERRORS if not isinstance(expected, int)]


@pytest.mark.parametrize(("case_id", "obj", "expected"), _validation_cases(), ids=[c[0] for c in _validation_cases()])
async def test_cluster_rules_through_https(start_server, case_id, obj, expected):
    """Every cluster rule of tests/test_validation.py, end to end: the same message, with its rule, reaches the
    client."""
    from tests.test_validation import RULE_OF_CASE

    server = await start_server(_store_for_validation_tables())
    status, body = await server.post("/validate", review(obj, kind="Cluster", group="kubermatic.k8c.io"))
    assert status == 200
    response = body["response"]
    assert response["allowed"] is False
    assert response["status"]["message"] == (f'Cluster.kubermatic.k8c.io "abc" is invalid: {expected[0]} '
                                             f"[{RULE_OF_CASE[case_id]}]")


async def test_rejections_count_by_rule_with_bounded_labels(start_server):
    server = await start_server([])
    for host in ("a\nb", "c\nd"):
        obj = cluster(audit={"enabled": True, "sidecar": {"config": {"outputs": [{"Name": "http", "Match": "*",
                                                                                    "Host": host}]}}})
        await server.post("/validate", review(obj, kind="Cluster", group="kubermatic.k8c.io"))
    # A map key with a bracket in it cannot escape the folding.
    odd = cluster(audit={"enabled": True, "sidecar": {"config": {"outputs": [{"Name": "http", "Match": "*",
                                                                               "a]b[c": "x"}]}}})
    await server.post("/validate", review(odd, kind="Cluster", group="kubermatic.k8c.io"))
    # Kinds and operations a client makes up are "other".
    for kind, operation in (("Frob1", "CREATE"), ("Frob2", "FROBNICATE"), ("Pod", "X" * 50)):
        body = review({"kind": kind}, kind=kind)
        body["request"]["operation"] = operation
        await server.post("/validate", body)
    _, text = await server.get("/metrics")
    # Labelled by rule id, from a fixed table: the two line breaks, and the key no fluent-bit key can be.
    assert 'audit_webhook_rejections_total{handler="validate",rule="sidecar.characters"} 2.0' in text
    assert 'audit_webhook_rejections_total{handler="validate",rule="sidecar.key-form"} 1.0' in text
    assert "a]b" not in text
    assert "Frob" not in text and "FROBNICATE" not in text and "XXXX" not in text
    assert 'kind="other",operation="other"' in text


LUA = {"enabled": True, "sidecar": {"config": {"filters": [{"Name": "lua", "Match": "*", "call": "f",
                                                             "code": "function f() end"}]}}}
BIG = {"enabled": True, "sidecar": {"resources": {"limits": {"cpu": "4"}}}}
GONE = {"webhookBackend": webhook_backend("gone")}
# handler, stored objects, request, allowed, rules that refused it, rules its warnings are about, advice warnings
RULE_IDS_EVERYWHERE = [
    ("refused-on-admission", [], review(cluster(audit={"enabled": "yes"}), kind="Cluster", group="kubermatic.k8c.io"),
     False, ["audit.enabled-bool"], [], 0),
    ("apiserver-of-an-unsafe-stored-cluster", [cluster(audit=LUA)], review(kkp_pod(), namespace="cluster-abc"),
     False, ["sidecar.plugin-denied", "sidecar.key-denied"], [], 0),
    ("apiserver-of-a-cluster-out-of-policy", [cluster(audit=BIG)], review(kkp_pod(), namespace="cluster-abc"),
     True, [], ["sidecar.resource-ceiling"], 0),
    ("update-ratcheted", [], review(cluster(audit=GONE, humanReadableName="x"), kind="Cluster",
                                    group="kubermatic.k8c.io", operation="UPDATE", old=cluster(audit=GONE)),
     True, [], ["webhook.secret-exists"], 0),
    ("advice-only", [], review(cluster(audit={"enabled": True, "colour": "red"}), kind="Cluster",
                               group="kubermatic.k8c.io"), True, [], [], 1),
]


@pytest.mark.parametrize(("case", "stored", "request_body", "allowed", "rules", "warning_rules", "advice"),
                         RULE_IDS_EVERYWHERE, ids=[c[0] for c in RULE_IDS_EVERYWHERE])
async def test_rule_ids_reach_messages_warnings_metrics_and_the_decision_log(
        start_server, caplog, case, stored, request_body, allowed, rules, warning_rules, advice):
    import logging

    server = await start_server(stored)
    caplog.set_level(logging.INFO, logger="audit_webhook.decisions")
    handler = "mutate" if request_body["request"]["kind"]["kind"] == "Pod" else "validate"
    _, body = await server.post(f"/{handler}", request_body)
    response = body["response"]
    assert response["allowed"] is allowed
    for rule in rules:
        assert f"[{rule}]" in response["status"]["message"]
    warnings = response.get("warnings", [])
    assert sorted(w[w.rindex("[") + 1:-1] for w in warnings if w.endswith("]")) == warning_rules
    assert len(warnings) == len(warning_rules) + advice
    (line,) = [json.loads(r.getMessage()) for r in caplog.records if r.name == "audit_webhook.decisions"]
    assert (line["rules"], line["warning_rules"]) == (rules, warning_rules)
    _, text = await server.get("/metrics")
    for rule in rules:
        assert f'audit_webhook_rejections_total{{handler="{handler}",rule="{rule}"}} 1.0' in text
    for rule in warning_rules:
        assert f'audit_webhook_warnings_total{{handler="{handler}",rule="{rule}"}} 1.0' in text
    counted = f'audit_webhook_warnings_total{{handler="{handler}",rule="none"}} {float(advice)}'
    assert (counted in text) is bool(advice)


async def test_decision_log_is_one_json_line_per_admission(start_server, caplog):
    import logging

    from webhook.adapters import decision_log

    server = await start_server(EXAMPLES)
    caplog.set_level(logging.DEBUG, logger="audit_webhook.decisions")
    bad = cluster(audit={"policyPreset": "loud"})
    await server.post("/validate", review(bad, kind="Cluster", group="kubermatic.k8c.io", uid="log-1"))
    await server.post("/mutate", review(kkp_pod(), namespace="cluster-auditon01", uid="log-2"))
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "audit_webhook.decisions"]
    assert [line["uid"] for line in lines] == ["log-1", "log-2"]
    first, second = lines
    assert (first["handler"], first["kind"], first["user"], first["decision"], first["rules"]) == (
        "validate", "Cluster", "alice", "denied", ["audit.preset-supported"])
    assert (second["decision"], second["reason"], second["patched"], second["namespace"]) == (
        "allowed", "injected", True, "cluster-auditon01")
    assert all(line["latency_ms"] > 0 for line in lines)
    assert "loud" not in caplog.text  # the decision, never the values
    caplog.clear()
    decision_log.set_level("off")
    try:
        await server.post("/mutate", review(kkp_pod(), namespace="cluster-auditon01"))
    finally:
        decision_log.set_level("info")
    assert not [r for r in caplog.records if r.name == "audit_webhook.decisions"]


async def test_mutual_tls_refuses_clients_without_a_certificate(aiohttp_server, cert_dir, client_tls, tmp_path):
    """With --client-ca, only clients presenting a certificate from that CA get an answer."""
    import aiohttp

    from tests.e2e.cluster import client_cert
    from webhook.adapters.certs import CertWatcher, ServiceName, ensure_certs
    from webhook.adapters.metrics import Metrics
    from webhook.adapters.server import Webhook
    from webhook.adapters.store import MemoryStore
    from webhook.core.options import Options

    clients = tmp_path / "client-ca"
    ensure_certs(clients, ServiceName())
    client_cert(clients, clients / "ok", "kube-apiserver", "webhooks")
    stranger = tmp_path / "stranger"
    ensure_certs(stranger, ServiceName())
    client_cert(stranger, stranger / "bad", "mallory", "x")
    webhook = Webhook(MemoryStore(), Options.default(), Metrics())
    server = await aiohttp_server(webhook.app(), ssl=CertWatcher(cert_dir, clients / "ca.crt").listening)
    url = f"https://127.0.0.1:{server.port}/healthz"

    async def get(cert_dir_or_none):
        ctx = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        if cert_dir_or_none:
            ctx.load_cert_chain(cert_dir_or_none / "client.crt", cert_dir_or_none / "client.key")
        async with aiohttp.ClientSession() as session, session.get(url, ssl=ctx) as r:
            return r.status

    assert await get(clients / "ok") == 200
    for who in (None, stranger / "bad"):
        with pytest.raises(aiohttp.ClientError):
            await get(who)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "br"])
async def test_a_body_that_cannot_be_decoded_is_a_400(start_server, encoding):
    server = await start_server([])
    async with server.session.post(server.url + "/validate", data=b"\x00not compressed at all\xff",
                                   headers={"Content-Type": "application/json", "Content-Encoding": encoding}) as r:
        assert r.status == 400  # an encoding aiohttp does not know is refused by its parser, also 400
        text = await r.text()
    assert encoding == "br" or json.loads(text)["error"].startswith("request body cannot be read")
    status, _ = await server.post("/validate", review(cluster(), kind="Cluster", group="kubermatic.k8c.io"))
    assert status == 200  # and the server goes on


async def test_one_cluster_per_namespace(start_server):
    """A Cluster may not point its control-plane namespace into another's; where two claim one
    (a status written past us), its apiserver Pods are refused, naming both."""
    victim = cluster(name="victim", audit={"enabled": True})
    victim["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    thief = cluster(name="thief")
    thief["metadata"]["creationTimestamp"] = "2026-06-01T00:00:00Z"
    thief["status"] = {"namespaceName": "cluster-victim"}
    server = await start_server([victim, thief])

    status, body = await server.post("/validate", review(thief, kind="Cluster", group="kubermatic.k8c.io",
                                                         operation="UPDATE", old=thief))
    assert status == 200 and body["response"]["allowed"] is False
    assert body["response"]["status"]["message"] == ('Cluster.kubermatic.k8c.io "thief" is invalid: '
                                                     'status.namespaceName: Forbidden: namespace "cluster-victim" '
                                                     'belongs to Cluster "victim" [cluster.namespace-holder]')
    # The older holder's own updates go on.
    status, body = await server.post("/validate", review(victim, kind="Cluster", group="kubermatic.k8c.io",
                                                         operation="UPDATE", old=victim))
    assert status == 200 and body["response"]["allowed"] is True
    # A status update that moves the namespace is judged too.
    moved = review(thief, kind="Cluster", group="kubermatic.k8c.io", operation="UPDATE", old=cluster(name="thief"))
    moved["request"]["subResource"] = "status"
    status, body = await server.post("/validate", moved)
    assert status == 200 and body["response"]["allowed"] is False and "belongs to Cluster" in body["response"]["status"]["message"]
    # And the apiserver Pod in the contested namespace is refused, naming both.
    status, body = await server.post("/mutate", review(kkp_pod(), namespace="cluster-victim"))
    assert status == 200 and body["response"]["allowed"] is False
    assert body["response"]["status"]["message"].startswith(
        'audit-webhook: namespace "cluster-victim" is claimed by Clusters "thief", "victim"')


async def test_pinned_client_names_leave_other_certificates_of_the_ca_out(aiohttp_server, cert_dir, tmp_path):
    """A tenant's user certificate signed by the same CA (the seed's client CA) is not kube-apiserver."""
    import aiohttp

    from tests.e2e.cluster import client_cert
    from webhook.adapters.certs import CertWatcher, ServiceName, ensure_certs
    from webhook.adapters.metrics import Metrics
    from webhook.adapters.server import Webhook
    from webhook.adapters.store import MemoryStore
    from webhook.core.options import Options

    clients = tmp_path / "client-ca"
    ensure_certs(clients, ServiceName())
    client_cert(clients, clients / "apiserver", "kube-apiserver-webhook-client", "kube-apiserver")
    client_cert(clients, clients / "tenant", "alice", "tenants")
    webhook = Webhook(MemoryStore(), Options.default(), Metrics(),
                      allowed_clients=frozenset({"kube-apiserver-webhook-client"}))
    server = await aiohttp_server(webhook.app(), ssl=CertWatcher(cert_dir, clients / "ca.crt").listening)

    async def call(who, method, path):
        ctx = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
        ctx.load_cert_chain(who / "client.crt", who / "client.key")
        async with aiohttp.ClientSession() as session, session.request(
                method, f"https://127.0.0.1:{server.port}{path}", ssl=ctx,
                data=json.dumps(review(cluster(), kind="Cluster", group="kubermatic.k8c.io"))) as r:
            return r.status

    assert await call(clients / "apiserver", "POST", "/validate") == 200
    assert await call(clients / "tenant", "POST", "/validate") == 403
    assert await call(clients / "tenant", "GET", "/metrics") == 403
    assert await call(clients / "tenant", "GET", "/healthz") == 200  # probes stay open


async def test_a_body_that_never_arrives_is_answered_408(aiohttp_server, cert_dir):
    """A slow or stalled sender does not hold its request (and its memory) forever."""
    from webhook.adapters.certs import CertWatcher
    from webhook.adapters.metrics import Metrics
    from webhook.adapters.server import Webhook
    from webhook.adapters.store import MemoryStore
    from webhook.core.options import Options

    webhook = Webhook(MemoryStore(), Options.default(), Metrics(), body_timeout=0.3)
    server = await aiohttp_server(webhook.app(), ssl=CertWatcher(cert_dir).listening)
    ctx = ssl.create_default_context(cafile=str(cert_dir / "ca.crt"))
    reader, writer = await asyncio.open_connection("127.0.0.1", server.port, ssl=ctx, server_hostname="localhost")
    writer.write(b"POST /validate HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                 b"Content-Length: 1000\r\n\r\n{\"apiVersion\": ")
    await writer.drain()
    status_line = await asyncio.wait_for(reader.readline(), 30)  # a guard against hanging, not a timing claim
    writer.close()
    assert status_line.startswith(b"HTTP/1.1 408")
