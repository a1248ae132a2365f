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


class _Reads:
    """Stands in for reading a namespace from the API: records which namespaces were read."""

    def __init__(self):
        self.namespaces: list[str] = []
        self.failing: set[str] = set()

    def __call__(self, _api, _lookup, namespace, *_args):
        if namespace in self.failing:
            raise TimeoutError(namespace)
        self.namespaces.append(namespace)
        return []


def _reporter(monkeypatch, n: int, interval: float = 86400.0):
    from tests.helpers import cluster
    from webhook.adapters import cluster_report
    from webhook.core.snapshot import Snapshot

    reads = _Reads()
    monkeypatch.setattr(cluster_report, "namespace_rows", reads)
    store = MemoryStore(Snapshot.of([cluster(f"c{i}") for i in range(n)]))
    metrics = ReconcilerMetrics()
    reporter = ClusterReporter(client.ApiClient(), store, Options.default(), "kkp", metrics, lambda: True,
                               config=ConfigFile(None), webhook_namespace="audit-webhook", interval=interval)
    return reporter, reads, metrics


def test_a_namespace_is_read_again_only_when_something_there_changed(monkeypatch):
    reporter, reads, metrics = _reporter(monkeypatch, 3)
    reporter.step(0.0)
    assert sorted(reads.namespaces) == ["cluster-c0", "cluster-c1", "cluster-c2"]  # the new leader: all
    reads.namespaces.clear()
    for t in range(1, 60):
        reporter.step(float(t))
    assert reads.namespaces == []  # nothing changed: nothing read, however often it looks
    assert metrics.report_time._value.get() > 0
    reporter.changed("cluster-c1")
    reporter.changed("cluster-elsewhere")  # no Cluster's: not read
    reporter.step(60.0)
    assert reads.namespaces == ["cluster-c1"]
    reporter.changed(None)  # a Seed or the configuration: every namespace
    reporter.step(61.0)
    assert len(reads.namespaces) == 4


def test_the_sweep_reads_every_namespace_once_per_interval_oldest_first(monkeypatch):
    reporter, reads, _ = _reporter(monkeypatch, 10, interval=100.0)
    reporter.step(0.0)
    reads.namespaces.clear()
    for t in range(1, 102):
        reporter.step(float(t))
    assert sorted(reads.namespaces) == sorted(f"cluster-c{i}" for i in range(10))  # each once
    assert reads.namespaces[0] == "cluster-c0"  # the longest unread (all were read together; then by name)
    assert reporter.step(500.0) is None and len(reads.namespaces) == 20  # after a pause: one round, no more


def test_a_namespace_that_cannot_be_read_is_tried_again_after_a_backoff_and_the_others_go_on(monkeypatch):
    import pytest

    reporter, reads, metrics = _reporter(monkeypatch, 3)
    reads.failing = {"cluster-c1"}
    with pytest.raises(TimeoutError):
        reporter.step(0.0)
    assert reads.namespaces == ["cluster-c0", "cluster-c2"]  # not starved by the one before them
    assert metrics.report_time._value.get() == 0  # not current while one waits
    reads.failing.clear()
    reads.namespaces.clear()
    reporter.step(1.0)
    assert reads.namespaces == []  # its backoff: 2 s after the first failure
    reporter.step(2.5)
    assert reads.namespaces == ["cluster-c1"] and metrics.report_time._value.get() > 0


def test_the_report_is_not_current_while_a_watch_is_disconnected(monkeypatch):
    class Watches:
        up = False

        def covers(self, kind, name):
            return False

        def connected(self):
            return self.up

    reporter, _, metrics = _reporter(monkeypatch, 1)
    reporter.watched = Watches()
    reporter.step(0.0)
    assert metrics.report_time._value.get() == 0  # a change may be on its way: the rows may be behind
    reporter.watched.up = True
    reporter.step(1.0)
    assert metrics.report_time._value.get() > 0
