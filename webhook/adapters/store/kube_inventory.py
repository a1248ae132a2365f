"""What `report` reads from the Kubernetes API, one cluster namespace at a time, so that memory
holds one namespace's apiserver Pods, not the fleet's. The `report` command and the reconciler's
per-Cluster metrics both read it this way."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from kubernetes import client

from webhook.adapters.kubeapi import list_items, read_or_none
from webhook.adapters.store import MemoryStore
from webhook.core import names
from webhook.core.egress import POLICY_NAME
from webhook.core.lookup import Lookup
from webhook.core.names import KKP_GROUP
from webhook.core.objects import cluster_namespace, datacenter_of
from webhook.core.operator_config import OperatorConfig
from webhook.core.options import Options
from webhook.core.reconcile_plan import Mode
from webhook.core.report import Row, rows_of, secrets_needed, services_of
from webhook.core.snapshot import Snapshot


def kube_lookup(api_client: client.ApiClient) -> MemoryStore:
    """Every Cluster and Seed, listed once (the reconciler has them cached: it passes its store)."""
    custom = client.CustomObjectsApi(api_client)
    snap = Snapshot()
    for plural in ("clusters", "seeds"):
        for obj in custom.list_cluster_custom_object(KKP_GROUP, "v1", plural, _request_timeout=60).get("items", []):
            snap.add(obj)
    return MemoryStore(snap)


class Watched(Protocol):
    """Objects a watch keeps (webhook/adapters/store/kube_watches.py): what need not be read again."""

    def covers(self, kind: str, name: str) -> bool: ...

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None: ...

    def connected(self) -> bool: ...


def namespace_snapshot(api_client: client.ApiClient, lookup: Lookup, namespace: str, options: Options, *,
                       egress: bool, watched: Watched | None = None) -> Snapshot:
    """The Clusters claiming `namespace` and their Seeds (from `lookup`), and from the API the
    namespace's apiserver Pods (listed by label), its `audit-config` and the Secrets its Clusters
    name (each read by name: nothing else of the namespace is read). With `egress`, also its egress
    NetworkPolicy and the Services that policy is made from, as the reconciler reads them. What
    `watched` covers is taken from its cache, not read."""
    core = client.CoreV1Api(api_client)

    def read(kind: str, call: Callable[..., Any], name: str, in_namespace: str) -> dict[str, Any] | None:
        if watched is not None and watched.covers(kind, name):
            return watched.get(kind, in_namespace, name)
        raw = read_or_none(call, name, in_namespace)
        return None if raw is None else {"apiVersion": "v1", "kind": kind, **raw}

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
    config = read("ConfigMap", core.read_namespaced_config_map, names.CONFIGMAP_AUDIT_CONFIG, namespace)
    if config is not None:
        snap.add(config)
    refs = {ref for c in claimants for ref in secrets_needed(c, snap.seeds.get(datacenter_of(c)), options)}
    for secret_namespace, name in sorted(refs):
        secret = read("Secret", core.read_namespaced_secret, name, secret_namespace)
        if secret is not None:
            snap.add(secret, f"Secret {secret_namespace}/{name}")
    if not egress:
        return snap
    if watched is not None and watched.covers("NetworkPolicy", POLICY_NAME):
        policy = watched.get("NetworkPolicy", namespace, POLICY_NAME)
        policies = [policy] if policy is not None else []
    else:  # listed by name, not read: the reconciler may only list and watch NetworkPolicies of this name
        policies = list(list_items(client.NetworkingV1Api(api_client).list_namespaced_network_policy, namespace,
                                   api_version="networking.k8s.io/v1", kind="NetworkPolicy",
                                   field_selector=f"metadata.name={POLICY_NAME}"))
    for policy in policies:
        snap.add(policy)
    services = {ref for c in claimants for ref in services_of(c, snap.seeds.get(datacenter_of(c)), snap.secrets,
                                                               options)}
    for service_namespace, name in sorted(services):
        raw = read_or_none(core.read_namespaced_service, name, service_namespace)
        if raw is not None:
            snap.add({"apiVersion": "v1", "kind": "Service", **raw})
    return snap


def namespace_rows(api_client: client.ApiClient, lookup: Lookup, namespace: str, options: Options, mode: Mode,
                   config: OperatorConfig | None = None, webhook_namespace: str = "audit-webhook",
                   watched: Watched | None = None) -> list[Row]:
    """The report rows of the Clusters that claim `namespace` (`config` and `webhook_namespace` as for
    `rows_of`: with a config the egress policies are compared; `watched` as for `namespace_snapshot`)."""
    return rows_of(namespace_snapshot(api_client, lookup, namespace, options, egress=config is not None,
                                      watched=watched),
                   options, mode, config, webhook_namespace)


def kube_rows(api_client: client.ApiClient, lookup: Lookup, options: Options, mode: Mode,
              config: OperatorConfig | None = None, webhook_namespace: str = "audit-webhook") -> list[Row]:
    """The report row of every Cluster `lookup` knows, by name, read a cluster namespace at a time."""
    namespaces = sorted({cluster_namespace(c) for c in lookup.all_clusters()})
    rows = [row for namespace in namespaces
            for row in namespace_rows(api_client, lookup, namespace, options, mode, config, webhook_namespace)]
    return sorted(rows, key=lambda r: r.cluster)
