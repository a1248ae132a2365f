"""What `report` reads from the Kubernetes API, one cluster namespace at a time, so that memory
holds one namespace's apiserver Pods, not the fleet's. The `report` command and the reconciler's
per-Cluster metrics both read it this way."""

from __future__ import annotations

from kubernetes import client

from webhook import names
from webhook.kubeapi import list_items, read_or_none
from webhook.lookup import Lookup
from webhook.names import KKP_GROUP
from webhook.objects import cluster_namespace, datacenter_of
from webhook.options import Options
from webhook.reconcile import Mode
from webhook.report import Row, rows_of, secrets_needed
from webhook.store import MemoryStore, Snapshot


def kube_lookup(api_client: client.ApiClient) -> MemoryStore:
    """Every Cluster and Seed, listed once (the reconciler has them cached: it passes its store)."""
    custom = client.CustomObjectsApi(api_client)
    snap = Snapshot()
    for plural in ("clusters", "seeds"):
        for obj in custom.list_cluster_custom_object(KKP_GROUP, "v1", plural, _request_timeout=60).get("items", []):
            snap.add(obj)
    return MemoryStore(snap)


def namespace_snapshot(core: client.CoreV1Api, lookup: Lookup, namespace: str, options: Options) -> Snapshot:
    """The Clusters claiming `namespace` and their Seeds (from `lookup`), and from the API the
    namespace's apiserver Pods (listed by label), its `audit-config` and the Secrets its Clusters
    name (each read by name: nothing else of the namespace is read)."""
    snap = Snapshot()
    claimants = lookup.clusters_in(namespace)
    for cluster in claimants:
        snap.add(cluster)
        seed = lookup.seed_for_datacenter(datacenter_of(cluster))
        if seed is not None:
            snap.seeds[datacenter_of(cluster)] = seed
    for pod in list_items(core.list_namespaced_pod, namespace, api_version="v1", kind="Pod",
                          label_selector="=".join(names.APISERVER_LABEL)):
        snap.add(pod)
    config = read_or_none(core.read_namespaced_config_map, names.CONFIGMAP_AUDIT_CONFIG, namespace)
    if config is not None:
        snap.add({"apiVersion": "v1", "kind": "ConfigMap", **config})
    refs = {ref for c in claimants for ref in secrets_needed(c, snap.seeds.get(datacenter_of(c)), options)}
    for secret_namespace, name in sorted(refs):
        raw = read_or_none(core.read_namespaced_secret, name, secret_namespace)
        if raw is not None:
            snap.add({"apiVersion": "v1", "kind": "Secret", **raw}, f"Secret {secret_namespace}/{name}")
    return snap


def kube_rows(api_client: client.ApiClient, lookup: Lookup, options: Options, mode: Mode) -> list[Row]:
    """The report row of every Cluster `lookup` knows, by name, read a cluster namespace at a time."""
    core = client.CoreV1Api(api_client)
    namespaces = sorted({cluster_namespace(c) for c in lookup.all_clusters()})
    rows = [row for namespace in namespaces
            for row in rows_of(namespace_snapshot(core, lookup, namespace, options), options, mode)]
    return sorted(rows, key=lambda r: r.cluster)
