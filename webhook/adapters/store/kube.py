"""The Kubernetes API as a store: list+watch caches (informers) of Clusters and Seeds, Secrets read live.

An informer lists its objects, then watches from the list's resourceVersion, relisting after a
410 Gone or an outage; each object passes through a transform that keeps only the fields we read
(as client-go's SetTransform does), so the cache holds what decisions need and nothing else.
Watches run in threads (the `kubernetes` client is synchronous); the caches are plain dicts the
event loop reads without locks: a dict lookup is atomic under the GIL, and a changed object is a
new dict, so the handlers' identity cache stays right. When the API goes away the caches keep
answering with what they had, and say they are stale. `stop()` closes the open watch, so the
threads end at once and the process exits cleanly.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client, config
from kubernetes.client.rest import ApiException

from webhook.adapters.store import StoreUnavailable
from webhook.core.names import KKP_GROUP
from webhook.core.objects import cluster_namespace, datacenter_of, datacenters_of, dig, name_of, namespace_of
from webhook.core.snapshot import SecretData, decode_secret

log = logging.getLogger(__name__)

WATCH_TIMEOUT_S = 300
MAX_BACKOFF_S = 30.0
LIST_PAGE = 500
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"
METADATA_ONLY = "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"
METADATA_ONLY_WATCH = "application/json;as=PartialObjectMetadata;g=meta.k8s.io;v=v1"

Transform = Callable[[dict[str, Any]], dict[str, Any]]
# (old, new): an object added (old None), changed, or deleted (new None).
Handler = Callable[[dict[str, Any] | None, dict[str, Any] | None], None]


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


def lean_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` without what no decision reads and that can outweigh the rest: managedFields and
    kubectl's copy of the last applied object."""
    meta = {k: v for k, v in (obj.get("metadata") or {}).items() if k != "managedFields"}
    if LAST_APPLIED in (meta.get("annotations") or {}):
        meta["annotations"] = {k: v for k, v in meta["annotations"].items() if k != LAST_APPLIED}
    return {**obj, "metadata": meta}


# What decisions read of a Cluster besides its metadata: a seed's 10,000 Clusters are mostly the
# rest of a KKP spec (cloud credentials, networking, component overrides) that nothing here reads,
# and whose changes (a version upgrade) then reach no handler.
_CLUSTER_SPEC = ("auditLogging", "pause")
# Metadata no decision reads and that KKP keeps long on every Cluster.
_CLUSTER_METADATA_DROPPED = ("finalizers", "ownerReferences")


def lean_cluster(obj: dict[str, Any]) -> dict[str, Any]:
    """A Cluster as decisions read it: metadata, `spec.auditLogging`, `spec.pause`, its datacenter
    (`spec.cloud.dc`) and, of its status, only the namespace (KKP rewrites the rest often)."""
    lean = lean_metadata(obj)
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else {}
    kept = {k: spec[k] for k in _CLUSTER_SPEC if k in spec}
    cloud = spec.get("cloud")
    if isinstance(cloud, dict) and "dc" in cloud:
        kept["cloud"] = {"dc": cloud["dc"]}
    out = {k: v for k, v in lean.items() if k not in ("spec", "status")}
    out["metadata"] = {k: v for k, v in lean["metadata"].items() if k not in _CLUSTER_METADATA_DROPPED}
    if "spec" in obj:
        out["spec"] = kept
    namespace = dig(obj, "status", "namespaceName")
    if namespace:
        out["status"] = {"namespaceName": namespace}
    return out


def lean_seed(obj: dict[str, Any]) -> dict[str, Any]:
    """A Seed without its status."""
    return {k: v for k, v in lean_metadata(obj).items() if k != "status"}


def shared_strings(value: Any) -> Any:
    """`value` with every string (keys and values) interned: a JSON parser makes new strings for each
    object, so 10,000 cached objects would each hold their own "metadata", "apiVersion", label
    keys and, for the ConfigMaps and Secrets we render, the same policy and fluent-bit
    configuration. Interned, each distinct string is held once."""
    if isinstance(value, str):
        return sys.intern(value)
    if isinstance(value, dict):
        return {sys.intern(k) if isinstance(k, str) else k: shared_strings(v) for k, v in value.items()}
    if isinstance(value, list):
        return [shared_strings(v) for v in value]
    return value


def same_content(old: dict[str, Any] | None, new: dict[str, Any] | None) -> bool:
    """Whether two cached objects differ in their resourceVersion at most."""
    if old is None or new is None:
        return old is new
    return {**old, "metadata": {**old.get("metadata", {}), "resourceVersion": ""}} == \
        {**new, "metadata": {**new.get("metadata", {}), "resourceVersion": ""}}


@dataclass(frozen=True)
class Resource:
    """What one informer watches: a collection's path, selectors, and what it keeps of each object."""

    name: str  # for logs and metrics: "clusters", "secrets/audit-logs-fluentbit"
    path: str  # the collection: /apis/<group>/<version>/<plural> or /api/v1/<plural>
    api_version: str
    kind: str
    label_selector: str = ""
    # metadata.name=<name>: RBAC then authorizes the list and watch by resourceName, so a
    # ServiceAccount may watch the objects of one name without the right to list all of them.
    field_selector: str = ""
    metadata_only: bool = False  # ask the API for metadata only (PartialObjectMetadata)
    transform: Transform = lean_metadata
    # An update that changes nothing but the resourceVersion keeps the cached object (and tells no
    # handler): right for objects we never write with a resourceVersion.
    keep_unchanged: bool = False


def cluster_resource(plural: str, kind: str, transform: Transform) -> Resource:
    return Resource(plural, f"/apis/{KKP_GROUP}/v1/{plural}", f"{KKP_GROUP}/v1", kind, transform=transform,
                    keep_unchanged=True)


@dataclass
class Informer:
    """List, then watch, one collection; relist after 410 Gone; back off on errors."""

    api_client: client.ApiClient
    resource: Resource
    handlers: list[Handler] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.objects: dict[str, dict[str, Any]] = {}  # by namespace/name
        self.synced = threading.Event()
        self.last_contact = 0.0  # monotonic time of the last successful list or event
        self.connected = False
        self._stop = threading.Event()
        self._response: Any = None
        self._thread: threading.Thread | None = None

    @property
    def plural(self) -> str:
        return self.resource.name

    @staticmethod
    def _key(obj: dict[str, Any]) -> str:
        return f"{namespace_of(obj)}/{name_of(obj)}"

    def _get(self, params: list[tuple[str, Any]], accept: str, timeout: Any) -> Any:
        """A GET of the collection: the open urllib3 response (the caller reads and closes it)."""
        r = self.resource
        params = [*params, *((("labelSelector", r.label_selector),) if r.label_selector else ()),
                  *((("fieldSelector", r.field_selector),) if r.field_selector else ())]
        method, url, headers, _, _ = self.api_client.param_serialize(
            "GET", r.path, query_params=params, header_params={"Accept": accept}, auth_settings=["BearerToken"])
        response = self.api_client.call_api(method, url, header_params=headers, _request_timeout=timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException.from_response(http_resp=response, body=None, data=None)
        return response.response

    def _item(self, raw: dict[str, Any]) -> dict[str, Any]:
        obj = {**raw, "apiVersion": self.resource.api_version, "kind": self.resource.kind}
        return shared_strings(self.resource.transform(obj))

    def _list(self) -> str:
        accept = METADATA_ONLY if self.resource.metadata_only else "application/json"
        objects: dict[str, dict[str, Any]] = {}
        token = ""
        while True:
            params: list[tuple[str, Any]] = [("limit", LIST_PAGE), *((("continue", token),) if token else ())]
            response = self._get(params, accept, (10, 60))
            try:
                page = json.loads(response.data)
            finally:
                response.release_conn()
            for raw in page.get("items") or []:
                obj = self._item(raw)
                key = self._key(obj)
                kept = self.objects.get(key)
                objects[key] = kept if self.resource.keep_unchanged and same_content(kept, obj) else obj
            token = dig(page, "metadata", "continue") or ""
            if not token:
                break
        old, self.objects = self.objects, objects
        for key in old.keys() | objects.keys():  # what changed while we were not watching
            self._changed(old.get(key), objects.get(key))
        self.synced.set()
        self._touch()
        return str(dig(page, "metadata", "resourceVersion") or "")

    def _changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if old is new or (self.resource.keep_unchanged and same_content(old, new)):
            return
        for handler in self.handlers:
            try:
                handler(old, new)
            except Exception:
                log.exception("%s: an event handler failed", self.plural)

    def _touch(self) -> None:
        self.last_contact = time.monotonic()
        if not self.connected:
            log.info("%s cache is in sync with the API (%d objects)", self.plural, len(self.objects))
        self.connected = True

    def _lines(self, response: Any) -> Iterator[bytes]:
        pending = b""
        for chunk in response.stream(amt=None, decode_content=False):
            pending += chunk
            *lines, pending = pending.split(b"\n")
            yield from (line for line in lines if line.strip())
        if pending.strip():
            yield pending

    def _watch_from(self, resource_version: str) -> str | None:
        """Apply watch events until the watch ends; the version to resume from, or None to relist."""
        accept = METADATA_ONLY_WATCH if self.resource.metadata_only else "application/json"
        params = [("watch", "true"), ("resourceVersion", resource_version), ("allowWatchBookmarks", "true"),
                  ("timeoutSeconds", WATCH_TIMEOUT_S)]
        self._response = self._get(params, accept, (10, WATCH_TIMEOUT_S + 30))
        try:
            if self._stop.is_set():
                return None
            for line in self._lines(self._response):
                event = json.loads(line)
                kind, raw = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if raw.get("code") != 410:
                        log.info("%s watch ended (%s); relisting", self.plural, raw.get("reason") or raw.get("code"))
                    return None
                resource_version = str(dig(raw, "metadata", "resourceVersion") or resource_version)
                self._touch()
                if kind == "BOOKMARK":
                    continue
                obj = self._item(raw)
                key = self._key(obj)
                old = self.objects.get(key)
                if kind == "DELETED":
                    self.objects.pop(key, None)
                    self._changed(old, None)
                elif self.resource.keep_unchanged and same_content(old, obj):
                    continue
                else:
                    self.objects[key] = obj
                    self._changed(old, obj)
        finally:
            self._response.release_conn()
            self._response = None
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
                continue
            except ApiException as exc:
                if exc.status == 410:
                    resource_version = None
                    continue
                self._lost(f"HTTP {exc.status} {exc.reason}")
            except Exception as exc:
                if self._stop.is_set():
                    return
                self._lost(type(exc).__name__)
            self._stop.wait(backoff)
            backoff = min(backoff * 2, MAX_BACKOFF_S)
            resource_version = None  # after an outage, relist: events may have been missed

    def _lost(self, why: str) -> None:
        if self.connected:
            log.warning("%s cache lost the API (%s); answering from the cache, which is now stale",
                        self.plural, why)
        self.connected = False

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"informer-{self.plural}", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """End the loop: the open watch is shut down, so a blocked read returns at once."""
        self._stop.set()
        response = self._response
        if response is not None:
            try:
                response.shutdown()
            except Exception as exc:  # already closed
                log.debug("%s: closing the watch: %s", self.plural, type(exc).__name__)

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout)


class Informers:
    """Informers started and stopped together."""

    def __init__(self, informers: list[Informer]) -> None:
        self.informers = informers

    def start(self) -> None:
        for informer in self.informers:
            informer.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop every informer and wait for its thread to end."""
        for informer in self.informers:
            informer.stop()
        deadline = time.monotonic() + timeout
        for informer in self.informers:
            informer.join(max(0.0, deadline - time.monotonic()))

    def ready(self) -> bool:
        return all(i.synced.is_set() for i in self.informers)

    def connected(self) -> bool:
        return all(i.connected for i in self.informers)

    def cache_age(self) -> float:
        """Seconds since the informer heard from the API least recently."""
        contacts = [i.last_contact for i in self.informers]
        return time.monotonic() - min(contacts) if all(contacts) else float("inf")


class KubeStore:
    """The store over the Kubernetes API."""

    def __init__(self, api_client: client.ApiClient, *, secret_timeout: float = 3.0) -> None:
        self.core = client.CoreV1Api(api_client)
        self.secret_timeout = secret_timeout
        self._clusters: dict[str, dict[str, Any]] = {}
        self._claims: dict[str, list[dict[str, Any]]] = {}
        # Every Seed defining each datacenter, by name; and every Cluster of each datacenter, by name.
        self._seeds: dict[str, list[dict[str, Any]]] = {}
        self._datacenter_clusters: dict[str, list[dict[str, Any]]] = {}
        self._lock = threading.Lock()  # writers, and readers that iterate
        self.clusters = Informer(api_client, cluster_resource("clusters", "Cluster", lean_cluster),
                                 [self._index_cluster])
        self.seeds = Informer(api_client, cluster_resource("seeds", "Seed", lean_seed), [self._index_seed])
        self.informers = Informers([self.clusters, self.seeds])

    def _index_cluster(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        with self._lock:
            namespaces = {cluster_namespace(o) for o in (old, new) if o is not None}
            for namespace in namespaces:
                # A new list for each change: a reader holding the old one is not disturbed.
                claimants = [c for c in self._claims.get(namespace, []) if name_of(c) != name_of(old or new)]
                if new is not None and cluster_namespace(new) == namespace:
                    claimants = sorted([*claimants, new], key=name_of)
                if claimants:
                    self._claims[namespace], self._clusters[namespace] = claimants, claimants[0]
                else:
                    self._claims.pop(namespace, None)
                    self._clusters.pop(namespace, None)
            _reindex(self._datacenter_clusters, old, new, [datacenter_of(o) for o in (old, new) if o is not None],
                     lambda c, dc: datacenter_of(c) == dc)

    def _index_seed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        with self._lock:
            _reindex(self._seeds, old, new, datacenters_of(old) + datacenters_of(new),
                     lambda s, dc: dc in datacenters_of(s))

    def start(self) -> None:
        """Start both informers."""
        self.informers.start()

    def stop(self) -> None:
        """Stop the informers and wait for their threads."""
        self.informers.stop()

    def ready(self) -> bool:
        """Ready once both caches have synced; a later outage keeps serving from the cache."""
        return self.informers.ready()

    def cache_age(self) -> float:
        """Seconds since the older of the two caches last heard from the API."""
        return self.informers.cache_age()

    def stale(self) -> bool:
        """Whether a cache has lost its watch."""
        return not self.informers.connected()

    def cluster_for_namespace(self, namespace: str) -> dict[str, Any] | None:
        """The Cluster whose control plane runs in `namespace`."""
        return self._clusters.get(namespace)

    def clusters_in(self, namespace: str) -> list[dict[str, Any]]:
        """Every cached Cluster claiming `namespace`."""
        return self._claims.get(namespace, [])

    def all_clusters(self) -> list[dict[str, Any]]:
        """Every cached Cluster."""
        with self._lock:
            return [c for claimants in self._claims.values() for c in claimants]

    def cluster(self, name: str) -> dict[str, Any] | None:
        """The cached Cluster of this name."""
        return self.clusters.objects.get(f"/{name}")

    def seed_for_datacenter(self, datacenter: str) -> dict[str, Any] | None:
        """The Seed that defines `datacenter`, the first by name if several do (stored before
        seed.datacenter-unique refused them)."""
        seeds = self._seeds.get(datacenter)
        return seeds[0] if seeds else None

    def seeds_for_datacenter(self, datacenter: str) -> list[dict[str, Any]]:
        """Every cached Seed that defines `datacenter`."""
        return self._seeds.get(datacenter, [])

    def clusters_in_datacenter(self, datacenter: str) -> list[dict[str, Any]]:
        """Every cached Cluster of `datacenter`."""
        return self._datacenter_clusters.get(datacenter, [])

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


def _reindex(index: dict[str, list[dict[str, Any]]], old: dict[str, Any] | None, new: dict[str, Any] | None,
             keys: list[str], belongs: Callable[[dict[str, Any], str], bool]) -> None:
    """Move an object from `old` to `new` in an index of objects by name under each of `keys`.

    A new list for each change: a reader holding the old one is not disturbed.
    """
    gone = old or new
    for key in dict.fromkeys(keys):
        members = [o for o in index.get(key, []) if (namespace_of(o), name_of(o)) != (namespace_of(gone),
                                                                                   name_of(gone))]
        if new is not None and belongs(new, key):
            members = sorted([*members, new], key=name_of)
        if members:
            index[key] = members
        else:
            index.pop(key, None)
