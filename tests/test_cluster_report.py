"""The reporter's loop: only the Lease holder has per-Cluster series, and a replica that stops
leading drops them. With no Cluster it makes no API call, so no API server is needed here; the
rows against a real one are tests/e2e/test_metrics.py's."""

from __future__ import annotations

import time

from kubernetes import client

from webhook.adapters.cluster_report import ClusterReporter
from webhook.adapters.config_file import ConfigFile
from webhook.adapters.metrics import ReconcilerMetrics
from webhook.adapters.store import MemoryStore
from webhook.core.options import Options


def _until(check, timeout: float = 120.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check() and time.monotonic() < deadline:
        time.sleep(0.01)
    return check()


def test_the_lease_holder_reports_and_a_replica_that_stops_leading_forgets():
    metrics = ReconcilerMetrics()
    leading = [False]
    reporter = ClusterReporter(client.ApiClient(), MemoryStore(), Options.default(), "kkp", metrics,
                               lambda: leading[0], config=ConfigFile(None), webhook_namespace="audit-webhook",
                               interval=3600, poll=0.01)
    reporter.start()
    try:
        leading[0] = True
        assert _until(lambda: metrics.report_time._value.get() > 0)  # at once, not after the hour's interval
        leading[0] = False
        assert _until(lambda: metrics.report_time._value.get() == 0)
    finally:
        reporter.stop()
