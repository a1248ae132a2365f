"""The Kubernetes API as a store: list+watch caches of Clusters and Seeds, Secrets read live.

Watches run in daemon threads (the `kubernetes` client is synchronous) and replace whole
objects in plain dicts, which the event loop reads without locks: a dict lookup is atomic
under the GIL, and a changed object is a new dict, so the handlers' identity cache stays right.
When the API goes away the caches keep answering with what they had, and say they are stale.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.rest import ApiException

from webhook.adapters.store import StoreUnavailable
from webhook.core.names import KKP_GROUP
from webhook.core.objects import cluster_namespace, dig, name_of, namespace_of
from webhook.core.snapshot import SecretData, decode_secret

log = logging.getLogger(__name__)

WATCH_TIMEOUT_S = 300
MAX_BACKOFF_S = 30.0


def load_api_client(kubeconfig: str | None = None) -> client.ApiClient:
    """An API client from the in-cluster config, else the kubeconfig (`--kubeconfig`, $KUBECONFIG)."""
    if kubeconfig is None:
        try:
            config.load_incluster_config()
            return client.ApiClient()
        except config.ConfigException:
            pass
    cfg = client.Configuration()
    config.load_kube_config(config_file=kubeconfig, client_configuration=cfg)
    return client.ApiClient(cfg)


class Informer:
    """List, then watch, one cluster-wide custom resource; relist after 410 Gone; back off on errors."""

    def __init__(self, api: client.CustomObjectsApi, plural: str, on_change: Callable[[dict[str, dict]], None]):
        self.api = api
        self.plural = plural
        self.on_change = on_change
        self.objects: dict[str, dict[str, Any]] = {}  # by namespace/name
        self.synced = threading.Event()
        self.last_contact = 0.0  # monotonic time of the last successful list or event
        self.connected = False
        self._stop = threading.Event()
        self._watch: watch.Watch | None = None

    @staticmethod
    def _key(obj: dict[str, Any]) -> str:
        return f"{namespace_of(obj)}/{name_of(obj)}"

    def _list(self) -> str:
        result = self.api.list_cluster_custom_object(KKP_GROUP, "v1", self.plural, _request_timeout=30)
        self.objects = {self._key(o): o for o in result.get("items", [])}
        self.on_change(self.objects)
        self.synced.set()
        self._touch()
        return str(dig(result, "metadata", "resourceVersion") or "")

    def _touch(self) -> None:
        self.last_contact = time.monotonic()
        if not self.connected:
            log.info("%s cache is in sync with the API (%d objects)", self.plural, len(self.objects))
        self.connected = True

    def _watch_from(self, resource_version: str) -> str | None:
        """Apply watch events until the watch ends; the version to resume from, or None to relist."""
        self._watch = watch.Watch()
        for event in self._watch.stream(self.api.list_cluster_custom_object, KKP_GROUP, "v1", self.plural,
                                        resource_version=resource_version, timeout_seconds=WATCH_TIMEOUT_S,
                                        allow_watch_bookmarks=True, _request_timeout=WATCH_TIMEOUT_S + 30):
            if self._stop.is_set():
                return None
            kind, obj = event.get("type"), event.get("raw_object") or {}
            if kind == "ERROR":
                log.info("%s watch ended (%s); relisting", self.plural, obj.get("reason") or obj.get("code"))
                return None
            resource_version = str(dig(obj, "metadata", "resourceVersion") or resource_version)
            self._touch()
            if kind == "BOOKMARK":
                continue
            objects = dict(self.objects)
            if kind == "DELETED":
                objects.pop(self._key(obj), None)
            else:
                objects[self._key(obj)] = obj
            self.objects = objects
            self.on_change(objects)
        return resource_version

    def run(self) -> None:
        """The informer loop; returns when `stop()` is called."""
        backoff = 0.5
        resource_version: str | None = None
        while not self._stop.is_set():
            try:
                if resource_version is None:
                    resource_version = self._list()
                resource_version = self._watch_from(resource_version)
                backoff = 0.5
            except ApiException as exc:
                if exc.status == 410:
                    resource_version = None
                    continue
                self._lost(f"HTTP {exc.status} {exc.reason}")
            except Exception as exc:
                self._lost(type(exc).__name__)
            else:
                continue
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            resource_version = None  # after an outage, relist: events may have been missed

    def _lost(self, why: str) -> None:
        if self.connected:
            log.warning("%s cache lost the API (%s); answering from the cache, which is now stale",
                        self.plural, why)
        self.connected = False

    def stop(self) -> None:
        """Ask the loop to end (it notices at the next event or timeout)."""
        self._stop.set()
        if self._watch is not None:
            self._watch.stop()


class KubeStore:
    """The store over the Kubernetes API."""

    def __init__(self, api_client: client.ApiClient, *, secret_timeout: float = 3.0) -> None:
        self.core = client.CoreV1Api(api_client)
        custom = client.CustomObjectsApi(api_client)
        self.secret_timeout = secret_timeout
        self._clusters: dict[str, dict[str, Any]] = {}
        self._claims: dict[str, list[dict[str, Any]]] = {}
        self._seeds: dict[str, dict[str, Any]] = {}
        self.clusters = Informer(custom, "clusters", self._index_clusters)
        self.seeds = Informer(custom, "seeds", self._index_seeds)
        self._threads: list[threading.Thread] = []

    def _index_clusters(self, objects: dict[str, dict[str, Any]]) -> None:
        claims: dict[str, list[dict[str, Any]]] = {}
        for obj in sorted(objects.values(), key=name_of):
            claims.setdefault(cluster_namespace(obj), []).append(obj)
        self._claims = claims
        self._clusters = {namespace: claimants[0] for namespace, claimants in claims.items()}

    def _index_seeds(self, objects: dict[str, dict[str, Any]]) -> None:
        index: dict[str, dict[str, Any]] = {}
        for seed in objects.values():
            datacenters = dig(seed, "spec", "datacenters")
            if isinstance(datacenters, dict):
                index.update({str(dc): seed for dc in datacenters})
        self._seeds = index

    def start(self) -> None:
        """Start both informers in daemon threads."""
        for informer in (self.clusters, self.seeds):
            thread = threading.Thread(target=informer.run, name=f"informer-{informer.plural}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        """Stop the informers."""
        for informer in (self.clusters, self.seeds):
            informer.stop()

    def ready(self) -> bool:
        """Ready once both caches have synced; a later outage keeps serving from the cache."""
        return self.clusters.synced.is_set() and self.seeds.synced.is_set()

    def cache_age(self) -> float:
        """Seconds since the older of the two caches last heard from the API."""
        contacts = [i.last_contact for i in (self.clusters, self.seeds)]
        return time.monotonic() - min(contacts) if all(contacts) else float("inf")

    def stale(self) -> bool:
        """Whether a cache has lost its watch."""
        return not (self.clusters.connected and self.seeds.connected)

    def cluster_for_namespace(self, namespace: str) -> dict[str, Any] | None:
        """The Cluster whose control plane runs in `namespace`."""
        return self._clusters.get(namespace)

    def clusters_in(self, namespace: str) -> list[dict[str, Any]]:
        """Every cached Cluster claiming `namespace`."""
        return self._claims.get(namespace, [])

    def all_clusters(self) -> list[dict[str, Any]]:
        """Every cached Cluster."""
        return [c for claimants in self._claims.values() for c in claimants]

    def seed_for_datacenter(self, datacenter: str) -> dict[str, Any] | None:
        """The Seed that defines `datacenter`."""
        return self._seeds.get(datacenter)
    async def secret(self, namespace: str, name: str) -> SecretData | None:
        """Read a Secret live (they are not cached: the webhook holds no Secret longer than a request)."""
        try:
            raw = await asyncio.to_thread(self._read_secret, namespace, name)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise StoreUnavailable(f"cannot read Secret {namespace}/{name}: HTTP {exc.status}") from None
        except Exception as exc:
            raise StoreUnavailable(f"cannot read Secret {namespace}/{name}: {type(exc).__name__}") from None
        return decode_secret(raw, f"Secret {namespace}/{name}")

    def _read_secret(self, namespace: str, name: str) -> dict[str, Any]:
        response = self.core.read_namespaced_secret(name, namespace, _request_timeout=self.secret_timeout,
                                                    _preload_content=False)
        return json.loads(response.data)
