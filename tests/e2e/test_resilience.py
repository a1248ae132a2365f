"""The API going away and coming back; certificates shared between replicas (real API)."""

from __future__ import annotations

import base64
import json
import ssl
import urllib.error
import urllib.request

import yaml
from cryptography import x509

from tests.e2e.cluster import ROOT, ControlPlane, WebhookProcess, eventually
from tests.e2e.test_kube import create_pod_when_injected, kkp_cluster, namespace, pod_in
from tests.helpers import review
from webhook.adapters.certs import ServiceName, ensure_certs
from webhook.adapters.store.kube import load_api_client
from webhook.adapters.tls_secret import TLSSecret


def _webhook_get(hook: WebhookProcess, path: str) -> str:
    ctx = hook.plane.client_context(hook.cert_dir / "ca.crt")
    with urllib.request.urlopen(f"https://127.0.0.1:{hook.port}{path}", context=ctx, timeout=5) as r:
        return r.read().decode()


def _webhook_post(hook: WebhookProcess, path: str, body: dict) -> dict:
    ctx = hook.plane.client_context(hook.cert_dir / "ca.crt")
    req = urllib.request.Request(f"https://127.0.0.1:{hook.port}{path}", data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, context=ctx, timeout=5) as r:
        return json.loads(r.read())


def test_cached_clusters_keep_working_while_the_api_is_down(plane: ControlPlane, webhook: WebhookProcess):
    namespace(plane, "cluster-e2ecache")
    plane.apply(kkp_cluster("e2ecache", audit={"enabled": True}))
    create_pod_when_injected(plane, "cluster-e2ecache")
    argv = plane.pause("kube-apiserver")
    try:
        assert eventually(lambda: "audit_webhook_cache_synced 0.0" in _webhook_get(webhook, "/metrics"))
        answer = _webhook_post(webhook, "/mutate", review(pod_in("cluster-e2ecache"), namespace="cluster-e2ecache"))
        assert answer["response"]["allowed"] is True and answer["response"]["patch"]
        assert _webhook_get(webhook, "/readyz") == "ok"
    finally:
        plane.resume("kube-apiserver", argv)
    assert eventually(lambda: "audit_webhook_cache_synced 1.0" in _webhook_get(webhook, "/metrics"), timeout=60)
    log = webhook.log_path.read_text()
    assert "cache lost the API" in log and "answering from the cache, which is now stale" in log
    # Changes made after the outage reach the cache (it relisted and watches again).
    namespace(plane, "cluster-e2eafter")
    plane.apply(kkp_cluster("e2eafter", audit={"enabled": True}))
    pod = create_pod_when_injected(plane, "cluster-e2eafter")
    assert "audit-logs" in [c["name"] for c in pod["spec"]["containers"]]


def test_replicas_share_one_certificate_through_a_secret(plane: ControlPlane, tmp_path):
    namespace(plane, "audit-webhook")
    api = load_api_client(str(plane.kubeconfig))
    first = TLSSecret(api, "audit-webhook", "e2e-tls", tmp_path / "a", ServiceName())
    second = TLSSecret(api, "audit-webhook", "e2e-tls", tmp_path / "b", ServiceName())
    first.sync()
    second.sync()
    for name in ("ca.crt", "tls.crt", "tls.key"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    stored = json.loads(plane.kubectl("get", "secret", "-n", "audit-webhook", "e2e-tls", "-o", "json").stdout)
    assert base64.b64decode(stored["data"]["tls.crt"]) == (tmp_path / "a" / "tls.crt").read_bytes()
    # A replica that needs a renewal (here: other Service names) renews and stores it, same CA.
    third = TLSSecret(api, "audit-webhook", "e2e-tls", tmp_path / "c", ServiceName("other", "audit-webhook"))
    third.sync()
    stored = json.loads(plane.kubectl("get", "secret", "-n", "audit-webhook", "e2e-tls", "-o", "json").stdout)
    renewed = x509.load_pem_x509_certificate(base64.b64decode(stored["data"]["tls.crt"]))
    san = renewed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "other.audit-webhook.svc" in san.get_values_for_type(x509.DNSName)
    assert base64.b64decode(stored["data"]["ca.crt"]) == (tmp_path / "a" / "ca.crt").read_bytes()
    # A certificate renewed elsewhere reaches a replica's files at its next sync.
    ensure_certs(tmp_path / "c", ServiceName(), renew=True)
    patch = {"data": {k: base64.b64encode((tmp_path / "c" / k).read_bytes()).decode() for k in ("tls.crt", "tls.key")}}
    plane.kubectl("patch", "secret", "-n", "audit-webhook", "e2e-tls", "--type=merge", "-p", json.dumps(patch))
    second.sync()
    assert (tmp_path / "b" / "tls.crt").read_bytes() == (tmp_path / "c" / "tls.crt").read_bytes()
    assert (tmp_path / "b" / "tls.key").read_bytes() == (tmp_path / "c" / "tls.key").read_bytes()


def test_the_empty_secret_deploy_ships_is_filled_in_and_keeps_its_metadata(plane: ControlPlane, tmp_path):
    """deploy/ creates audit-webhook-tls empty, so the server needs no right to create Secrets."""
    namespace(plane, "audit-webhook")
    shipped = yaml.safe_load((ROOT / "deploy/overlays/kkp/tls-secret.yaml").read_text())
    shipped["metadata"]["name"] = "e2e-shipped-tls"
    plane.kubectl("apply", "-f", "-", stdin=json.dumps(shipped))
    TLSSecret(load_api_client(str(plane.kubeconfig)), "audit-webhook", "e2e-shipped-tls", tmp_path / "a",
              ServiceName()).sync()
    stored = json.loads(plane.kubectl("get", "secret", "-n", "audit-webhook", "e2e-shipped-tls", "-o", "json").stdout)
    assert base64.b64decode(stored["data"]["tls.crt"]) == (tmp_path / "a" / "tls.crt").read_bytes()
    assert "kubectl.kubernetes.io/last-applied-configuration" in stored["metadata"]["annotations"]
    # Applying deploy/ again leaves the certificates alone.
    plane.kubectl("apply", "-f", "-", stdin=json.dumps(shipped))
    again = json.loads(plane.kubectl("get", "secret", "-n", "audit-webhook", "e2e-shipped-tls", "-o", "json").stdout)
    assert again["data"] == stored["data"]


def test_the_webhook_answers_only_kube_apiservers_client_certificate(plane: ControlPlane, webhook: WebhookProcess):
    """Mutual TLS: kube-apiserver presents its admission client certificate (AdmissionConfiguration),
    every other e2e test passes through it; a client without one gets no answer."""
    assert _webhook_get(webhook, "/healthz") == "ok"
    bare = ssl.create_default_context(cafile=str(webhook.cert_dir / "ca.crt"))
    try:
        with urllib.request.urlopen(f"https://127.0.0.1:{webhook.port}/healthz", context=bare, timeout=5):
            pass
    except (ssl.SSLError, urllib.error.URLError, ConnectionError) as exc:
        assert "certificate" in str(exc).lower() or isinstance(exc, ConnectionError | urllib.error.URLError)
    else:
        raise AssertionError("a client without a certificate got an answer")
