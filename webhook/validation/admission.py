"""Which rules apply to which object, and the answer for an admission: pure."""

from __future__ import annotations

from typing import Any

from webhook.names import KKP_API_VERSION
from webhook.objects import cluster_namespace, dig, kind_of, name_of, namespace_of
from webhook.validation.cluster import check_cluster
from webhook.validation.configmap import check_configmap
from webhook.validation.errors import Findings
from webhook.validation.seed import check_seed
from webhook.validation.webhook_backend import SecretRef, Secrets, secret_ref

CLUSTER, SEED, CONFIGMAP = "Cluster", "Seed", "ConfigMap"
_QUALIFIED = {CLUSTER: "Cluster.kubermatic.k8c.io", SEED: "Seed.kubermatic.k8c.io", CONFIGMAP: "ConfigMap"}


def kind_key(obj: Any) -> str:
    """CLUSTER, SEED, CONFIGMAP, or "" for objects without rules."""
    api_version, kind = kind_of(obj)
    if api_version == KKP_API_VERSION and kind in (CLUSTER, SEED):
        return kind
    if api_version == "v1" and kind == CONFIGMAP:
        return CONFIGMAP
    return ""


def qualified_kind(obj: Any) -> str:
    """The kind as kube-apiserver names it in messages ("Cluster.kubermatic.k8c.io")."""
    return _QUALIFIED.get(kind_key(obj), kind_of(obj)[1] or "object")


def secret_refs(obj: Any) -> list[SecretRef]:
    """The Secrets the rules for `obj` will read; the shell fetches them beforehand."""
    kind = kind_key(obj)
    refs: list[SecretRef | None] = []
    if kind == CLUSTER:
        refs.append(secret_ref(dig(obj, "spec", "auditLogging", "webhookBackend"), cluster_namespace(obj)))
    elif kind == SEED:
        namespace = namespace_of(obj) or "kubermatic"
        refs.append(secret_ref(dig(obj, "spec", "auditLogging", "webhookBackend"), namespace))
        datacenters = dig(obj, "spec", "datacenters")
        if isinstance(datacenters, dict):
            refs.extend(secret_ref(dig(dc, "spec", "enforcedAuditWebhookSettings"), namespace)
                        for dc in datacenters.values())
    return sorted({r for r in refs if r is not None})


def check_object(obj: Any, *, seed: dict[str, Any] | None, secrets: Secrets | None) -> Findings:
    """Every rule for one object; `seed` is the Seed of a Cluster's datacenter."""
    kind = kind_key(obj)
    if kind == CLUSTER:
        return check_cluster(obj, seed, secrets)
    if kind == SEED:
        return check_seed(obj, secrets)
    if kind == CONFIGMAP:
        return check_configmap(obj)
    return Findings()


def check_admission(
    obj: Any, old: Any, *, seed: dict[str, Any] | None, secrets: Secrets | None
) -> Findings:
    """The findings for a create (`old` None) or an update, ratcheted against the old object."""
    found = check_object(obj, seed=seed, secrets=secrets)
    if old is not None and found.errors:
        found = found.ratchet(check_object(old, seed=seed, secrets=secrets))
    return found


def object_label(obj: Any) -> str:
    """`name` of an object, for messages."""
    return name_of(obj) or "<unnamed>"
