"""Every Cluster's `report` row as the reconciler's metrics: audit state and drift per Cluster.

The Lease holder computes each cluster namespace's rows with the same functions as `audit-webhook
report`, from its cached Clusters and Seeds and that namespace's apiserver Pods (listed by label),
`audit-config`, the Secrets its Clusters name and its egress NetworkPolicy (compared with the one
the reconciler keeps under its configuration): from the reconciler's watches what they keep (the
NetworkPolicy; standalone, also `audit-config` and the fluent-bit Secret), the rest read.

It reads a namespace again only when something there may have changed, not on a timer: the
reconciler's watches (Clusters, Seeds, the objects it keeps, the apiserver Pods' metadata, its
configuration) mark the namespaces they concern, and each is computed again within `poll`
seconds. What no watch covers (on a KKP seed: KKP's own `audit-config` and fluent-bit Secret) is
caught by a slow sweep that reads every namespace once per `interval`, spread evenly over it, so
that a seed of 10,000 clusters is not read 10,000 namespaces at a time. Reads go through the
reconciler's rate-limited client. The other replicas expose no per-Cluster series, so Prometheus
sees each Cluster once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from kubernetes import client
from kubernetes.client.rest import ApiException

from webhook.adapters.config_file import ConfigFile
from webhook.adapters.kubeapi import api_message
from webhook.adapters.metrics import ReconcilerMetrics
from webhook.adapters.store.kube_inventory import Watched, namespace_rows
from webhook.core.lookup import Lookup
from webhook.core.objects import cluster_namespace
from webhook.core.options import Options
from webhook.core.reconcile_plan import Mode
from webhook.core.report import Row

log = logging.getLogger(__name__)

MAX_RETRY_S = 300.0  # the longest a namespace that cannot be read waits for its next try


class ClusterReporter:
    """Keeps `metrics`' per-Cluster series current while `leading()` says this replica leads."""

    def __init__(self, api_client: client.ApiClient, lookup: Lookup, options: Options, mode: Mode,
                 metrics: ReconcilerMetrics, leading: Callable[[], bool], *, config: ConfigFile,
                 webhook_namespace: str, interval: float = 21600.0, poll: float = 1.0,
                 watched: Watched | None = None) -> None:
        self.api, self.lookup, self.options, self.mode = api_client, lookup, options, mode
        # The reconciler's configuration (as it reloads it) and namespace: the egress policy it keeps.
        self.config, self.webhook_namespace = config, webhook_namespace
        self.metrics, self.leading = metrics, leading
        self.watched = watched  # the reconciler's watches: what they keep is not read again
        # `poll`: how soon a change is reported, a replica that starts to lead reports, and one that
        # stops forgets. `interval`: the sweep's period.
        self.interval, self.poll = interval, poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._dirty: set[str] = set()
        self._all_dirty = True
        self._rows: dict[str, list[Row]] = {}  # by cluster namespace
        self._visited: dict[str, float] = {}  # namespace -> monotonic time its rows were computed
        self._credit = 0.0  # namespaces the sweep may read now
        # Namespaces that could not be read: (failures in a row, when to try again).
        self._retry: dict[str, tuple[int, float]] = {}
        self._last: float | None = None  # when the last step ran

    def changed(self, namespace: str | None) -> None:
        """Something in `namespace` (None: anything anywhere) may have changed: compute it again soon."""
        with self._lock:
            if namespace is None:
                self._all_dirty = True
            else:
                self._dirty.add(namespace)

    def start(self) -> None:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="cluster-report", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the loop (after the namespace in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        led = False
        while not self._stop.is_set():
            if not self.leading():
                if led:
                    self.metrics.forget_clusters()
                    self._forget()
                led = False
            else:
                led = True
                try:
                    self.step(time.monotonic())
                except Exception as exc:  # the last values stay; the report's timestamp ages
                    if not self._stop.is_set():
                        log.warning("cannot report the Clusters' audit state: %s", _why(exc))
            self._stop.wait(self.poll)

    def _forget(self) -> None:
        with self._lock:
            self._dirty.clear()
            self._all_dirty = True
        self._rows.clear()
        self._visited.clear()
        self._retry.clear()
        self._credit = 0.0
        self._last = None

    def step(self, now: float) -> None:
        """Compute the namespaces marked changed, those due for another try and those the sweep is due
        to read, then set the series. A namespace that cannot be read is tried again after a backoff
        of its own (the others go on); the report's timestamp advances only when no namespace is
        waiting for that and every watch is connected. Raises the last failure, if any."""
        if self._last is not None:  # the sweep: every namespace once per interval, never more at once
            self._credit = min(self._credit + (now - self._last) / self.interval * len(self._visited),
                               float(len(self._visited)))
        self._last = now
        namespaces = {cluster_namespace(c) for c in self.lookup.all_clusters()}
        with self._lock:
            marked = set(namespaces) if self._all_dirty else self._dirty & namespaces
            self._dirty, self._all_dirty = set(), False
        gone = (self._rows.keys() | self._retry.keys()) - namespaces
        for namespace in gone:
            self._rows.pop(namespace, None)
            self._visited.pop(namespace, None)
            self._retry.pop(namespace, None)
        waiting = {ns for ns, (_, at) in self._retry.items() if at > now}
        due = {ns for ns in self._retry if ns not in waiting}
        todo = sorted((marked | due | (namespaces - self._visited.keys())) - waiting)
        if self._credit >= 1:  # the sweep: the longest unread first
            oldest = sorted((t, ns) for ns, t in self._visited.items() if ns not in marked and ns not in self._retry)
            todo += [ns for _, ns in oldest[:int(self._credit)]]
            self._credit -= min(int(self._credit), len(oldest))
        config = self.config.current
        failure: Exception | None = None
        for namespace in todo:
            if self._stop.is_set():
                return
            try:
                self._rows[namespace] = namespace_rows(self.api, self.lookup, namespace, self.options, self.mode,
                                                       config, self.webhook_namespace, self.watched)
            except Exception as exc:
                failures = self._retry.get(namespace, (0, 0.0))[0] + 1
                self._retry[namespace] = (failures, now + min(self.poll * 2 ** failures, MAX_RETRY_S))
                failure = exc
                continue
            self._retry.pop(namespace, None)
            self._visited[namespace] = now
        current = not self._retry and (self.watched is None or self.watched.connected())
        if gone or todo:
            rows = sorted((row for rows in self._rows.values() for row in rows), key=lambda r: r.cluster)
            self.metrics.report(rows, advance=current)
        elif current:
            self.metrics.report_time.set_to_current_time()
        if failure is not None:
            raise failure


def _why(exc: Exception) -> str:
    if isinstance(exc, ApiException):
        return f"API error {exc.status}: {api_message(exc)}"
    return type(exc).__name__
