"""Keep the caBundle of our webhook configurations in step with our CA.

The decision (which webhooks need which bundle) is pure; reading and patching the two
configuration objects is the edge, run at start, when ca.crt changes, and every minute to
undo drift (someone re-applying manifests with an old bundle).
"""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from webhook.adapters.certs import CA_CERT
from webhook.adapters.kubeapi import webhook_configuration_calls

log = logging.getLogger(__name__)
RESYNC_S = 60.0


def cabundle_patch(configuration: dict[str, Any], ca_pem: bytes) -> dict[str, Any] | None:
    """A strategic-merge patch (webhooks merge by name) setting every webhook's caBundle, or None."""
    wanted = base64.b64encode(ca_pem).decode()
    stale = [w["name"] for w in configuration.get("webhooks") or []
             if isinstance(w, dict) and (w.get("clientConfig") or {}).get("caBundle") != wanted]
    if not stale:
        return None
    return {"webhooks": [{"name": name, "clientConfig": {"caBundle": wanted}} for name in stale]}


class CABundleSync:
    """Patches the named Mutating- and ValidatingWebhookConfigurations with the CA in `cert_dir`."""

    def __init__(self, api_client: client.ApiClient, names: list[str], cert_dir: Path) -> None:
        self.api = client.AdmissionregistrationV1Api(api_client)
        self.names = names
        self.cert_dir = cert_dir
        self._synced_ca: bytes | None = None
        self._last = 0.0

    def due(self) -> bool:
        """Whether the CA changed since the last sync, or the last sync is a minute old."""
        try:
            ca = (self.cert_dir / CA_CERT).read_bytes()
        except OSError:
            return False
        return ca != self._synced_ca or time.monotonic() - self._last > RESYNC_S

    def sync(self) -> None:
        """Bring every named configuration's caBundle to the current CA (blocking API calls)."""
        ca = (self.cert_dir / CA_CERT).read_bytes()
        ok = True
        for name in self.names:
            for kind, read, patch in webhook_configuration_calls(self.api):
                try:
                    current = client.ApiClient().sanitize_for_serialization(read(name, _request_timeout=10))
                    body = cabundle_patch(current, ca)
                    if body:
                        patch(name, body, _request_timeout=10)
                        log.info("updated the caBundle of %s %s (%d webhooks)", kind, name, len(body["webhooks"]))
                except ApiException as exc:
                    if exc.status != 404:
                        ok = False
                        log.warning("cannot update the caBundle of %s %s: HTTP %s", kind, name, exc.status)
                except Exception as exc:
                    ok = False
                    log.warning("cannot update the caBundle of %s %s: %s", kind, name, type(exc).__name__)
        if ok:
            self._synced_ca, self._last = ca, time.monotonic()
