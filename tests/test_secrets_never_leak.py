"""No Secret content reaches a response, a warning, a log line or a metric."""

from __future__ import annotations

import logging

import pytest

from tests.helpers import KUBECONFIG, cluster, review, secret, webhook_backend
from webhook.core.snapshot import LoadError, decode_secret

MARKER = "s3cr3t-MARKER-7f3a"

LEAKY_SECRETS = {
    # name: webhook.yaml content, each carrying the marker somewhere a careless message would quote
    "no-context": f"apiVersion: v1\nkind: Config\nusers:\n- name: u\n  user:\n    token: {MARKER}\n",
    "bad-context": KUBECONFIG.replace("current-context: sink", f"current-context: {MARKER}"),
    "http-server": KUBECONFIG.replace("https://audit-sink.audit.svc:8443/events", f"http://{MARKER}.example/x"),
    "bad-url": KUBECONFIG.replace("https://audit-sink.audit.svc:8443/events", f"{MARKER}://"),
    "not-yaml": f"clusters: [{MARKER}\n  - : :",
    "user-missing": KUBECONFIG.replace('    user: ""', f"    user: {MARKER}"),
    "token-ok": KUBECONFIG.replace("users: []", f"users:\n- name: x\n  user:\n    token: {MARKER}"),
}


async def test_validation_over_https_never_shows_secret_content(start_server, caplog):
    caplog.set_level(logging.DEBUG)
    objects = [secret("cluster-abc", name, {"webhook.yaml": text}) for name, text in LEAKY_SECRETS.items()]
    objects.append(secret("cluster-abc", "wrong-key", {MARKER: MARKER}))
    server = await start_server(objects)
    seen = []
    for name in [*LEAKY_SECRETS, "wrong-key"]:
        obj = cluster(audit={"enabled": True, "webhookBackend": webhook_backend(name)})
        for operation, old in (("CREATE", None), ("UPDATE", obj)):
            status, body = await server.post("/validate", review(obj, kind="Cluster", group="kubermatic.k8c.io",
                                                                 operation=operation, old=old))
            assert status == 200
            seen.append(body)
    # The rules did look at the content: most of these are refused, one warns.
    assert sum(not b["response"]["allowed"] for b in seen) == 6
    assert any("plain http://" in w for b in seen for w in b["response"].get("warnings", []))
    _, metrics = await server.get("/metrics")
    everything = repr(seen) + metrics + caplog.text
    assert MARKER not in everything
    assert MARKER.lower() not in everything.lower()


def test_store_errors_name_the_key_not_the_value():
    with pytest.raises(LoadError) as err:
        decode_secret({"data": {"webhook.yaml": f"not base64 {MARKER}"}}, "secrets.yaml")
    assert "secrets.yaml" in str(err.value) and "webhook.yaml" in str(err.value)
    assert MARKER not in str(err.value)
