"""SIGTERM stops `serve --source kube --reconcile` and `reconcile` cleanly, every time: the watches,
the reconciler and the server end, the Lease is handed over, and the exit code is 0.

Real: etcd, kube-apiserver and the two processes; each is stopped while its watches are open.
"""

from __future__ import annotations

import json
import socket
import time

from tests.e2e.cluster import ControlPlane, ReconcilerProcess, WebhookProcess, eventually
from tests.e2e.test_kube import namespace
from webhook.adapters.certs import ServiceName, ensure_certs

STOPS = 20  # of each process: 20 stops of `serve --reconcile`, 20 of `reconcile`


def _holder(plane: ControlPlane) -> str:
    result = plane.kubectl("get", "lease", "audit-webhook-reconciler", "-n", "audit-webhook", "-o", "json",
                           check=False)
    return json.loads(result.stdout)["spec"].get("holderIdentity") or "" if result.returncode == 0 else ""


def test_sigterm_stops_every_time_with_exit_0_and_hands_the_lease_over(plane: ControlPlane):
    namespace(plane, "audit-webhook")
    cert_dir = plane.work / "clean-stop-certs"
    ensure_certs(cert_dir, ServiceName())
    codes = []
    for i in range(STOPS):
        served = WebhookProcess(plane, cert_dir, label=f"clean-stop-serve-{i}", extra=(
            "--reconcile", "--mode", "standalone", "--webhook-config-name", "none",
            "--audited-namespaces-config", "none"))
        served.start()
        me = f"{socket.gethostname()}-{served.proc.pid}"
        assert eventually(lambda me=me: _holder(plane) == me, timeout=5)
        time.sleep(0.3)  # the watches are open, a pass may be under way
        served.proc.terminate()
        codes.append(("serve", served.proc.wait(timeout=60)))
        alone = ReconcilerProcess(plane, label=f"clean-stop-reconcile-{i}", extra=(
            "--mode", "standalone", "--audited-namespaces-config", "none"))
        alone.start()
        me = f"{socket.gethostname()}-{alone.proc.pid}"
        assert eventually(lambda me=me: _holder(plane) == me, timeout=5)  # at once: the last holder let go
        codes.append(("reconcile", alone.stop()))
        assert _holder(plane) == ""  # released, not left to expire
    assert codes == [(name, 0) for name, _ in codes]
