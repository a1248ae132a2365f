"""Every Cluster's `report` row as the reconciler's metrics: audit state and drift per Cluster.

The Lease holder computes the rows every `interval` seconds, with the same functions as
`audit-webhook report`, from its cached Clusters and Seeds and, a cluster namespace at a time, that
namespace's apiserver Pods (listed by label), `audit-config`, the Secrets its Clusters name and its
egress NetworkPolicy (compared with the one the reconciler keeps under its configuration). The
other replicas expose no per-Cluster series, so Prometheus sees each Cluster once.
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
from webhook.adapters.store.kube_inventory import kube_rows
from webhook.core.lookup import Lookup
from webhook.core.options import Options
from webhook.core.reconcile_plan import Mode

log = logging.getLogger(__name__)


class ClusterReporter:
    """Keeps `metrics`' per-Cluster series current while `leading()` says this replica leads."""

    def __init__(self, api_client: client.ApiClient, lookup: Lookup, options: Options, mode: Mode,
                 metrics: ReconcilerMetrics, leading: Callable[[], bool], *, config: ConfigFile,
                 webhook_namespace: str, interval: float = 60.0, poll: float = 1.0) -> None:
        self.api, self.lookup, self.options, self.mode = api_client, lookup, options, mode
        # The reconciler's configuration (as it reloads it) and namespace: the egress policy it keeps.
        self.config, self.webhook_namespace = config, webhook_namespace
        self.metrics, self.leading = metrics, leading
        # `poll`: how soon a replica that starts to lead reports, and one that stops forgets.
        self.interval, self.poll = interval, poll
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def refresh(self) -> None:
        """Compute every Cluster's row now and set the series from them."""
        self.metrics.report(kube_rows(self.api, self.lookup, self.options, self.mode, self.config.current,
                                      self.webhook_namespace))

    def start(self) -> None:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="cluster-report", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """End the loop (after the refresh in progress)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        due: float | None = None  # when to refresh next; None while another replica leads
        while not self._stop.is_set():
            if not self.leading():
                if due is not None:
                    self.metrics.forget_clusters()
                due = None
            elif due is None or time.monotonic() >= due:
                try:
                    self.refresh()
                except ApiException as exc:
                    # The last values stay, and audit_webhook_cluster_report_timestamp_seconds ages.
                    log.warning("cannot report the Clusters' audit state: API error %s: %s", exc.status,
                                api_message(exc))
                except Exception as exc:
                    log.warning("cannot report the Clusters' audit state: %s", type(exc).__name__)
                due = time.monotonic() + self.interval
            self._stop.wait(self.poll)
