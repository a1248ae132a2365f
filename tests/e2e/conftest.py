"""Session fixtures: one real control plane and one webhook process for all end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.cluster import BIN, ROOT, ControlPlane, WebhookProcess, build_binaries, webhook_configurations
from webhook.adapters.certs import ServiceName, ensure_certs


@pytest.fixture(scope="session")
def plane(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControlPlane]:
    """etcd + kube-apiserver with our CRDs installed."""
    cp = ControlPlane(tmp_path_factory.mktemp("e2e"))
    try:
        cp.start()
        cp.kubectl("apply", "-k", str(ROOT / "deploy/crds"))
        cp.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd/clusters.kubermatic.k8c.io",
                   "crd/seeds.kubermatic.k8c.io")
        yield cp
    finally:
        cp.stop()


@pytest.fixture(scope="session")
def webhook(plane: ControlPlane) -> Iterator[WebhookProcess]:
    """The webhook with --source kube, registered through webhook configurations whose caBundle
    it fills in itself."""
    cert_dir = plane.work / "webhook-certs"
    ensure_certs(cert_dir, ServiceName())
    hook = WebhookProcess(plane, cert_dir)
    plane.apply(*webhook_configurations(hook.port))
    hook.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        bundle = plane.kubectl("get", "mutatingwebhookconfiguration", "audit-webhook", "-o",
                               "jsonpath={.webhooks[0].clientConfig.caBundle}").stdout
        if bundle:
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the webhook did not fill in its caBundle:\n" + hook.log_path.read_text()[-3000:])
    try:
        yield hook
    finally:
        hook.stop()


@pytest.fixture(scope="session")
def helm() -> Path:
    """helm built from e2e/tools/helm; a failed build fails every test that needs it."""
    build_binaries()
    return BIN / "helm"
