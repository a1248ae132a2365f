"""Hostile input against the live HTTPS server (a real `audit-webhook serve` process).

`make test` runs a small fixed-seed sample; `make fuzz` runs FUZZ_EXAMPLES=10000 (or more) per
endpoint. Invariants: no 5xx; 413 only for bodies over the limit; every 200 is an
AdmissionReview of the request's apiVersion with its uid; the server stays up with bounded
memory; an accepted Cluster never renders a fluent-bit file with more sections than it asks for.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
from pathlib import Path

import jsonpatch
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import EXAMPLES, kkp_pod
from tests.test_fluentbit import parse_classic
from tests.test_serve_process import Serve
from webhook.core import yamlio
from webhook.core.fluentbit import render_classic
from webhook.core.model import audit_logging
from webhook.core.options import Options
from webhook.core.settings import effective_settings

EXAMPLES_PER_RUN = int(os.environ.get("FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES_PER_RUN, deadline=None, derandomize="FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                       HealthCheck.function_scoped_fixture])

odd_text = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=40) | st.sampled_from(
    ["", "\x00", "\n[OUTPUT]\n    Name http", "@INCLUDE /etc/passwd", "${HOME}", "\r\n", "\t", "[", "]]", "\u202e",
     "a" * 5000, "--audit-policy-file", "cluster-auditon01",
     # Line breaks of some layer on the way (YAML 1.1, kubectl, fluent-bit), variables and the plugin policy.
     "\x85@INCLUDE /etc/passwd", "x\u2028[OUTPUT]", "\u2029@SET CLUSTER_ID=other", "\x0b", "\x0c", "\ufeff",
     "${CLUSTER_ID}", "${D}", "$(D)", "on", "lua", "file", "exit", "null", "kubernetes", "stdout x",
     "/var/log/kubernetes/audit/audit.log", "127.0.0.1", "6443", "cluster_id other"])
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=False) | odd_text,
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(odd_text, inner, max_size=5), max_leaves=30)
hostile_map = st.dictionaries(odd_text | st.sampled_from(["Name", "Match", "Host", "@SET", "[FILTER]", "Re gex", "Daemon",
                                                          "Log_File", "HTTP_Port", "storage.path", "code", "Record",
                                                          "Kube_Token_File", "Path"]),
                              odd_text | st.sampled_from(["stdout", "grep", "*"]) | json_values, max_size=5)


@st.composite
def hostile_cluster(draw):
    audit = {"enabled": draw(st.booleans() | json_values),
             "policyPreset": draw(st.sampled_from(["", "minimal", "recommended", "metadata"]) | json_values),
             "sidecar": {"extraEnvs": draw(st.lists(st.fixed_dictionaries({"name": odd_text, "value": odd_text}),
                                                     max_size=3) | json_values),
                         "resources": draw(st.fixed_dictionaries({"limits": st.dictionaries(
                             st.sampled_from(["cpu", "memory"]), odd_text | st.sampled_from(["1", "60Mi", "-1"]))})
                             | json_values),
                         "config": {"service": draw(hostile_map), "filters": draw(st.lists(hostile_map, max_size=3)),
                                    "outputs": draw(st.lists(hostile_map, max_size=3))}}}
    if draw(st.booleans()):
        audit["webhookBackend"] = draw(json_values | st.fixed_dictionaries({
            "auditWebhookConfig": st.fixed_dictionaries({"name": odd_text}), "auditWebhookInitialBackoff": odd_text}))
    return {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "metadata": {"name": draw(odd_text)},
            "spec": {"cloud": {"dc": draw(odd_text)}, "auditLogging": draw(st.just(audit) | json_values)}}


@st.composite
def big_pod(draw):
    pod = kkp_pod()
    n = draw(st.integers(0, 300))
    pod["spec"]["containers"] += [{"name": f"c{i}", "image": "x"} for i in range(draw(st.integers(0, 200)))]
    pod["spec"]["volumes"] += [{"name": f"v{i}", "emptyDir": {}} for i in range(n)]
    api = next(c for c in pod["spec"]["containers"] if c["name"] == "apiserver")
    api["args"] += draw(st.lists(st.sampled_from(["--audit-log-maxage", "7", "--audit-policy-file=/x", "--v=2"])
                                 | odd_text, max_size=300))
    if draw(st.booleans()):
        api["args"] = draw(json_values)
    return pod


def review_body(draw_obj, kind: str, namespace: str, uid) -> dict:
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
            "request": {"uid": uid, "kind": {"group": "" if kind == "Pod" else "kubermatic.k8c.io", "version": "v1",
                                             "kind": kind},
                        "operation": "CREATE", "namespace": namespace, "object": draw_obj}}


bodies = st.one_of(
    st.binary(max_size=300),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.builds(lambda obj, ns, uid: json.dumps(review_body(obj, "Pod", ns, uid)).encode(),
              big_pod(), st.sampled_from(["cluster-auditon01", "cluster-both01", "cluster-rejected01", "x"]),
              odd_text.filter(bool)),
    st.builds(lambda obj, uid: json.dumps(review_body(obj, "Cluster", "", uid)).encode(), hostile_cluster(),
              odd_text.filter(bool)),
    st.builds(lambda req: json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
                                      "request": req}).encode(), json_values),
).flatmap(lambda b: st.sampled_from([b, b[: max(1, len(b) // 2)]]))  # and truncated


class Client:
    """One keep-alive HTTPS connection, re-opened if the server closes it."""

    def __init__(self, port: int, ca: Path) -> None:
        self.port, self.ctx = port, ssl.create_default_context(cafile=str(ca))
        self.conn: http.client.HTTPSConnection | None = None

    def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        for attempt in (1, 2):
            if self.conn is None:
                self.conn = http.client.HTTPSConnection("127.0.0.1", self.port, context=self.ctx, timeout=30)
            try:
                self.conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
                response = self.conn.getresponse()
                return response.status, response.read()
            except (ConnectionError, http.client.HTTPException):
                self.conn.close()
                self.conn = None
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS"):
            return int(line.split()[1])
    return 0


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    server = Serve(tmp_path_factory.mktemp("fuzz-certs"), "--decision-log", "off")
    client = Client(server.port, server.cert_dir / "ca.crt")
    yield server, client
    assert server.stop() == 0


def check_answer(body: bytes, status: int, answer: bytes) -> dict | None:
    assert status in (200, 400, 413), (status, answer[:300])
    if status == 413:
        assert len(body) > 7 * 1024 * 1024
    if status != 200:
        assert "error" in json.loads(answer)
        return None
    review = json.loads(answer)
    sent = json.loads(body)
    assert review["apiVersion"] == sent["apiVersion"] and review["kind"] == "AdmissionReview"
    assert review["response"]["uid"] == sent["request"]["uid"]
    assert isinstance(review["response"]["allowed"], bool)
    return review


@FUZZ
@given(body=bodies)
def test_fuzz_mutate(live, body):
    server, client = live
    status, answer = client.post("/mutate", body)
    review = check_answer(body, status, answer)
    if review and "patch" in review["response"]:
        # Every patch must apply to the object it was made for (else kube-apiserver refuses the Pod).
        assert review["response"]["patchType"] == "JSONPatch"
        ops = json.loads(base64.b64decode(review["response"]["patch"]))
        jsonpatch.apply_patch(json.loads(body)["request"]["object"], ops)
    assert server.proc.poll() is None


@FUZZ
@given(body=bodies)
def test_fuzz_validate(live, body):
    server, client = live
    status, answer = client.post("/validate", body)
    review = check_answer(body, status, answer)
    assert server.proc.poll() is None
    if review and review["response"]["allowed"]:
        obj = json.loads(body)["request"].get("object")
        if isinstance(obj, dict) and obj.get("kind") == "Cluster" and isinstance(obj.get("spec"), dict):
            effective_settings(obj, None)  # an accepted Cluster must be usable by every other part
            config = audit_logging(obj["spec"].get("auditLogging")).sidecar.config
            text = render_classic(config, Options.default())
            sections = parse_classic(text)  # str.splitlines: every line break Python knows, NEL and U+2028 too
            asked = bool(config.service) + 1 + 1 + len(config.filters) + max(1, len(config.outputs))
            assert len(sections) == asked
            assert all(not name.startswith("@") for name, _ in sections)
            assert yaml.safe_load(yamlio.dumps({"conf": text})) == {"conf": text}


def test_memory_stays_bounded_and_big_bodies_get_413(live):
    server, client = live
    before = rss_kib(server.proc.pid)
    pod = kkp_pod()
    body = json.dumps(review_body(pod, "Pod", "cluster-auditon01", "m")).encode()
    for _ in range(300):
        status, _ = client.post("/mutate", body)
        assert status == 200
    huge = json.dumps(review_body({"x": "a" * (8 * 1024 * 1024)}, "Pod", "x", "h")).encode()
    assert client.post("/mutate", huge)[0] == 413
    assert rss_kib(server.proc.pid) - before < 100 * 1024, "RSS grew by more than 100 MiB"
    assert EXAMPLES.is_dir()
