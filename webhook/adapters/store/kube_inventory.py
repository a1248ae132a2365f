"""Everything a report needs, read once from the Kubernetes API into a Snapshot."""

from __future__ import annotations

from kubernetes import client

from webhook.adapters.kubeapi import list_items, read_or_none
from webhook.core import names
from webhook.core.egress import POLICY_NAME
from webhook.core.names import KKP_GROUP
from webhook.core.objects import datacenter_of
from webhook.core.options import Options
from webhook.core.report import secrets_needed, services_of
from webhook.core.snapshot import Snapshot


def kube_snapshot(api_client: client.ApiClient, options: Options) -> Snapshot:
    """Clusters, Seeds, apiserver Pods, `audit-config` ConfigMaps and the Secrets the clusters name."""
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    snap = Snapshot()
    for plural in ("clusters", "seeds"):
        for obj in custom.list_cluster_custom_object(KKP_GROUP, "v1", plural, _request_timeout=60).get("items", []):
            snap.add(obj)
    label = "=".join(names.APISERVER_LABEL)
    for pod in list_items(core.list_pod_for_all_namespaces, api_version="v1", kind="Pod", label_selector=label):
        snap.add(pod)
    for cm in list_items(core.list_config_map_for_all_namespaces, api_version="v1", kind="ConfigMap",
                         field_selector=f"metadata.name={names.CONFIGMAP_AUDIT_CONFIG}"):
        snap.add(cm)
    for policy in list_items(client.NetworkingV1Api(api_client).list_network_policy_for_all_namespaces,
                             api_version="networking.k8s.io/v1", kind="NetworkPolicy",
                             field_selector=f"metadata.name={POLICY_NAME}"):
        snap.add(policy)
    for cluster in snap.all_clusters():
        for namespace, name in secrets_needed(cluster, snap.seeds.get(datacenter_of(cluster)), options):
            raw = read_or_none(core.read_namespaced_secret, name, namespace)
            if raw is not None:
                snap.add({"apiVersion": "v1", "kind": "Secret", **raw}, f"Secret {namespace}/{name}")
    for cluster in snap.all_clusters():  # the Services the egress policies are made from, as the reconciler reads them
        for namespace, name in services_of(cluster, snap.seeds.get(datacenter_of(cluster)), snap.secrets, options):
            raw = read_or_none(core.read_namespaced_service, name, namespace)
            if raw is not None:
                snap.add({"apiVersion": "v1", "kind": "Service", **raw})
    return snap
