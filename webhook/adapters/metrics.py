"""Prometheus metrics of one server, in a registry of its own (no global state)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from webhook.adapters.build_info import build_info
from webhook.core.report import AUDIT_STATES
from webhook.core.validation.rules import RULES

if TYPE_CHECKING:
    from webhook.core.report import Row

# The _created series double every counter for little use on a webhook.
disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


# Label values come from fixed sets: anything a request may name freely becomes "other", so no
# client can grow the registry (and /metrics) without bound.
KINDS = frozenset({"Pod", "Cluster", "Seed", "ConfigMap", "Secret", "CustomResourceDefinition"})
OPERATIONS = frozenset({"CREATE", "UPDATE", "DELETE", "CONNECT"})


def bounded(value: str, allowed: frozenset[str]) -> str:
    """`value` when it is one of `allowed`, else "other"."""
    return value if value in allowed else "other"


RULE_IDS = frozenset(RULES)
# The rule label of warnings no rule stands behind (advice such as "unknown field, ignored").
ADVICE = "none"


def _process(registry: CollectorRegistry, component: str) -> None:
    """What every audit-webhook process exposes: its build and the process_* metrics (CPU, memory,
    open files, start time). `component` tells the admission server from the reconciler."""
    info = {**build_info(), "component": component}
    build = Gauge("audit_webhook_build_info",
                  "The running audit-webhook (always 1): version, image revision, Python version, and the "
                  "component (webhook: the admission server; reconciler).",
                  list(info), registry=registry)
    build.labels(**info).set(1)
    ProcessCollector(registry=registry)


class StoreGauges:
    """A store's sync state and age, read at scrape time; the webhook and the reconciler each have one."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.synced = Gauge(
            "audit_webhook_cache_synced", "1 when the object cache has synced and its watches are connected.",
            registry=registry)
        self.age = Gauge(
            "audit_webhook_cache_age_seconds", "Seconds since the object cache last heard from its source.",
            registry=registry)

    def watch(self, store: object) -> None:
        """Read `store`'s ready(), stale() and cache_age() at every scrape (whichever it has)."""
        ready = getattr(store, "ready", None)
        stale = getattr(store, "stale", None)
        age = getattr(store, "cache_age", None)
        if callable(ready):
            self.synced.set_function(lambda: float(ready() and not (callable(stale) and stale())))
        self.age.set_function(age if callable(age) else (lambda: 0.0))


class Metrics:
    """Counters and histograms named by Prometheus conventions; labels never carry values."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "audit_webhook_admission_requests_total", "Admission reviews answered.",
            ["handler", "kind", "operation", "decision"], registry=self.registry)
        self.duration = Histogram(
            "audit_webhook_admission_duration_seconds", "Time to answer an admission review.",
            ["handler"], registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0))
        self.injections = Counter(
            "audit_webhook_injections_total", "apiserver Pods patched with audit logging.", registry=self.registry)
        self.rejections = Counter(
            "audit_webhook_rejections_total",
            "Objects refused, by handler and rule id (docs/rules.md), or the reason when no rule refused.",
            ["handler", "rule"], registry=self.registry)
        self.warnings = Counter(
            "audit_webhook_warnings_total", 'Warnings returned to clients, by rule id (docs/rules.md), or "none".',
            ["handler", "rule"], registry=self.registry)
        self.bad_requests = Counter(
            "audit_webhook_bad_requests_total", "Bodies refused before admission (HTTP 4xx).", ["code"],
            registry=self.registry)
        self.errors = Counter(
            "audit_webhook_handler_errors_total", "Unexpected exceptions while answering.", ["handler"],
            registry=self.registry)
        self.cert_expiry = Gauge(
            "audit_webhook_certificate_expiry_timestamp_seconds", "When the serving certificate expires.",
            registry=self.registry)
        self.store = StoreGauges(self.registry)
        _process(self.registry, "webhook")
        # The series alerts and dashboards read exist from the start, at 0: a first denial or error is
        # then an increase, not the appearance of a new series (which rate() and increase() miss).
        for handler in ("mutate", "validate"):
            self.duration.labels(handler)
            self.errors.labels(handler)
        for handler, operation in (("mutate", "CREATE"), ("validate", "UPDATE")):
            self.requests.labels(handler, "Pod", operation, "denied")
        # The series of `answered`, looked up once each: labels() costs more than the count itself.
        self._answered: dict[tuple[str, str, str, str], tuple[Any, Any]] = {}

    def answered(self, handler: str, kind: str, operation: str, decision: str, seconds: float) -> None:
        """Count one admission review answered, and the time it took (`kind` and `operation` bounded)."""
        key = (handler, kind, operation, decision)
        series = self._answered.get(key)
        if series is None:
            series = self._answered[key] = (self.requests.labels(*key), self.duration.labels(handler))
        series[0].inc()
        series[1].observe(seconds)

    def rejected(self, handler: str, reason: str, rules: list[str]) -> None:
        """Count one refusal under each distinct rule it hit (or its reason)."""
        for rule in sorted({bounded(r, RULE_IDS) for r in rules} or {reason or "unknown"}):
            self.rejections.labels(handler, rule).inc()

    def warned(self, handler: str, warnings: int, rules: list[str]) -> None:
        """Count `warnings` warnings: one per entry of `rules` under its rule, the rest as advice."""
        for rule in rules:
            self.warnings.labels(handler, bounded(rule, RULE_IDS)).inc()
        if warnings > len(rules):
            self.warnings.labels(handler, ADVICE).inc(warnings - len(rules))

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class ReconcilerMetrics:
    """What the reconciler did, and each cluster's audit state and drift as `report` computes them:
    labels are fixed words, or the names of the Clusters that exist (series of a Cluster that goes
    are removed with it)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.passes = Counter("audit_webhook_reconcile_passes_total",
                              "Full resyncs: every Cluster queued (on taking the Lease, then every resync period).",
                              registry=r)
        self.last_pass = Gauge("audit_webhook_reconcile_last_pass_timestamp_seconds",
                               "When the last full resync queued every Cluster.", registry=r)
        self.duration = Histogram("audit_webhook_reconcile_duration_seconds", "Time to reconcile one Cluster.",
                                  registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0))
        self.errors = Counter("audit_webhook_reconcile_errors_total",
                              "Clusters that could not be reconciled (retried after a backoff), by kind "
                              "(api: the API refused; other: a "
                              "timeout or a broken connection).", ["kind"], registry=r)
        self.actions = Counter("audit_webhook_reconcile_actions_total",
                               "Objects written (create, update, delete) or left alone as someone else's (report).",
                               ["verb", "kind"], registry=r)
        self.rollouts = Counter("audit_webhook_rollouts_total", "apiserver Deployments rolled.", registry=r)
        self.leader = Gauge("audit_webhook_reconciler_leader", "1 while this replica holds the Lease.", registry=r)
        self.audit_state = Gauge("audit_webhook_cluster_audit_state",
                                 "1 for a Cluster's audit state as `report` shows it (on, off, invalid), 0 for the "
                                 "others; only the Lease holder has these series.", ["cluster", "state"], registry=r)
        self.drift = Gauge("audit_webhook_cluster_drift",
                           "Problems of each kind `report` finds in a Cluster (docs/metrics.md lists the kinds); "
                           "kinds without any are left out; only the Lease holder has these series.",
                           ["cluster", "kind"], registry=r)
        self.report_time = Gauge("audit_webhook_cluster_report_timestamp_seconds",
                                 "When the per-Cluster series were last computed (0: not by this replica).",
                                 registry=r)
        self.store = StoreGauges(r)
        _process(r, "reconciler")
        for kind in ("api", "other"):
            self.errors.labels(kind)
        self._drifts: set[tuple[str, str]] = set()
        self._clusters: set[str] = set()
        self._work_queue_metrics(r)

    def _work_queue_metrics(self, r: CollectorRegistry) -> None:
        """The work queue: how much waits, what is retried, what the API refused as out of date."""
        self.queue_depth = Gauge("audit_webhook_reconcile_queue_depth",
                                 "Clusters (and the webhook configurations' namespace lists) queued to be reconciled.",
                                 registry=r)
        self.retries = Counter("audit_webhook_reconcile_retries_total",
                               "Keys queued again after a failure, each after its own exponential backoff.",
                               registry=r)
        self.conflicts = Counter("audit_webhook_reconcile_conflicts_total",
                                 "Writes refused with 409 Conflict (the cache was behind the API): retried.",
                                 registry=r)
        self.stale_pod_rollouts = Counter(
            "audit_webhook_stale_pod_rollouts_total",
            "apiserver Deployments rolled because a Pod was admitted with stale settings (a lagging replica).",
            registry=r)
        self.api_wait = Counter("audit_webhook_reconcile_api_throttle_seconds_total",
                                "Seconds API calls waited for the reconciler's client-side rate limit.", registry=r)

    def report(self, rows: Iterable[Row], *, advance: bool = True) -> None:
        """Set every Cluster's audit state and drift from its report row; drop the series of the
        Clusters and drift kinds that are gone. `advance`: every row is current (the report's time)."""
        self._set_clusters(rows)
        if advance:
            self.report_time.set_to_current_time()

    def forget_clusters(self) -> None:
        """No per-Cluster series: another replica leads and reports them."""
        self._set_clusters([])
        self.report_time.set(0)

    def _set_clusters(self, rows: Iterable[Row]) -> None:
        drifts: dict[tuple[str, str], int] = {}
        clusters = set()
        for row in rows:
            clusters.add(row.cluster)
            for state in AUDIT_STATES:
                self.audit_state.labels(row.cluster, state).set(1 if row.audit == state else 0)
            drifts.update({(row.cluster, kind): n for kind, n in row.drift_counts().items()})
        for cluster in self._clusters - clusters:
            for state in AUDIT_STATES:
                self.audit_state.remove(cluster, state)
        for labels in self._drifts - set(drifts):
            self.drift.remove(*labels)
        for labels, n in drifts.items():
            self.drift.labels(*labels).set(n)
        self._clusters, self._drifts = clusters, set(drifts)

    def render(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)
