"""One CA and serving certificate for every replica, kept in a Secret of the webhook's namespace.

At start a replica adopts the Secret's certificates, or creates them and the Secret (the first
replica wins; the others read what it wrote). Every minute each replica compares the Secret with
its files: a renewal by another replica reaches it there, and a replica whose certificate is near
expiry renews it and updates the Secret (optimistic concurrency: a lost race just re-reads).
"""

from __future__ import annotations

import base64
import logging
import time
from pathlib import Path

from kubernetes import client
from kubernetes.client.rest import ApiException

from webhook.adapters.certs import CA_CERT, CA_KEY, TLS_CERT, TLS_KEY, ServiceName, ensure_certs, write_atomic

log = logging.getLogger(__name__)
FILES = (CA_CERT, CA_KEY, TLS_CERT, TLS_KEY)
RESYNC_S = 60.0


class TLSSecret:
    """The shared certificate Secret and the local certificate folder, kept equal."""

    def __init__(self, api_client: client.ApiClient, namespace: str, name: str, cert_dir: Path,
                 service: ServiceName) -> None:
        self.core = client.CoreV1Api(api_client)
        self.namespace, self.name, self.cert_dir, self.service = namespace, name, cert_dir, service
        self._last = 0.0

    def _read(self) -> client.V1Secret | None:
        try:
            return self.core.read_namespaced_secret(self.name, self.namespace, _request_timeout=10)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def _files(self) -> dict[str, str]:
        return {f: base64.b64encode((self.cert_dir / f).read_bytes()).decode() for f in FILES}

    def _adopt(self, secret: client.V1Secret) -> bool:
        """Write the Secret's certificates into the folder; False when it lacks a key."""
        data = secret.data or {}
        if not all(data.get(f) for f in FILES):
            return False
        self.cert_dir.mkdir(parents=True, exist_ok=True)
        for f in (CA_KEY, CA_CERT, TLS_KEY, TLS_CERT):  # key before cert, as certs.create_serving does
            content = base64.b64decode(data[f])
            path = self.cert_dir / f
            if not path.exists() or path.read_bytes() != content:
                write_atomic(path, content, 0o600 if f.endswith(".key") else 0o644)
        return True

    def sync(self) -> None:
        """Make the folder and the Secret agree, renewing the certificate when it is due (blocking)."""
        secret = self._read()
        if secret is not None and self._adopt(secret):
            if ensure_certs(self.cert_dir, self.service):  # expiring, or a Service name missing
                secret.data = self._files()
                try:
                    self.core.replace_namespaced_secret(self.name, self.namespace, secret, _request_timeout=10)
                    log.info("renewed the serving certificate in Secret %s/%s", self.namespace, self.name)
                except ApiException as exc:
                    if exc.status != 409:
                        raise
                    self._adopt(self._read() or secret)  # another replica renewed first
        else:
            ensure_certs(self.cert_dir, self.service)
            body = client.V1Secret(metadata=client.V1ObjectMeta(name=self.name, namespace=self.namespace,
                                                                labels={"app.kubernetes.io/name": "audit-webhook"}),
                                   type="Opaque", data=self._files())
            try:
                if secret is None:
                    self.core.create_namespaced_secret(self.namespace, body, _request_timeout=10)
                else:  # deploy/ creates it empty: fill it in, keeping its metadata (kubectl's included)
                    body.metadata = secret.metadata
                    self.core.replace_namespaced_secret(self.name, self.namespace, body, _request_timeout=10)
                log.info("stored the CA and serving certificate in Secret %s/%s", self.namespace, self.name)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                winner = self._read()
                if winner is not None:
                    self._adopt(winner)
        self._last = time.monotonic()

    def due(self) -> bool:
        """Whether a minute has passed since the last sync."""
        return time.monotonic() - self._last > RESYNC_S
