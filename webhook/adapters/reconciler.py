"""The reconciler loop: for every Cluster, make its namespace hold what its apiserver mounts and
roll the apiserver Deployment when the settings change. Only the Lease holder writes."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
import threading
import time
from collections.abc import Callable
from typing import Any

from aiohttp import web
from kubernetes import client
from kubernetes.client.rest import ApiException

from webhook.adapters.config_file import ConfigFile
from webhook.adapters.kubeapi import api_message, read_or_none, webhook_configuration_calls
from webhook.adapters.leader import LeaderElector
from webhook.adapters.metrics import CONTENT_TYPE, ReconcilerMetrics
from webhook.adapters.store.kube import KubeStore
from webhook.adapters.store.kube_watches import ReconcilerWatches
from webhook.adapters.workqueue import TokenBucket, WorkQueue
from webhook.core import names
from webhook.core.audited_namespaces import selector_patch
from webhook.core.egress import service_view
from webhook.core.mutation import prepare
from webhook.core.objects import cluster_namespace, datacenter_of, dig, name_of, namespace_of
from webhook.core.options import Options
from webhook.core.reconcile_plan import (
    Action,
    Mode,
    Owner,
    Ownership,
    desired_state,
    egress_targets,
    mounted_config,
    ownership,
    plan,
    rollout_patch,
    services_needed,
    webhook_sources,
)
from webhook.core.snapshot import decode_secret

log = logging.getLogger(__name__)


async def run_until_stopped(reconciler: Reconciler, store: KubeStore, *, host: str, port: int) -> None:
    """The reconciler on its own (`audit-webhook reconcile`): its loop, and on `port` over plain
    HTTP /healthz, /readyz (once the caches have synced) and /metrics, until SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    async def healthz(_request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def readyz(_request: web.Request) -> web.Response:
        synced = store.ready() and reconciler.watches.ready()
        return web.Response(text="ok") if synced else web.Response(status=503, text="caches not synced")

    async def metrics(_request: web.Request) -> web.Response:
        return web.Response(body=reconciler.metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    reconciler.metrics.store.watch(store)
    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    log.info("reconciler probes on http://%s:%d", host, port)
    reconciler.start()
    try:
        await stop.wait()
        log.info("shutting down: finishing the clusters in progress and releasing the Lease")
    finally:
        await asyncio.to_thread(reconciler.stop)
        await asyncio.to_thread(store.stop)
        await runner.cleanup()


class RateLimitedApiClient(client.ApiClient):
    """An API client whose every call first takes a token from a bucket, as client-go's QPS and
    Burst do: a new leader's first pass or a seed-wide change writes at a steady pace, not in a storm."""

    def __init__(self, configuration: client.Configuration, bucket: TokenBucket, metrics: ReconcilerMetrics,
                 stop: threading.Event) -> None:
        super().__init__(configuration)
        self.bucket, self.metrics, self.stop = bucket, metrics, stop

    def call_api(self, *args: Any, **kwargs: Any) -> Any:
        delay = self.bucket.delay()
        if delay > 0:
            self.metrics.api_wait.inc(delay)
            if self.stop.wait(delay):
                raise Stopping()
        return super().call_api(*args, **kwargs)


class Stopping(Exception):
    """The reconciler is stopping: the call was not made."""


# The queue key of the webhook configurations' namespace lists; Cluster names are DNS labels, so it
# is never one of theirs.
SELECTORS = "<audited namespaces>"
# How often the holder renews the Lease, and how often a replica standing by tries to take it
# (client-go: RetryPeriod 2 s; the Lease lasts 15 s).
RENEW_S, RETRY_S = 5.0, 2.0
TICK_S = 0.5  # how often the operator's configuration is looked at


class Reconciler:
    """Keeps every cluster namespace and apiserver Deployment as its Cluster says, on watches.

    Watch events on Clusters, Seeds, the objects it keeps and the apiserver Pods queue the Clusters
    they concern; workers reconcile each queued Cluster from the caches, and retry one that fails
    after a backoff of its own. While this replica holds the Lease: on taking it, and every
    `resync_period` seconds, every Cluster is queued (a resync, read from the caches); API calls
    go through a token bucket (`qps`, `burst`). A replica standing by only keeps its caches.
    """

    def __init__(self, api_client: client.ApiClient, store: KubeStore, options: Options, elector: LeaderElector,
                 *, resync_period: float = 600.0, workers: int = 2, qps: float = 50.0, burst: int = 100,
                 deployment: str = "apiserver", mode: Mode = "standalone",
                 webhook_configs: tuple[str, ...] = (), own_namespace: str = "audit-webhook",
                 config: ConfigFile | None = None, metrics: ReconcilerMetrics | None = None) -> None:
        self.metrics = metrics or ReconcilerMetrics()
        self._stop = threading.Event()
        limited = RateLimitedApiClient(api_client.configuration, TokenBucket(qps, burst), self.metrics, self._stop)
        # Every API call of the process (the Clusters' report too) shares the one rate limit.
        self.api: client.ApiClient = limited
        # Told of each cluster namespace where something may have changed (None: anywhere): the
        # report (webhook/adapters/cluster_report.py) computes those again, and nothing else.
        self.on_change: Callable[[str | None], None] = lambda _namespace: None
        self.core = client.CoreV1Api(limited)
        self.admission = client.AdmissionregistrationV1Api(limited)
        # The webhook configurations whose namespace lists follow the audited clusters.
        self.webhook_configs, self.own_namespace = webhook_configs, own_namespace
        self.apps = client.AppsV1Api(limited)
        self.net = client.NetworkingV1Api(limited)
        self.store, self.options, self.elector = store, options, elector
        self.config = config or ConfigFile(None)
        self.resync_period, self.deployment, self.workers = resync_period, deployment, workers
        self.mode = mode
        self.queue = WorkQueue()
        self.metrics.queue_depth.set_function(lambda: float(self.queue.depth()))
        self.watches = ReconcilerWatches(api_client, mode, deployment, self._on_namespace, webhook_configs,
                                         self._on_webhook_configuration)
        store.clusters.handlers.append(self._on_cluster)
        store.seeds.handlers.append(self._on_seed)
        self._threads: list[threading.Thread] = []
        self._seen_problems: dict[str, str] = {}
        # Names of the webhook Secrets copied into each cluster's namespace.
        self._copies: dict[str, frozenset[str]] = {}
        # (cluster, reason) of objects in our way already reported, so each gets one Event.
        self._reported: set[tuple[str, str]] = set()
        # Per Cluster: (the Cluster and Seed it was worked out from, audited).
        self._states: dict[str, tuple[dict[str, Any], dict[str, Any] | None, bool]] = {}
        self._selectors: list[str] | None = None  # the namespace lists last written (None: read them again)

    def start(self) -> None:
        """Start the watches, the leader election and the workers, each in a thread."""
        self.watches.start()
        self._threads = [threading.Thread(target=self._lead, name="reconciler-leader", daemon=True)]
        self._threads += [threading.Thread(target=self._work, name=f"reconciler-{i}", daemon=True)
                          for i in range(self.workers)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the queue (each worker finishes the Cluster in hand), the watches, then give the Lease up."""
        self._stop.set()
        self.queue.shut_down()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        self.watches.stop()
        self.elector.release()
        self.metrics.leader.set(0)

    # The leader's loop: the Lease, resyncs, the operator's configuration.

    def _lead(self) -> None:
        next_try = next_resync = 0.0
        config = self.config.current
        while not self._stop.is_set():
            now = time.monotonic()
            try:
                # Only with synced caches: a leader that does not know every Cluster would act on part of them.
                if now >= next_try and self.store.ready() and self.watches.ready():
                    was = self.elector.leading
                    leading = self.elector.try_lead()
                    self.metrics.leader.set(1 if leading else 0)
                    next_try = now + (RENEW_S if leading else RETRY_S)
                    if leading and not was:
                        next_resync = now  # a new leader starts from a resync of its caches
                self.config.poll()
                if self.config.current is not config:
                    self.on_change(None)  # the egress allow-list: every cluster's report compares with it
                if self.elector.leading:
                    if now >= next_resync:
                        self.resync()
                        next_resync = now + self.resync_period
                    elif self.config.current is not config:
                        self.resync()  # the egress allow-list may open or close any cluster's policy
                config = self.config.current
            except Exception:
                log.exception("leader election failed")
                next_try = now + RETRY_S
            self._stop.wait(TICK_S)

    def resync(self) -> None:
        """Queue every Cluster, the namespace lists first (they decide what fails closed)."""
        self._selectors = None
        self.queue.add(SELECTORS, first=True)
        for cluster in self.store.all_clusters():
            self.queue.add(name_of(cluster))
        self.metrics.passes.inc()
        self.metrics.last_pass.set_to_current_time()

    # Watch events: which Clusters they concern. A replica standing by queues nothing.

    def _on_cluster(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        for namespace in {cluster_namespace(c) for c in (old, new) if c is not None}:
            self.on_change(namespace)
        if self.elector.leading:
            self.queue.add(name_of(new or old))
            self.queue.add(SELECTORS)
            if old is not None and new is not None and cluster_namespace(old) != cluster_namespace(new):
                self._on_namespace(cluster_namespace(old))  # a Cluster that shared it may be alone now

    def _on_seed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        datacenters = {str(dc) for seed in (old, new) for dc in (dig(seed, "spec", "datacenters") or {})}
        concerned = [c for dc in datacenters for c in self.store.clusters_in_datacenter(dc)]
        for namespace in {cluster_namespace(c) for c in concerned}:
            self.on_change(namespace)
        if not self.elector.leading:
            return
        for cluster in concerned:
            self.queue.add(name_of(cluster))
        self.queue.add(SELECTORS)

    def _on_webhook_configuration(self) -> None:
        """Someone wrote a webhook configuration (a Helm upgrade or `kubectl apply` puts the
        manifests' placeholder lists back): compare its lists again now. Our own patch comes back
        here too, and then finds nothing to change."""
        if self.elector.leading:
            self._selectors = None
            self.queue.add(SELECTORS)

    def _on_namespace(self, namespace: str) -> None:
        self.on_change(namespace)
        if self.elector.leading:
            for cluster in self.store.clusters_in(namespace):
                self.queue.add(name_of(cluster))

    # The workers.

    def _work(self) -> None:
        while (key := self.queue.get()) is not None:
            try:
                if self.elector.leading:  # else the next leader's resync does it
                    self._process(str(key))
                self.queue.forget(key)
            except Stopping:
                pass
            except Exception as exc:
                self._failed(str(key), exc)
            finally:
                self.queue.done(key)

    def _failed(self, key: str, exc: Exception) -> None:
        delay = self.queue.retry(key)
        self.metrics.retries.inc()
        what = "the audited namespace lists" if key == SELECTORS else f"cluster {key}"
        if isinstance(exc, ApiException) and exc.status == 409:
            # Someone wrote first (or the cache was behind): not an error, the retry sees their version.
            self.metrics.conflicts.inc()
            log.info("%s: conflict while reconciling, retry in %.1fs: %s", what, delay, api_message(exc))
        elif isinstance(exc, ApiException):
            self.metrics.errors.labels("api").inc()
            log.warning("%s: API error %s while reconciling, retry in %.1fs: %s", what, exc.status, delay,
                        api_message(exc))
        else:  # a timeout or a reset connection
            self.metrics.errors.labels("other").inc()
            log.warning("%s: %s while reconciling, retry in %.1fs", what, type(exc).__name__, delay)

    def _process(self, key: str) -> None:
        if key == SELECTORS:
            self._sync_selectors()
            return
        cluster = self.store.cluster(key)
        if cluster is None:  # gone: so is what was remembered about it
            self._forget(key)
            return
        claimants = self.store.clusters_in(cluster_namespace(cluster))
        if len(claimants) > 1:
            # Whose objects would these be? Neither Cluster's settings may write into the other's.
            reason = "namespace claimed by " + ", ".join(name_of(c) for c in claimants)
            if (key, reason) not in self._reported:
                self._reported.add((key, reason))
                self.event(cluster, "Warning", "ContestedNamespace", f"not reconciled: {reason}")
            return
        with self.metrics.duration.time():
            self.reconcile(cluster)

    def _forget(self, name: str) -> None:
        self._reported = {(c, why) for c, why in self._reported if c != name}
        self._copies.pop(name, None)
        self._seen_problems.pop(name, None)
        self._states.pop(name, None)

    def _audited(self, cluster: dict[str, Any]) -> bool:
        """Whether a Cluster's apiservers need audit logging or a webhook backend, worked out again
        only when it or its Seed changed. Settings we cannot render still ask for audit logging: fail
        closed for them too."""
        name, seed = name_of(cluster), self.store.seed_for_datacenter(datacenter_of(cluster))
        known = self._states.get(name)
        if known is None or known[0] is not cluster or known[1] is not seed:
            p = prepare(cluster, seed, self.options)
            known = (cluster, seed, p.settings is None or p.settings.needs_injection)
            self._states[name] = known
        return known[2]

    def _sync_selectors(self) -> None:
        clusters = self.store.all_clusters()
        audited_by_name = {name_of(c): self._audited(c) for c in clusters}
        for gone in self._states.keys() - audited_by_name.keys():
            self._states.pop(gone, None)
        audited = sorted({cluster_namespace(c) for c in clusters if audited_by_name[name_of(c)]})
        if audited != self._selectors:
            self._sync_webhook_selectors(audited)
            self._selectors = audited

    def _sync_webhook_selectors(self, audited: list[str]) -> None:
        """Patch each webhook configuration's namespace lists; one that fails does not stop the
        others, and is raised afterwards, so the key is retried."""
        failure: Exception | None = None
        for name in self.webhook_configs:
            for kind, read, patch in webhook_configuration_calls(self.admission):
                try:
                    current = read_or_none(read, name)
                    body = selector_patch(current, self.own_namespace, audited) if current else None
                    if body:
                        patch(name, body, _request_timeout=10, _preload_content=False)
                        log.info("%s %s: %d audited namespaces fail closed", kind, name, len(audited))
                except Stopping:
                    raise
                except ApiException as exc:
                    log.warning("cannot update %s %s: %s", kind, name, api_message(exc))
                    failure = exc
                except Exception as exc:
                    log.warning("cannot update %s %s: %s", kind, name, type(exc).__name__)
                    failure = exc
        if failure is not None:
            raise failure

    def _existing(self, namespace: str, ours: Ownership, desired: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Whatever holds a name we could have created or want: from the watches' caches, or read by
        name (the copies of webhook Secrets). The reconciler may not list Secrets, so no tenant's
        Secret ever passes through it."""
        reads = {"ConfigMap": ("v1", self.core.read_namespaced_config_map),
                 "Secret": ("v1", self.core.read_namespaced_secret),
                 "NetworkPolicy": ("networking.k8s.io/v1", self.net.read_namespaced_network_policy)}
        found = []
        for kind, name in sorted(ours.names | {(o["kind"], name_of(o)) for o in desired}):
            if self.watches.covers(kind, name):
                obj = self.watches.get(kind, namespace, name)
                if obj is not None:
                    found.append(obj)
                continue
            api_version, read = reads[kind]
            obj = read_or_none(read, name, namespace)
            if obj is not None:
                found.append({"apiVersion": api_version, "kind": kind, **obj})
        return found

    def _secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        raw = read_or_none(self.core.read_namespaced_secret, name, namespace)
        return None if raw is None else decode_secret(raw, f"Secret {namespace}/{name}")

    def reconcile(self, cluster: dict[str, Any]) -> list[Action]:
        """Bring one cluster's namespace and apiserver Deployment to the desired state."""
        prepared = prepare(cluster, self.store.seed_for_datacenter(datacenter_of(cluster)), self.options)
        cluster_id = name_of(cluster)
        if prepared.settings is None:
            if self._seen_problems.get(cluster_id) != prepared.problem:
                self._seen_problems[cluster_id] = prepared.problem
                self.event(cluster, "Warning", "InvalidAuditSettings", f"not reconciled: {prepared.problem}")
            return []
        if prepared.notes and self._seen_problems.get(cluster_id) != "; ".join(prepared.notes):
            self._seen_problems[cluster_id] = "; ".join(prepared.notes)
            self.event(cluster, "Warning", "AuditSettingsOutOfPolicy",
                       f"reconciled and injected, but: {'; '.join(prepared.notes)}")
        elif not prepared.notes:
            self._seen_problems.pop(cluster_id, None)
        settings = prepared.settings
        if settings.paused:
            return []
        if not self.watches.namespace_exists(settings.namespace):
            return []  # the control plane namespace does not exist yet: its creation queues the Cluster
        copy_ref, own_ref = webhook_sources(settings)
        source = self._secret_data(*copy_ref) if copy_ref else None
        if copy_ref and source is None:
            self.event(cluster, "Warning", "WebhookSecretMissing", f"Secret {copy_ref[0]}/{copy_ref[1]} not found")
        config_data = source or (self._secret_data(*own_ref) if own_ref else None)
        webhook_config = (config_data or {}).get(names.WEBHOOK_CONFIG_KEY)
        services = {ref: self._service(*ref) for ref in services_needed(egress_targets(settings, webhook_config))}
        owner = Owner.of(cluster)
        wanted = desired_state(settings, self.options, webhook_source=source, webhook_config=webhook_config,
                               services=services, config=self.config.current, webhook_namespace=self.own_namespace,
                               mode=self.mode, owner=owner)
        self._report_refusals(cluster, wanted.refused)
        desired = wanted.objects
        ours = ownership(settings, owner, self.mode, self._copies.get(cluster_id, frozenset()))
        actions = plan(settings, desired, self._existing(settings.namespace, ours, desired), ours)
        # Remember the webhook Secret copies, so a copy the datacenter stops naming is removed.
        self._copies[cluster_id] = frozenset(name_of(o) for o in desired if o["kind"] == "Secret"
                                             and name_of(o) != names.SECRET_FLUENTBIT)
        done = []
        try:
            for action in actions:
                if action.verb == "report":
                    self.metrics.actions.labels("report", action.obj["kind"]).inc()
                    if (cluster_id, action.reason) not in self._reported:
                        self._reported.add((cluster_id, action.reason))
                        self.event(cluster, "Warning", "ObjectInTheWay", action.reason)
                    continue
                self._apply(action)
                self.metrics.actions.labels(action.verb, action.obj["kind"]).inc()
                done.append(action.reason)
        finally:  # one Event for what was written, also when a later write failed
            if done:
                self.event(cluster, "Normal", "AuditObjectsReconciled", "; ".join(done))
        if self.mode == "kkp":
            return actions  # the Deployment is KKP's: it rolls it when the Cluster changes
        mounted = mounted_config(settings, webhook_config,
                                 self.watches.get("ConfigMap", settings.namespace, names.CONFIGMAP_AUDIT_CONFIG))
        rolled = rollout_patch(self.watches.get("Deployment", settings.namespace, self.deployment), prepared,
                               pods=self.watches.pods(settings.namespace), mounted=mounted)
        if rolled is not None:
            self.apps.patch_namespaced_deployment(self.deployment, settings.namespace, rolled.patch,
                                                  _request_timeout=10, _preload_content=False)
            if not rolled.rolls:
                log.info("cluster %s: Deployment %s: %s", cluster_id, self.deployment, rolled.why)
                return actions
            self.metrics.rollouts.inc()
            if names.SETTINGS_HASH_ANNOTATION not in rolled.patch["spec"]["template"]["metadata"]["annotations"]:
                self.metrics.stale_pod_rollouts.inc()
            log.info("cluster %s: rolled Deployment %s: %s", cluster_id, self.deployment, rolled.why)
            self.event(cluster, "Normal", "ApiserverRolledOut", f"rolled Deployment {self.deployment}: {rolled.why}")
        return actions

    def _report_refusals(self, cluster: dict[str, Any], refused: list[tuple[str, str]]) -> None:
        for destination, why in refused:
            if (name_of(cluster), why) not in self._reported:
                self._reported.add((name_of(cluster), why))
                self.event(cluster, "Warning", "EgressRefused", f"egress to {destination} not opened: {why}")

    def _service(self, namespace: str, name: str) -> dict[str, Any] | None:
        svc = read_or_none(self.core.read_namespaced_service, name, namespace)
        return None if svc is None else service_view(svc)

    def _apply(self, action: Action) -> None:
        obj, kind = action.obj, action.obj["kind"]
        namespace, name = namespace_of(obj), name_of(obj)
        raw = {"_preload_content": False, "_request_timeout": 10}  # the answer is not read: skip its models
        ops = {
            ("ConfigMap", "create"): lambda: self.core.create_namespaced_config_map(namespace, obj, **raw),
            ("ConfigMap", "update"): lambda: self.core.replace_namespaced_config_map(name, namespace, obj, **raw),
            ("ConfigMap", "delete"): lambda: self.core.delete_namespaced_config_map(name, namespace, **raw),
            ("Secret", "create"): lambda: self.core.create_namespaced_secret(namespace, obj, **raw),
            ("Secret", "update"): lambda: self.core.replace_namespaced_secret(name, namespace, obj, **raw),
            ("Secret", "delete"): lambda: self.core.delete_namespaced_secret(name, namespace, **raw),
            ("NetworkPolicy", "create"): lambda: self.net.create_namespaced_network_policy(namespace, obj, **raw),
            ("NetworkPolicy", "update"): lambda: self.net.replace_namespaced_network_policy(name, namespace, obj,
                                                                                            **raw),
            ("NetworkPolicy", "delete"): lambda: self.net.delete_namespaced_network_policy(name, namespace, **raw),
        }
        ops[(kind, action.verb)]()
        log.info("cluster namespace %s: %s", namespace, action.reason)

    def event(self, cluster: dict[str, Any], kind: str, reason: str, message: str) -> None:
        """Record an Event on the (cluster-scoped) Cluster, in the default namespace like the node controller's."""
        now = dt.datetime.now(dt.UTC)
        body = client.CoreV1Event(
            metadata=client.V1ObjectMeta(generate_name=f"{name_of(cluster)}.", namespace="default"),
            involved_object=client.V1ObjectReference(api_version="kubermatic.k8c.io/v1", kind="Cluster",
                                                     name=name_of(cluster), uid=dig(cluster, "metadata", "uid")),
            reason=reason, message=message[:1024], type=kind, first_timestamp=now, last_timestamp=now, count=1,
            source=client.V1EventSource(component="audit-webhook"))
        try:
            self.core.create_namespaced_event("default", body, _request_timeout=5, _preload_content=False)
        except ApiException as exc:
            log.warning("cannot record event %s on Cluster %s: HTTP %s", reason, name_of(cluster), exc.status)
