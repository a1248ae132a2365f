"""The reconciler loop: for every Cluster, make its namespace hold what its apiserver mounts and
roll the apiserver Deployment when the settings change. Only the Lease holder writes."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
import threading
from typing import Any

from aiohttp import web
from kubernetes import client
from kubernetes.client.rest import ApiException

from webhook import names
from webhook.audited_namespaces import selector_patch
from webhook.egress import classify, destinations, network_policy, refusal
from webhook.kubeapi import api_message, read_or_none, webhook_configuration_calls
from webhook.leader import LeaderElector
from webhook.metrics import CONTENT_TYPE, ReconcilerMetrics
from webhook.mutation import Prepared, prepare
from webhook.objects import cluster_namespace, datacenter_of, dig, name_of, namespace_of
from webhook.operator_config import ConfigFile
from webhook.options import Options
from webhook.reconcile import Action, Mode, Owner, Ownership, desired_objects, ownership, plan, rollout_patch
from webhook.settings import EffectiveSettings
from webhook.store import decode_secret
from webhook.store.kube import KubeStore
from webhook.validation.kubeconfig import server_of

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
        return web.Response(text="ok") if store.ready() else web.Response(status=503, text="caches not synced")

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
        log.info("shutting down: finishing the pass in progress and releasing the Lease")
    finally:
        await asyncio.to_thread(reconciler.stop)
        store.stop()
        await runner.cleanup()


class Reconciler:
    """Runs `reconcile_all` every `interval` seconds while this replica holds the Lease."""

    def __init__(self, api_client: client.ApiClient, store: KubeStore, options: Options, elector: LeaderElector,
                 *, interval: float = 10.0, deployment: str = "apiserver", mode: Mode = "standalone",
                 webhook_configs: tuple[str, ...] = (), own_namespace: str = "audit-webhook",
                 config: ConfigFile | None = None, metrics: ReconcilerMetrics | None = None) -> None:
        self.core = client.CoreV1Api(api_client)
        self.admission = client.AdmissionregistrationV1Api(api_client)
        # The webhook configurations whose namespace lists follow the audited clusters.
        self.webhook_configs, self.own_namespace = webhook_configs, own_namespace
        self.apps = client.AppsV1Api(api_client)
        self.net = client.NetworkingV1Api(api_client)
        self.store, self.options, self.elector = store, options, elector
        self.config = config or ConfigFile(None)
        self.metrics = metrics or ReconcilerMetrics()
        self.interval, self.deployment = interval, deployment
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen_problems: dict[str, str] = {}
        self.mode = mode
        # Names of the webhook Secrets copied into each cluster's namespace.
        self._copies: dict[str, frozenset[str]] = {}
        # (cluster, reason) of objects in our way already reported, so each gets one Event.
        self._reported: set[tuple[str, str]] = set()

    def start(self) -> None:
        """Run in a daemon thread."""
        self._thread = threading.Thread(target=self._run, name="reconciler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 30.0) -> None:
        """End the loop (after the pass in progress), then give the Lease up."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self.elector.release()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                leading = self.store.ready() and self.elector.try_lead()
                self.metrics.leader.set(1 if leading else 0)
                if leading:
                    self.reconcile_all()
                    self.metrics.passes.inc()
                    self.metrics.last_pass.set_to_current_time()
            except Exception:
                log.exception("reconcile pass failed")
            self._stop.wait(self.interval)

    def reconcile_all(self) -> None:
        """The webhook's lists of audited namespaces first (they decide what fails closed), then
        one pass over every cached Cluster; one cluster's failure never stops the others."""
        self.config.poll()
        clusters = self.store.all_clusters()
        # What is remembered per cluster goes with the cluster: the memory stays bounded by the fleet.
        present = {name_of(c) for c in clusters}
        self._reported = {(c, why) for c, why in self._reported if c in present}
        self._copies = {c: names_ for c, names_ in self._copies.items() if c in present}
        self._seen_problems = {c: why for c, why in self._seen_problems.items() if c in present}
        prepared = [(c, prepare(c, self.store.seed_for_datacenter(datacenter_of(c)), self.options)) for c in clusters]
        # Settings we cannot render still ask for audit logging: fail closed for them too.
        self._sync_webhook_selectors([cluster_namespace(c) for c, p in prepared
                                      if p.settings is None or p.settings.needs_injection])
        for done, (cluster, ready) in enumerate(prepared):
            self.metrics.queue_depth.set(len(prepared) - done)
            claimants = self.store.clusters_in(cluster_namespace(cluster))
            if len(claimants) > 1:
                # Whose objects would these be? Neither Cluster's settings may write into the other's.
                reason = "namespace claimed by " + ", ".join(name_of(c) for c in claimants)
                if (name_of(cluster), reason) not in self._reported:
                    self._reported.add((name_of(cluster), reason))
                    self.event(cluster, "Warning", "ContestedNamespace", f"not reconciled: {reason}")
                continue
            try:
                with self.metrics.duration.time():
                    self.reconcile(cluster, ready)
            except ApiException as exc:
                if exc.status == 409:  # someone wrote first: not an error, the next pass sees their version
                    self.metrics.conflicts.inc()
                    log.info("cluster %s: conflict while reconciling: %s", name_of(cluster), api_message(exc))
                else:
                    self.metrics.errors.labels("api").inc()
                    log.warning("cluster %s: API error %s while reconciling: %s", name_of(cluster), exc.status,
                                api_message(exc))
            except Exception as exc:  # a timeout or a reset connection: the next pass tries again
                self.metrics.errors.labels("other").inc()
                log.warning("cluster %s: %s while reconciling", name_of(cluster), type(exc).__name__)
        self.metrics.queue_depth.set(0)

    def _sync_webhook_selectors(self, audited: list[str]) -> None:
        for name in self.webhook_configs:
            for kind, read, patch in webhook_configuration_calls(self.admission):
                try:
                    current = read_or_none(read, name)
                    body = selector_patch(current, self.own_namespace, audited) if current else None
                    if body:
                        patch(name, body, _request_timeout=10)
                        log.info("%s %s: %d audited namespaces fail closed", kind, name, len(audited))
                except ApiException as exc:
                    log.warning("cannot update %s %s: %s", kind, name, api_message(exc))
                except Exception as exc:
                    log.warning("cannot update %s %s: %s", kind, name, type(exc).__name__)

    def _existing(self, namespace: str, ours: Ownership, desired: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Whatever holds a name we could have created or want, read by name: the reconciler may
        not list Secrets, so no tenant's Secret ever passes through it."""
        reads = {"ConfigMap": ("v1", self.core.read_namespaced_config_map),
                 "Secret": ("v1", self.core.read_namespaced_secret),
                 "NetworkPolicy": ("networking.k8s.io/v1", self.net.read_namespaced_network_policy)}
        found = []
        for kind, name in sorted(ours.names | {(o["kind"], name_of(o)) for o in desired}):
            api_version, read = reads[kind]
            obj = read_or_none(read, name, namespace)
            if obj is not None:
                found.append({"apiVersion": api_version, "kind": kind, **obj})
        return found

    def _secret_data(self, namespace: str, name: str) -> dict[str, bytes] | None:
        raw = read_or_none(self.core.read_namespaced_secret, name, namespace)
        return None if raw is None else decode_secret(raw, f"Secret {namespace}/{name}")

    def reconcile(self, cluster: dict[str, Any], prepared: Prepared | None = None) -> list[Action]:
        """Bring one cluster's namespace and apiserver Deployment to the desired state."""
        if prepared is None:
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
        if read_or_none(self.core.read_namespace, settings.namespace) is None:
            return []  # the control plane namespace does not exist yet
        source = None
        if settings.webhook is not None and settings.webhook.secret_namespace != settings.namespace:
            source = self._secret_data(settings.webhook.secret_namespace, settings.webhook.secret_name)
            if source is None:
                self.event(cluster, "Warning", "WebhookSecretMissing",
                           f"Secret {settings.webhook.secret_namespace}/{settings.webhook.secret_name} not found")
        egress = self._egress(settings, source)
        owner = Owner.of(cluster)
        desired = desired_objects(settings, self.options, source, egress, self.mode, owner)
        ours = ownership(settings, owner, self.mode, self._copies.get(cluster_id, frozenset()))
        actions = plan(settings, desired, self._existing(settings.namespace, ours, desired), ours)
        # Remember the webhook Secret copies, so a copy the datacenter stops naming is removed.
        self._copies[cluster_id] = frozenset(name_of(o) for o in desired if o["kind"] == "Secret"
                                             and name_of(o) != names.SECRET_FLUENTBIT)
        for action in actions:
            if action.verb == "report":
                self.metrics.actions.labels("report", action.obj["kind"]).inc()
                if (cluster_id, action.reason) not in self._reported:
                    self._reported.add((cluster_id, action.reason))
                    self.event(cluster, "Warning", "ObjectInTheWay", action.reason)
                continue
            self._apply(action)
            self.metrics.actions.labels(action.verb, action.obj["kind"]).inc()
            self.event(cluster, "Normal", "AuditObjectsReconciled", action.reason)
        if self.mode == "kkp":
            return actions  # the Deployment is KKP's: it rolls it when the Cluster changes
        deployment = read_or_none(self.apps.read_namespaced_deployment, self.deployment, settings.namespace)
        patch = rollout_patch(deployment, prepared)
        if patch is not None:
            self.apps.patch_namespaced_deployment(self.deployment, settings.namespace, patch, _request_timeout=10)
            self.metrics.rollouts.inc()
            self.event(cluster, "Normal", "ApiserverRolledOut",
                       f"rolled Deployment {self.deployment}: audit settings changed ({prepared.settings_hash})")
        return actions

    def _egress(self, settings: EffectiveSettings, dc_source: dict[str, bytes] | None) -> dict[str, Any] | None:
        server = None
        if settings.webhook is not None:
            data = dc_source or self._secret_data(settings.namespace, settings.webhook.secret_name) or {}
            config = data.get(names.WEBHOOK_CONFIG_KEY)
            server = server_of(config) if config is not None else None
        targets = [classify(d, settings.namespace) for d in destinations(settings, server)]
        services: dict[tuple[str, str], dict[str, Any] | None] = {}
        for target in targets:
            if target.kind == "service":
                services[(target.namespace, target.service)] = self._service(target.namespace, target.service)
        for target in targets:
            why = refusal(target, self.config.current, self.own_namespace)
            if why and (settings.cluster_id, why) not in self._reported:
                self._reported.add((settings.cluster_id, why))
                cluster = self.store.cluster_for_namespace(settings.namespace)
                if cluster is not None:
                    self.event(cluster, "Warning", "EgressRefused",
                               f"egress to {target.destination.source} not opened: {why}")
        return network_policy(settings, targets, services, self.config.current, self.own_namespace)

    def _service(self, namespace: str, name: str) -> dict[str, Any] | None:
        svc = read_or_none(self.core.read_namespaced_service, name, namespace)
        if svc is None:
            return None
        ports = {p.get("port"): p.get("targetPort") for p in svc.get("spec", {}).get("ports") or []
                 if isinstance(p.get("targetPort"), int)}
        return {"selector": svc.get("spec", {}).get("selector") or {}, "ports": ports}

    def _apply(self, action: Action) -> None:
        obj, kind = action.obj, action.obj["kind"]
        namespace, name = namespace_of(obj), name_of(obj)
        ops = {
            ("ConfigMap", "create"): lambda: self.core.create_namespaced_config_map(namespace, obj),
            ("ConfigMap", "update"): lambda: self.core.replace_namespaced_config_map(name, namespace, obj),
            ("ConfigMap", "delete"): lambda: self.core.delete_namespaced_config_map(name, namespace),
            ("Secret", "create"): lambda: self.core.create_namespaced_secret(namespace, obj),
            ("Secret", "update"): lambda: self.core.replace_namespaced_secret(name, namespace, obj),
            ("Secret", "delete"): lambda: self.core.delete_namespaced_secret(name, namespace),
            ("NetworkPolicy", "create"): lambda: self.net.create_namespaced_network_policy(namespace, obj),
            ("NetworkPolicy", "update"): lambda: self.net.replace_namespaced_network_policy(name, namespace, obj),
            ("NetworkPolicy", "delete"): lambda: self.net.delete_namespaced_network_policy(name, namespace),
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
            self.core.create_namespaced_event("default", body, _request_timeout=5)
        except ApiException as exc:
            log.warning("cannot record event %s on Cluster %s: HTTP %s", reason, name_of(cluster), exc.status)
