"""Which rules apply to which object, and the answer for an admission: pure."""

from __future__ import annotations

from typing import Any

from webhook.core import names
from webhook.core.names import KKP_API_VERSION
from webhook.core.objects import cluster_namespace, dig, kind_of, name_of, namespace_of
from webhook.core.settings import EffectiveSettings
from webhook.core.validation.cluster import check_cluster
from webhook.core.validation.configmap import check_configmap
from webhook.core.validation.context import NO_CONTEXT, Context
from webhook.core.validation.errors import ErrorType, Findings, Path, forbidden
from webhook.core.validation.seed import check_seed
from webhook.core.validation.webhook_backend import SecretRef, secret_ref

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


def check_object(obj: Any, ctx: Context = NO_CONTEXT) -> Findings:
    """Every rule for one object, with what `ctx` holds beyond it."""
    kind = kind_key(obj)
    if kind == CLUSTER:
        return check_cluster(obj, ctx)
    if kind == SEED:
        return check_seed(obj, ctx)
    if kind == CONFIGMAP:
        return check_configmap(obj, ctx.owner)
    return Findings()


def check_admission(obj: Any, old: Any, ctx: Context = NO_CONTEXT, *, only_identity: bool = False) -> Findings:
    """The findings for a create (`old` None) or an update, ratcheted against the old object.

    `ctx.namespace_holders`: the Clusters that held a Cluster's control-plane namespace before it.
    `only_identity`: just that rule (a status update, which carries no settings of ours).
    """
    found = Findings() if only_identity else check_object(obj, ctx)
    namespace_holders = ctx.namespace_holders
    if namespace_holders and kind_key(obj) == CLUSTER:
        # Never ratcheted: whose settings an apiserver Pod runs with must not be in doubt.
        listed = ", ".join(f'"{h}"' for h in sorted(namespace_holders))
        found.error(forbidden(Path("status").child("namespaceName"),
                              f'namespace "{cluster_namespace(obj)}" belongs to Cluster {listed}',
                              offending=cluster_namespace(obj)), rule="cluster.namespace-holder")
        return found
    if old is None and kind_key(obj) == CLUSTER:
        found = _secret_may_follow(found, cluster_namespace(obj))
    if old is not None and found.errors:
        found = found.ratchet(check_object(old, ctx))
    return found


def _secret_may_follow(found: Findings, namespace: str) -> Findings:
    """A new Cluster may name a webhook Secret of its own namespace that does not exist yet: KKP
    creates that namespace only after the Cluster (cluster templates do exactly this)."""
    later = [e for e in found.errors if e.type is ErrorType.NOT_FOUND and str(e.value).startswith(f"{namespace}/")]
    if not later:
        return found
    return found.excused(later, lambda e: f"Secret {e.value} does not exist yet; the apiserver waits for it")


# Deletions these do are part of removing a whole namespace or owner; refusing them would wedge it.
CLEANUP_USERS = ("system:serviceaccount:kube-system:namespace-controller",
                 "system:serviceaccount:kube-system:generic-garbage-collector")


def deletion_blockers(obj: Any, namespace: str, users_of: list[tuple[dict[str, Any], EffectiveSettings]]
                      ) -> list[str]:
    """The clusters that still need `obj` (a Secret or the audit-config ConfigMap) to run their apiserver.

    A cluster being deleted needs nothing any more.
    """
    _, kind = kind_of(obj)
    name = name_of(obj)
    needing = []
    for cluster, settings in users_of:
        if dig(cluster, "metadata", "deletionTimestamp"):
            continue
        if kind == "ConfigMap" and name == names.CONFIGMAP_AUDIT_CONFIG:
            needed = settings.needs_injection and settings.namespace == namespace
        elif kind == "Secret" and settings.webhook is not None:
            hook = settings.webhook
            mounted_copy = (settings.namespace, hook.secret_name)
            needed = (namespace, name) in {(hook.secret_namespace, hook.secret_name), mounted_copy}
        else:
            needed = False
        if needed:
            needing.append(settings.cluster_id)
    return sorted(needing)


def deletion_message(obj: Any, namespace: str, clusters: list[str]) -> str:
    """Why a deletion is refused, and what to do instead."""
    kind, name = kind_of(obj)[1], name_of(obj)
    listed = ", ".join(f'"{c}"' for c in clusters)
    what = ("the audit policy of their apiserver" if kind == "ConfigMap"
            else "the configuration of their audit webhook backend")
    return (f'{kind} "{namespace}/{name}" is in use: cluster{"s" if len(clusters) > 1 else ""} {listed} '
            f"need{'' if len(clusters) > 1 else 's'} it as {what}; turn that off in the Cluster (or the datacenter's "
            "settings) first")


def object_label(obj: Any) -> str:
    """`name` of an object, for messages."""
    return name_of(obj) or "<unnamed>"


PROTECTED_CRDS = (f"clusters.{names.KKP_GROUP}", f"seeds.{names.KKP_GROUP}")
ALLOW_CRD_DELETION_ANNOTATION = "audit-webhook.kubermatic.k8c.io/allow-deletion"


def crd_deletion_message(obj: Any) -> str:
    """Why deleting this CRD is refused ("" when it is not): it would delete every Cluster or Seed."""
    name = name_of(obj)
    if kind_of(obj)[1] != "CustomResourceDefinition" or name not in PROTECTED_CRDS:
        return ""
    if dig(obj, "metadata", "annotations", ALLOW_CRD_DELETION_ANNOTATION) == "true":
        return ""
    return (f'CustomResourceDefinition "{name}" is protected: deleting it deletes every '
            f'{name.split(".")[0][:-1].capitalize()} with it. Annotate it {ALLOW_CRD_DELETION_ANNOTATION}="true" '
            "first if that is what you want")
