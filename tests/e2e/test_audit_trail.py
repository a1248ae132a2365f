"""The audit trail, proven against a real kube-apiserver.

What is real: etcd, kube-apiserver and kubectl built from the pinned Go modules (e2e/build.sh); the
`--audit-*` flags of the apiserver container exactly as `audit-webhook render` injects them for a Cluster
with the "recommended" preset and a webhook backend, and the policy file exactly as `audit-webhook files`
writes it (both run as the real CLI in a subprocess); kube-apiserver's log backend writing the audit log
and its webhook backend POSTing audit.k8s.io/v1 EventLists over HTTPS (verified against our own CA) to a
sink; the requests, sent over the REST API and with the real `kubectl exec`.

What is not: the file paths are remapped from the Pod's volume mounts to a temporary directory, and the
webhook backend's kubeconfig is ours (it points at the sink; in KKP it comes from the Cluster's Secret);
`--audit-webhook-batch-max-wait=1s` is added when the render sets none, so the batched webhook backend
delivers within seconds instead of the default 30 s; every other kube-apiserver flag is the harness's
(tests/e2e/cluster.py), not the example Pod's; the fluent-bit sidecar is rendered but not run; no
kubelet or node exists, so Pods are never scheduled and the exec fails after it is authorized and audited;
the sink is a test HTTPS server that only records what it receives.

Expected levels are not hard-coded: each event's level is compared with the project's own evaluator
(webhook/core/policy_eval.py, webhook/core/explain.py) on the policy file the apiserver actually loaded. A few hard
facts are asserted on top: Secret events carry metadata only, a Pod create carries its request and
response, and no Secret value (nor its base64) appears in the audit log or in any body the sink received.
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e.cluster import ROOT, ControlPlane
from webhook.adapters.certs import ServiceName, create_ca, create_serving
from webhook.core.explain import explain, explain_preset, policy_from_document
from webhook.core.policy_eval import AuditRequest

PRESET = "recommended"
NAMESPACE = "audit-trail"
MIB = 1024 * 1024
WAIT = 30.0  # seconds for events to reach the log (synchronous) and the sink (batched)
DEFAULT_TRUNCATE_MAX_EVENT_SIZE = 100 * 1024  # kube-apiserver's default for --audit-*-truncate-max-event-size
TRUNCATED = "audit.k8s.io/truncated"
REMAPPED = ("--audit-log-path", "--audit-policy-file", "--audit-webhook-config-file")


# --- the sink ------------------------------------------------------------------------------------------


class Sink:
    """A threaded HTTPS server on loopback that records every body POSTed to it."""

    def __init__(self, cert_dir: Path) -> None:
        create_ca(cert_dir)
        create_serving(cert_dir, ServiceName("audit-sink", "e2e"))
        self.ca = cert_dir / "ca.crt"
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert_dir / "tls.crt", cert_dir / "tls.key")
        sink = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                if "chunked" in self.headers.get("Transfer-Encoding", ""):
                    body = b""
                    while size := int(self.rfile.readline().strip() or b"0", 16):
                        body += self.rfile.read(size)
                        self.rfile.readline()
                    self.rfile.readline()
                else:
                    body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                with sink.lock:
                    sink.bodies.append(body)
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def finish_request(self, request: Any, client_address: Any) -> None:
                # The TLS handshake runs in the request's thread, not in the accept loop.
                super().finish_request(ctx.wrap_socket(request, server_side=True), client_address)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"https://127.0.0.1:{self.server.server_address[1]}/events"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def raw(self) -> bytes:
        with self.lock:
            return b"\n".join(self.bodies)

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            bodies = list(self.bodies)
        found: list[dict[str, Any]] = []
        for body in bodies:
            doc = json.loads(body)
            assert doc.get("kind") == "EventList" and doc.get("apiVersion") == "audit.k8s.io/v1", doc.get("kind")
            found += doc.get("items") or []
        return found

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


# --- flags and files from the CLI ----------------------------------------------------------------------


def cli(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "webhook", *args], cwd=ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, f"audit-webhook {' '.join(args)} failed:\n{result.stderr}"
    return result.stdout


def audit_flags(pod: dict[str, Any]) -> list[tuple[str, str | None]]:
    """The apiserver container's --audit-* flags, `--flag=value` and `--flag value` alike, in order."""
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "apiserver")
    tokens = [*(container.get("command") or []), *(container.get("args") or [])]
    flags: list[tuple[str, str | None]] = []
    for i, token in enumerate(tokens):
        if not token.startswith("--audit-"):
            continue
        if "=" in token:
            name, value = token.split("=", 1)
            flags.append((name, value))
        elif i + 1 < len(tokens) and not tokens[i + 1].startswith("-"):
            flags.append((token, tokens[i + 1]))
        else:
            flags.append((token, None))
    return flags


def remap(path: str, mounts: dict[str, Path]) -> Path:
    """A path inside the container, moved to the local directory of the volume mounted there."""
    best = max((m for m in mounts if path == m or path.startswith(m.rstrip("/") + "/")), key=len, default=None)
    assert best is not None, f"{path} is on no volume the apiserver container mounts"
    return mounts[best] / path[len(best):].lstrip("/")


def webhook_kubeconfig(sink: Sink) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Config", "current-context": "sink",
            "clusters": [{"name": "sink", "cluster": {"server": sink.url, "certificate-authority": str(sink.ca)}}],
            "contexts": [{"name": "sink", "context": {"cluster": "sink", "user": "sink"}}],
            "users": [{"name": "sink", "user": {}}]}


def truthy(value: str | None) -> bool:
    return value is None or value.lower() in ("true", "1", "t")


# --- the trail -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    """One request of the table and the audit event it must produce."""

    id: str
    verb: str
    resource: str
    subresource: str = ""
    name: str = ""
    group: str = ""

    def matches(self, ev: dict[str, Any]) -> bool:
        ref = ev.get("objectRef") or {}
        return (ev.get("verb") == self.verb and ref.get("resource") == self.resource
                and (ref.get("subresource") or "") == self.subresource and ref.get("namespace") == NAMESPACE
                and (ref.get("name") or "") == self.name and (ref.get("apiGroup") or "") == self.group
                and ev.get("user", {}).get("username") == "e2e-admin" and ev.get("stage") == "ResponseComplete")


SECRET, POD, BIG = "trail-secret", "audited", "big"
CASES = (
    Case("secret-create", "create", "secrets", name=SECRET),
    Case("secret-get", "get", "secrets", name=SECRET),
    Case("secret-list", "list", "secrets"),
    Case("secret-update", "update", "secrets", name=SECRET),
    Case("pod-create", "create", "pods", name=POD),
    Case("pod-create-over-1MiB", "create", "pods", name=BIG),
    Case("pods-status-patch", "patch", "pods", "status", POD),
    # One `kubectl exec`: it tries a websocket (GET) first and, refused, falls back to SPDY (POST).
    Case("pods-exec", "create", "pods", "exec", POD),
    Case("pods-exec-websocket", "get", "pods", "exec", POD),
    Case("pods-eviction", "create", "pods", "eviction", POD),
)


@dataclass
class Trail:
    plane: ControlPlane
    sink: Sink
    log_path: Path
    policy: dict[str, Any]
    rendered: list[tuple[str, str | None]]
    passed: list[str]
    secret_values: tuple[str, ...]
    canary: str
    big_body: int = 0  # bytes of the >1 MiB Pod's request body
    responses: dict[str, tuple[int, bytes]] = field(default_factory=dict)
    exec_result: subprocess.CompletedProcess[str] | None = None

    def log_events(self) -> list[dict[str, Any]]:
        if not self.log_path.exists():
            return []
        return [json.loads(line) for line in self.log_path.read_text().splitlines() if line.strip()]

    def flag(self, name: str) -> tuple[bool, str | None]:
        for n, v in self.rendered:
            if n == name:
                return True, v
        return False, None

    def truncates(self, backend: str, event_size: int) -> bool:
        """Whether the rendered flags make `backend` ("log", "webhook") truncate an event of this size."""
        enabled, value = self.flag(f"--audit-{backend}-truncate-enabled")
        if not enabled or not truthy(value):
            return False
        _, limit = self.flag(f"--audit-{backend}-truncate-max-event-size")
        return event_size > (int(limit) if limit else DEFAULT_TRUNCATE_MAX_EVENT_SIZE)


def cluster_manifest() -> list[dict[str, Any]]:
    """A Cluster with audit logging on, the chosen preset and a webhook backend."""
    return [{"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "metadata": {"name": "trail01"},
             "spec": {"cloud": {"dc": "hamburg"},
                      "auditLogging": {"enabled": True, "policyPreset": PRESET,
                                       "webhookBackend": {"auditWebhookConfig": {"name": "audit-webhook-backend"}}}}}]


class Api:
    """The REST API with the admin client certificate."""

    def __init__(self, plane: ControlPlane) -> None:
        self.port = plane.apiserver_port
        self.ctx = ssl.create_default_context(cafile=str(plane.pki / "ca.crt"))
        self.ctx.load_cert_chain(plane.pki / "client.crt", plane.pki / "client.key")

    def __call__(self, method: str, path: str, body: Any = None,
                 content_type: str = "application/json") -> tuple[int, bytes]:
        conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)
        try:
            data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
            conn.request(method, path, body=data, headers={"Content-Type": content_type, "Accept": "application/json"})
            response = conn.getresponse()
            return response.status, response.read()
        finally:
            conn.close()


def pod(name: str, env: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": NAMESPACE},
            "spec": {"containers": [{"name": "main", "image": "registry.k8s.io/pause:3.10",
                                     "env": [{"name": k, "value": v} for k, v in env.items()]}]}}


def drive(trail: Trail) -> None:
    """Send the table's requests; each response is kept for the sanity checks."""
    api, r = Api(trail.plane), trail.responses
    ns = f"/api/v1/namespaces/{NAMESPACE}"
    first, second = trail.secret_values
    assert api("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace",
                                              "metadata": {"name": NAMESPACE}})[0] == 201
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": SECRET, "namespace": NAMESPACE},
              "data": {"token": base64.b64encode(first.encode()).decode()}}
    r["secret-create"] = api("POST", f"{ns}/secrets", secret)
    r["secret-get"] = api("GET", f"{ns}/secrets/{SECRET}")
    r["secret-list"] = api("GET", f"{ns}/secrets")
    updated = json.loads(r["secret-get"][1])
    updated["data"]["token"] = base64.b64encode(second.encode()).decode()
    r["secret-update"] = api("PUT", f"{ns}/secrets/{SECRET}", updated)
    r["pod-create"] = api("POST", f"{ns}/pods", pod(POD, {"CANARY": trail.canary}))
    big = json.dumps(pod(BIG, {"FILLER": "x" * (MIB + 64 * 1024)})).encode()
    assert len(big) > MIB
    trail.big_body = len(big)
    r["pod-create-over-1MiB"] = api("POST", f"{ns}/pods", big)
    r["pods-status-patch"] = api("PATCH", f"{ns}/pods/{POD}/status", {"status": {"message": "audited by e2e"}},
                                 "application/merge-patch+json")
    trail.exec_result = trail.plane.kubectl("exec", "-n", NAMESPACE, POD, "--", "true", check=False)
    r["pods-eviction"] = api("POST", f"{ns}/pods/{POD}/eviction", {
        "apiVersion": "policy/v1", "kind": "Eviction", "metadata": {"name": POD, "namespace": NAMESPACE}})


def wait_for_events(trail: Trail) -> None:
    """Until every case has its event in the log and in the sink, or WAIT seconds have passed."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        log, sink = trail.log_events(), trail.sink.events()
        if all(any(c.matches(e) for e in log) and any(c.matches(e) for e in sink) for c in CASES):
            return
        time.sleep(0.5)


@pytest.fixture(scope="module")
def trail(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Trail]:
    work = tmp_path_factory.mktemp("audit-trail")
    (work / "cluster.yaml").write_text(yaml.safe_dump_all(cluster_manifest()))
    rendered_pod = yaml.safe_load(cli("render", "--cluster", str(work / "cluster.yaml"), "--seed",
                                      str(ROOT / "examples/seeds/kubermatic.yaml"),
                                      str(ROOT / "examples/pods/apiserver.yaml")))
    files = yaml.safe_load(cli("files", "--mode", "standalone", "--cluster", str(work / "cluster.yaml"), "--seed",
                               str(ROOT / "examples/seeds/kubermatic.yaml")))["items"]
    rendered = audit_flags(rendered_pod)
    assert {n for n, _ in rendered} >= set(REMAPPED), f"the render lacks some of {REMAPPED}: {rendered}"

    # Every volume the apiserver container mounts becomes a local directory, filled like the kubelet would.
    container = next(c for c in rendered_pod["spec"]["containers"] if c["name"] == "apiserver")
    volumes = {v["name"]: v for v in rendered_pod["spec"]["volumes"]}
    mounts: dict[str, Path] = {}
    for mount in container.get("volumeMounts") or []:
        local = work / "mounts" / mount["name"]
        local.mkdir(parents=True, exist_ok=True)
        mounts[mount["mountPath"]] = local
        volume = volumes[mount["name"]]
        source = volume.get("configMap", {}).get("name") or volume.get("secret", {}).get("secretName")
        for item in files:
            if source and item["metadata"]["name"] == source and item["kind"] in ("ConfigMap", "Secret"):
                for key, text in (item.get("data") or {}).items():
                    (local / key).write_text(text if item["kind"] == "ConfigMap" else base64.b64decode(text).decode())
                for key, text in (item.get("stringData") or {}).items():
                    (local / key).write_text(text)

    sink = Sink(work / "sink-certs")
    passed: list[str] = []
    log_path = policy_path = None
    for name, value in rendered:
        if name in REMAPPED:
            assert value, f"{name} without a value"
            local = remap(value, mounts)
            if name == "--audit-log-path":
                log_path = local
            elif name == "--audit-policy-file":
                policy_path = local
                assert local.is_file(), f"`files` wrote nothing for {value}"
            else:
                local.parent.mkdir(parents=True, exist_ok=True)
                local.write_text(yaml.safe_dump(webhook_kubeconfig(sink)))
            passed.append(f"{name}={local}")
        else:
            passed.append(name if value is None else f"{name}={value}")
    if not any(n == "--audit-webhook-batch-max-wait" for n, _ in rendered):
        passed.append("--audit-webhook-batch-max-wait=1s")
    assert log_path and policy_path
    policy = policy_from_document(yaml.safe_load(policy_path.read_text()))

    plane = ControlPlane(work / "plane", extra_args=passed)
    plane.work.mkdir()
    value = secrets.token_urlsafe(24)
    result = Trail(plane, sink, log_path, policy, rendered, passed,
                   (f"trail-secret-{value}", f"trail-secret-rotated-{secrets.token_urlsafe(24)}"),
                   f"canary-{secrets.token_hex(8)}")
    try:
        plane.start()
        drive(result)
        wait_for_events(result)
        yield result
    finally:
        # kube-apiserver first: with etcd gone it would take 20 s to give up.
        apiserver = plane.processes.get("kube-apiserver")
        if apiserver:
            apiserver.terminate()
            apiserver.wait(timeout=30)
        plane.stop()
        sink.stop()


# --- the assertions ------------------------------------------------------------------------------------


def request_of(ev: dict[str, Any]) -> AuditRequest:
    ref = ev.get("objectRef") or {}
    user = ev.get("user") or {}
    return AuditRequest(verb=ev["verb"], resource=ref.get("resource", ""), subresource=ref.get("subresource", ""),
                        group=ref.get("apiGroup", ""), namespace=ref.get("namespace", ""), name=ref.get("name", ""),
                        path="" if ref else ev["requestURI"].split("?")[0], user=user.get("username", ""),
                        groups=tuple(user.get("groups") or ()))


def events(trail: Trail, backend: str) -> list[dict[str, Any]]:
    return trail.log_events() if backend == "log" else trail.sink.events()


def test_flags_are_the_render(trail: Trail) -> None:
    """kube-apiserver got every rendered --audit-* flag, the paths remapped and nothing else changed."""
    names = [p.split("=", 1)[0] for p in trail.passed]
    assert names[:len(trail.rendered)] == [n for n, _ in trail.rendered]
    for (name, value), given in zip(trail.rendered, trail.passed, strict=False):
        if name not in REMAPPED:
            assert given == (name if value is None else f"{name}={value}")
    assert set(names[len(trail.rendered):]) <= {"--audit-webhook-batch-max-wait"}
    apiserver_args = trail.plane.processes["kube-apiserver"].args
    assert all(p in apiserver_args for p in trail.passed)


def test_requests_were_served(trail: Trail) -> None:
    """The table really happened: each request succeeded, except the exec, which has no node to run on."""
    assert set(trail.responses) == {c.id for c in CASES if not c.id.startswith("pods-exec")}
    for case, (status, body) in trail.responses.items():
        assert 200 <= status < 300, f"{case}: {status} {body[:500]!r}"
    assert trail.exec_result is not None and trail.exec_result.returncode != 0
    assert "does not have a host assigned" in trail.exec_result.stderr
    # The GET and the list returned the value: had their events recorded responses, the value would show.
    encoded = base64.b64encode(trail.secret_values[0].encode())
    assert encoded in trail.responses["secret-get"][1] and encoded in trail.responses["secret-list"][1]


@pytest.mark.parametrize("backend", ["log", "sink"])
@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_request_is_audited_at_the_policy_level(trail: Trail, case: Case, backend: str) -> None:
    """Every request of the table reaches the audit log and the sink, at the level the policy gives it."""
    found = [e for e in events(trail, backend) if case.matches(e)]
    assert found, f"no ResponseComplete event for {case} in the {backend}"
    for ev in found:
        req = request_of(ev)
        expected = explain(trail.policy, req, "policy.yaml")
        assert expected.level == explain_preset(PRESET, req).level, "the policy file is not the preset's"
        assert expected.level != "None", f"{case.id}: the policy does not log it"
        assert ev["level"] == expected.level, f"{case.id}: {ev['level']}, policy says {expected.text()}"


@pytest.mark.parametrize("backend", ["log", "sink"])
def test_every_event_matches_the_evaluator(trail: Trail, backend: str) -> None:
    """Not just the table: every event either backend recorded has the level our evaluator predicts, and
    no Metadata event carries a body."""
    found = events(trail, backend)
    assert found
    wrong = [(e["verb"], e.get("objectRef"), e["requestURI"], e["level"], explain(trail.policy, request_of(e), "").level)
             for e in found if e["level"] != explain(trail.policy, request_of(e), "").level]
    assert not wrong
    assert not [e["auditID"] for e in found if e["level"] == "Metadata" and ("requestObject" in e or "responseObject" in e)]
    assert all(e["stage"] != "RequestReceived" for e in found), "the policy omits RequestReceived"


@pytest.mark.parametrize("backend", ["log", "sink"])
def test_secrets_are_metadata_only(trail: Trail, backend: str) -> None:
    found = [e for e in events(trail, backend) if (e.get("objectRef") or {}).get("resource") == "secrets"
             and (e.get("objectRef") or {}).get("namespace") == NAMESPACE]
    assert {e["verb"] for e in found} >= {"create", "get", "list", "update"}
    for ev in found:
        assert ev["level"] == "Metadata"
        assert "requestObject" not in ev and "responseObject" not in ev


@pytest.mark.parametrize("backend", ["log", "sink"])
def test_pod_create_records_request_and_response(trail: Trail, backend: str) -> None:
    (case,) = [c for c in CASES if c.id == "pod-create"]
    ev = next(e for e in events(trail, backend) if case.matches(e))
    assert ev["level"] == "RequestResponse"
    assert ev["requestObject"]["metadata"]["name"] == POD
    assert ev["responseObject"]["metadata"]["uid"]
    assert {"name": "CANARY", "value": trail.canary} in ev["requestObject"]["spec"]["containers"][0]["env"]


@pytest.mark.parametrize("backend", ["log", "sink"])
def test_pod_over_1mib_is_not_lost(trail: Trail, backend: str) -> None:
    """The >1 MiB Pod's event is recorded. When the rendered flags make that backend truncate events of
    this size (--audit-{log,webhook}-truncate-enabled=true and a max-event-size, default 100 KiB, below the
    request body alone), the event must say so (annotation audit.k8s.io/truncated: "true") and carry no
    bodies; when they do not (no truncation flags rendered), we only require that the event exists: the
    record is not lost."""
    (case,) = [c for c in CASES if c.id == "pod-create-over-1MiB"]
    found = [e for e in events(trail, backend) if case.matches(e)]
    assert found, f"the >1 MiB Pod's create is missing from the {backend}"
    ev = found[0]
    assert trail.big_body > MIB
    # Decided from the flags, not from the annotation: kube-apiserver's truncate plugin shallow-copies the
    # event and shares its annotation map, so the untruncated copy the webhook backend sends also says
    # "audit.k8s.io/truncated": "true" while carrying both bodies (apiserver v0.36 truncate.go).
    if trail.truncates("log" if backend == "log" else "webhook", trail.big_body):
        assert (ev.get("annotations") or {}).get(TRUNCATED) == "true"
        assert "requestObject" not in ev and "responseObject" not in ev


def test_no_secret_value_anywhere(trail: Trail) -> None:
    """Neither value of the Secret, raw or base64, is in the audit log or in any body the sink received;
    the Pod's canary (logged at RequestResponse) is, so the search looks in the right place."""
    log, sink = trail.log_path.read_bytes(), trail.sink.raw()
    assert trail.canary.encode() in log and trail.canary.encode() in sink
    for value in trail.secret_values:
        for needle in (value.encode(), base64.b64encode(value.encode())):
            assert needle not in log, "a Secret value is in the audit log"
            assert needle not in sink, "a Secret value reached the webhook backend"
