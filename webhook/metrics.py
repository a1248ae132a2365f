"""Prometheus metrics of one server, in a registry of its own (no global state)."""

from __future__ import annotations

import platform
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
    generate_latest,
)

from webhook import __version__

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


def rule_label(path: str) -> str:
    """A field path cut at its first index or map key: map keys are the client's and may hold
    anything, brackets included, so only the part our rules name is kept."""
    head, bracket, _ = path.partition("[")
    return head + ("[*]" if bracket else "")


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
            "audit_webhook_warnings_total", "Warnings returned to clients.", ["handler"], registry=self.registry)
        self.bad_requests = Counter(
            "audit_webhook_bad_requests_total", "Bodies refused before admission (HTTP 4xx).", ["code"],
            registry=self.registry)
        self.errors = Counter(
            "audit_webhook_handler_errors_total", "Unexpected exceptions while answering.", ["handler"],
            registry=self.registry)
        self.cert_expiry = Gauge(
            "audit_webhook_certificate_expiry_timestamp_seconds", "When the serving certificate expires.",
            registry=self.registry)
        self.store_objects = Gauge(
            "audit_webhook_store_objects", "Objects known to the store, by kind.", ["kind"], registry=self.registry)

        self.cache_synced = Gauge(
            "audit_webhook_cache_synced", "1 when the object cache has synced and its watches are connected.",
            registry=self.registry)
        self.cache_age = Gauge(
            "audit_webhook_cache_age_seconds", "Seconds since the object cache last heard from its source.",
            registry=self.registry)
        build = Gauge("audit_webhook_build_info", "The running audit-webhook (always 1): its version and Python's.",
                      ["version", "python_version"], registry=self.registry)
        build.labels(__version__, platform.python_version()).set(1)
        ProcessCollector(registry=self.registry)  # process_* : CPU, memory, open files, start time
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
        for rule in sorted({rule_label(r) for r in rules} or {reason or "unknown"}):
            self.rejections.labels(handler, rule).inc()

    def watch_store(self, store: object) -> None:
        """Report a store's sync state and age, read at scrape time."""
        ready = getattr(store, "ready", None)
        stale = getattr(store, "stale", None)
        age = getattr(store, "cache_age", None)
        if callable(ready):
            self.cache_synced.set_function(lambda: float(ready() and not (callable(stale) and stale())))
        self.cache_age.set_function(age if callable(age) else (lambda: 0.0))

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)


class ReconcilerMetrics:
    """What the reconciler did, and each cluster's audit state: labels are fixed words, or the
    names of the Clusters that exist (series of a Cluster that goes are removed with it)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.passes = Counter("audit_webhook_reconcile_passes_total", "Passes over every Cluster.", registry=r)
        self.last_pass = Gauge("audit_webhook_reconcile_last_pass_timestamp_seconds",
                               "When the last pass over every Cluster ended.", registry=r)
        self.duration = Histogram("audit_webhook_reconcile_duration_seconds", "Time to reconcile one Cluster.",
                                  registry=r, buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0))
        self.errors = Counter("audit_webhook_reconcile_errors_total",
                              "Clusters a pass could not reconcile, by kind (api: the API refused; other: a "
                              "timeout or a broken connection).", ["kind"], registry=r)
        self.actions = Counter("audit_webhook_reconcile_actions_total",
                               "Objects written (create, update, delete) or left alone as someone else's (report).",
                               ["verb", "kind"], registry=r)
        self.rollouts = Counter("audit_webhook_rollouts_total", "apiserver Deployments rolled.", registry=r)
        self.leader = Gauge("audit_webhook_reconciler_leader", "1 while this replica holds the Lease.", registry=r)
        self.audited = Gauge("audit_webhook_cluster_audited",
                             "1 when a Cluster's apiservers need audit logging or a webhook backend, 0 when not.",
                             ["cluster"], registry=r)
        self.valid = Gauge("audit_webhook_cluster_settings_valid",
                           "0 when a Cluster's stored audit settings cannot be rendered (it is not reconciled).",
                           ["cluster"], registry=r)
        self._clusters: set[str] = set()

    def cluster_state(self, states: dict[str, tuple[bool, bool]]) -> None:
        """Set (audited, valid) for every Cluster there is, and drop the series of those gone."""
        for gone in self._clusters - set(states):
            self.audited.remove(gone)
            self.valid.remove(gone)
        for name, (audited, valid) in states.items():
            self.audited.labels(name).set(1 if audited else 0)
            self.valid.labels(name).set(1 if valid else 0)
        self._clusters = set(states)

    def render(self) -> bytes:
        """The Prometheus text format."""
        return generate_latest(self.registry)
