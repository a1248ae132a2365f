"""Everything a report needs, read once from the Kubernetes API into a Snapshot."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import client

from webhook import names
from webhook.kubeapi import read_or_none
from webhook.names import KKP_GROUP
from webhook.objects import datacenter_of
from webhook.options import Options
from webhook.report import secrets_needed
from webhook.store import Snapshot


def _items(response: Any, api_version: str, kind: str) -> list[dict[str, Any]]:
    # List items come without apiVersion and kind; the snapshot tells objects apart by them.
    return [{"apiVersion": api_version, "kind": kind, **item} for item in json.loads(response.data)["items"]]


def kube_snapshot(api_client: client.ApiClient, options: Options) -> Snapshot:
    """Clusters, Seeds, apiserver Pods, `audit-config` ConfigMaps and the Secrets the clusters name."""
    custom, core = client.CustomObjectsApi(api_client), client.CoreV1Api(api_client)
    snap = Snapshot()
    for plural in ("clusters", "seeds"):
        for obj in custom.list_cluster_custom_object(KKP_GROUP, "v1", plural, _request_timeout=60).get("items", []):
            snap.add(obj)
    label = "=".join(names.APISERVER_LABEL)
    for pod in _items(core.list_pod_for_all_namespaces(label_selector=label, _preload_content=False,
                                                       _request_timeout=60), "v1", "Pod"):
        snap.add(pod)
    for cm in _items(core.list_config_map_for_all_namespaces(
            field_selector=f"metadata.name={names.CONFIGMAP_AUDIT_CONFIG}", _preload_content=False,
            _request_timeout=60), "v1", "ConfigMap"):
        snap.add(cm)
    for cluster in list(snap.clusters.values()):
        for namespace, name in secrets_needed(cluster, snap.seeds.get(datacenter_of(cluster)), options):
            raw = read_or_none(core.read_namespaced_secret, name, namespace)
            if raw is not None:
                snap.add({"apiVersion": "v1", "kind": "Secret", **raw}, f"Secret {namespace}/{name}")
    return snap
