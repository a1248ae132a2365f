"""The reconciler's watches of what it keeps in cluster namespaces and of what its report reads there,
cached by namespace and name.

Each is as narrow as the reconciler's rights (charts/audit-webhook/templates/rbac.yaml): objects of
one name, asked for with a `metadata.name` field selector that RBAC authorizes by resourceName, so
the reconciler lists no ConfigMap, Secret or NetworkPolicy of any other name. Namespaces and
apiserver Pods are asked for as metadata only. On a KKP seed the same, but for the apiserver
Deployments, which are KKP's. Each object keeps only the fields the reconciler reads. The copies of
datacenters' webhook Secrets have names only Seeds know: they are read by name, never watched.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from kubernetes import client

from webhook.adapters.store.kube import Informer, Informers, Resource
from webhook.core import names
from webhook.core.egress import POLICY_NAME
from webhook.core.objects import dig, name_of, namespace_of
from webhook.core.reconcile_plan import Mode


def lean_namespace(obj: dict[str, Any]) -> dict[str, Any]:
    """A Namespace's name: whether it exists is all the reconciler asks."""
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name_of(obj)}}


def lean_deployment(obj: dict[str, Any]) -> dict[str, Any]:
    """An apiserver Deployment as far as rollouts go: its name and its pod template's annotations."""
    meta = obj.get("metadata") or {}
    return {"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion") if k in meta},
            "spec": {"template": {"metadata": {"annotations": dig(obj, "spec", "template", "metadata",
                                                                   "annotations") or {}}}}}


def lean_pod(obj: dict[str, Any]) -> dict[str, Any]:
    """An apiserver Pod as far as stale settings go: name, age, settings hash, whether it is going."""
    meta = obj.get("metadata") or {}
    out = {k: meta[k] for k in ("name", "namespace", "uid", "creationTimestamp", "deletionTimestamp") if k in meta}
    settings_hash = (meta.get("annotations") or {}).get(names.SETTINGS_HASH_ANNOTATION)
    if settings_hash is not None:
        out["annotations"] = {names.SETTINGS_HASH_ANNOTATION: settings_hash}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": out}


def _named(plural: str, path: str, api_version: str, kind: str, name: str, **kw: Any) -> Resource:
    return Resource(f"{plural}/{name}", path, api_version, kind, field_selector=f"metadata.name={name}", **kw)


def resources(mode: Mode, deployment: str) -> list[Resource]:
    """What the reconciler watches in `mode`: on a KKP seed only what it writes there."""
    watched = [
        Resource("namespaces", "/api/v1/namespaces", "v1", "Namespace", metadata_only=True,
                 transform=lean_namespace, keep_unchanged=True),
        _named("networkpolicies", "/apis/networking.k8s.io/v1/networkpolicies", "networking.k8s.io/v1",
               "NetworkPolicy", POLICY_NAME),
        # What the Clusters' report reads, in both modes: a change is what has it read a namespace
        # again. An apiserver Pod changed in its spec alone (an ephemeral container) is a change too,
        # though its metadata looks the same: every event reaches the handlers.
        Resource("pods", "/api/v1/pods", "v1", "Pod", label_selector="=".join(names.APISERVER_LABEL),
                 metadata_only=True, transform=lean_pod),
        _named("configmaps", "/api/v1/configmaps", "v1", "ConfigMap", names.CONFIGMAP_AUDIT_CONFIG),
        _named("secrets", "/api/v1/secrets", "v1", "Secret", names.SECRET_FLUENTBIT),
    ]
    if mode == "standalone":
        watched.append(_named("deployments", "/apis/apps/v1/deployments", "apps/v1", "Deployment", deployment,
                              transform=lean_deployment, keep_unchanged=True))
    return watched


def webhook_configuration_resources(names_: tuple[str, ...]) -> list[Resource]:
    """The webhook configurations whose namespace lists the reconciler keeps, each by its name: an
    `apply` of the manifests (a Helm upgrade, `kubectl apply -k`) writes the lists back to the
    manifests' placeholder, and must be undone at once, not at the next resync."""
    group = "/apis/admissionregistration.k8s.io/v1"
    return [_named(plural, f"{group}/{plural}", "admissionregistration.k8s.io/v1", kind, name)
            for name in names_
            for plural, kind in (("mutatingwebhookconfigurations", "MutatingWebhookConfiguration"),
                                 ("validatingwebhookconfigurations", "ValidatingWebhookConfiguration"))]


class ReconcilerWatches:
    """Informers on the reconciler's objects; `on_namespace(ns)` hears of every change in a namespace,
    `on_webhook_configuration()` of every change to one of its webhook configurations."""

    def __init__(self, api_client: client.ApiClient, mode: Mode, deployment: str,
                 on_namespace: Callable[[str], None], webhook_configs: tuple[str, ...] = (),
                 on_webhook_configuration: Callable[[], None] = lambda: None) -> None:
        self.on_namespace = on_namespace
        self._by_kind: dict[str, Informer] = {}
        self._named: set[tuple[str, str]] = set()  # (kind, name) the watches cover
        self._pods: dict[str, dict[str, dict[str, Any]]] = {}  # namespace -> name -> Pod
        for resource in resources(mode, deployment):
            informer = Informer(api_client, resource, [self._changed])
            if resource.kind == "Pod":
                informer.handlers.insert(0, self._index_pod)
            self._by_kind[resource.kind] = informer
            if resource.field_selector:
                self._named.add((resource.kind, resource.field_selector.removeprefix("metadata.name=")))
        configurations = [Informer(api_client, resource, [lambda _old, _new: on_webhook_configuration()])
                          for resource in webhook_configuration_resources(webhook_configs)]
        self.informers = Informers([*self._by_kind.values(), *configurations])

    def _changed(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new if new is not None else old
        self.on_namespace(namespace_of(obj) or (name_of(obj) if obj and obj.get("kind") == "Namespace" else ""))

    def _index_pod(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        obj = new if new is not None else old
        namespace = namespace_of(obj)
        pods = dict(self._pods.get(namespace, {}))  # a new dict: readers keep a consistent one
        if new is None:
            pods.pop(name_of(old), None)
        else:
            pods[name_of(new)] = new
        if pods:
            self._pods[namespace] = pods
        else:
            self._pods.pop(namespace, None)

    def covers(self, kind: str, name: str) -> bool:
        """Whether objects of this kind and name are watched (else they are read by name)."""
        return (kind, name) in self._named

    def get(self, kind: str, namespace: str, name: str) -> dict[str, Any] | None:
        """A watched object from the cache."""
        return self._by_kind[kind].objects.get(f"{namespace}/{name}")

    def namespace_exists(self, namespace: str) -> bool:
        return f"/{namespace}" in self._by_kind["Namespace"].objects

    def pods(self, namespace: str) -> list[dict[str, Any]]:
        """The apiserver Pods of a namespace (their metadata)."""
        return list(self._pods.get(namespace, {}).values())

    def start(self) -> None:
        self.informers.start()

    def stop(self) -> None:
        self.informers.stop()

    def ready(self) -> bool:
        return self.informers.ready()

    def connected(self) -> bool:
        """Whether every watch is connected (else its cache may be behind)."""
        return self.informers.connected()
