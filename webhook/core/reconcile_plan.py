"""What the reconciler should do in one cluster namespace: pure decisions over plain objects.

It keeps the objects behind the apiserver's volumes and rolls the apiserver Deployment when the
effective settings change. Everything it creates carries the managed-by and cluster labels and an
ownerReference to its Cluster. It updates or deletes an object only when all three are there and
the object has a name it could have created: labels alone are written by anyone who may patch the
object, and would otherwise turn the reconciler's rights into theirs.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from webhook.core import names
from webhook.core.egress import POLICY_NAME, Classified, classify, destinations, network_policy, refusal
from webhook.core.manifests import CLUSTER_LABEL, MANAGED_BY, MANAGED_BY_LABEL, managed_metadata, needed_files
from webhook.core.mutation import Prepared
from webhook.core.objects import dig, kind_of, name_of
from webhook.core.operator_config import DEFAULT, OperatorConfig
from webhook.core.options import Options
from webhook.core.settings import EffectiveSettings, Origin
from webhook.core.settings_hash import mounted_digest
from webhook.core.validation.kubeconfig import server_of

Verb = Literal["create", "update", "delete", "report"]
# Who owns the objects behind the apiserver's volumes. On a KKP seed, KKP's controllers write the
# apiserver Deployment, audit-config, audit-logs-fluentbit and the copied webhook Secret: we only
# add what KKP does not (the egress NetworkPolicy). Standalone, we keep all of them.
Mode = Literal["kkp", "standalone"]
MODES: tuple[Mode, ...] = ("kkp", "standalone")


@dataclass(frozen=True)
class Owner:
    """The Cluster whose namespace the objects are kept in, named in their ownerReferences."""

    name: str
    uid: str

    @classmethod
    def of(cls, cluster: Mapping[str, Any]) -> Owner:
        return cls(name_of(cluster), str(dig(cluster, "metadata", "uid") or ""))

    def reference(self) -> dict[str, Any]:
        return {"apiVersion": "kubermatic.k8c.io/v1", "kind": "Cluster", "name": self.name, "uid": self.uid}


@dataclass(frozen=True)
class Ownership:
    """Which objects of a cluster namespace the reconciler may update or delete."""

    owner: Owner
    cluster_id: str
    # (kind, name) of everything we could have created there.
    names: frozenset[tuple[str, str]]

    def owns(self, obj: Mapping[str, Any]) -> bool:
        """Our labels, an ownerReference to the Cluster's UID, and a name we could have created."""
        labels = dig(obj, "metadata", "labels") or {}
        refs = dig(obj, "metadata", "ownerReferences") or []
        return (bool(self.owner.uid) and labels.get(MANAGED_BY_LABEL) == MANAGED_BY
                and labels.get(CLUSTER_LABEL) == self.cluster_id
                and any(isinstance(r, Mapping) and r.get("uid") == self.owner.uid and r.get("kind") == "Cluster"
                        for r in refs)
                and _key(obj) in self.names)


def ownership(settings: EffectiveSettings, owner: Owner, mode: Mode,
              copies: frozenset[str] = frozenset()) -> Ownership:
    """What we may keep for a cluster: the egress policy; standalone, the audit files; and copies of
    webhook backend Secrets: today's, and `copies` (names we copied before, so that a copy the
    datacenter no longer names is found and removed)."""
    keep = {("NetworkPolicy", POLICY_NAME)}
    if mode == "standalone":
        keep |= {("ConfigMap", names.CONFIGMAP_AUDIT_CONFIG), ("Secret", names.SECRET_FLUENTBIT)}
    secrets = set(copies)
    if settings.webhook is not None and settings.webhook.secret_namespace != settings.namespace:
        secrets.add(settings.webhook.secret_name)
    keep |= {("Secret", name) for name in secrets}
    return Ownership(owner, settings.cluster_id, frozenset(keep))


@dataclass(frozen=True)
class Action:
    """One write to the API, and why (the text becomes an Event on the Cluster). A `report` writes
    nothing: an object of the name we need is not ours, and is left alone."""

    verb: Verb
    obj: dict[str, Any]
    reason: str


def _as_data(secret: dict[str, Any]) -> dict[str, Any]:
    """A Secret with `stringData` turned into `data`, the form the API returns and compares."""
    if "stringData" not in secret:
        return secret
    out = {k: v for k, v in secret.items() if k != "stringData"}
    out["data"] = {k: base64.b64encode(v.encode()).decode() for k, v in secret["stringData"].items()}
    return out


def webhook_secret_copy(settings: EffectiveSettings, source: Mapping[str, bytes] | None) -> dict[str, Any] | None:
    """The datacenter's webhook Secret copied into the cluster namespace (Pods mount only their own), if needed."""
    hook = settings.webhook
    if hook is None or hook.secret_namespace == settings.namespace or source is None:
        return None
    return {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": managed_metadata(hook.secret_name, settings),
            "data": {k: base64.b64encode(bytes(v)).decode() for k, v in source.items()}}


def desired_objects(settings: EffectiveSettings, options: Options, webhook_source: Mapping[str, bytes] | None,
                    egress: dict[str, Any] | None = None, mode: Mode = "standalone",
                    owner: Owner | None = None) -> list[dict[str, Any]]:
    """Every object we keep in the cluster namespace for this cluster's apiserver; `egress` is its
    NetworkPolicy (webhook/core/egress.py), when its sinks need one. With an `owner` that has a UID, each
    names it in its ownerReferences (and goes when the Cluster goes).

    In KKP mode KKP keeps the rest, except the copy of a datacenter's webhook Secret, which KKP
    makes only where the datacenter also enforces audit logging: we make it where KKP does not.
    """
    objects: list[dict[str, Any]] = []
    if mode == "standalone":
        objects = [_as_data(o) if o["kind"] == "Secret" else o for o in needed_files(settings, options)]
    kkp_copies = settings.audit_origin in (Origin.DATACENTER, Origin.SEED)
    copy = webhook_secret_copy(settings, webhook_source)
    if copy is not None and (mode == "standalone" or not kkp_copies):
        objects.append(copy)
    if egress is not None:
        objects.append(egress)
    if owner is not None and owner.uid:
        objects = [{**o, "metadata": {**o["metadata"], "ownerReferences": [owner.reference()]}} for o in objects]
    return objects


def webhook_sources(settings: EffectiveSettings) -> tuple[tuple[str, str] | None, tuple[str, str] | None]:
    """(the datacenter's webhook Secret to copy, or None; the Secret whose webhook.yaml names the
    server, read when there is no copy to make) as (namespace, name)."""
    hook = settings.webhook
    if hook is None:
        return None, None
    own = (settings.namespace, hook.secret_name)
    return (None if hook.secret_namespace == settings.namespace else (hook.secret_namespace, hook.secret_name)), own


def egress_targets(settings: EffectiveSettings, webhook_config: bytes | None) -> list[Classified]:
    """Where the apiserver and its sidecar send audit events; `webhook_config` is the backend's webhook.yaml."""
    server = server_of(webhook_config) if webhook_config is not None else None
    return [classify(d, settings.namespace) for d in destinations(settings, server)]


def services_needed(targets: list[Classified]) -> list[tuple[str, str]]:
    """The Services (namespace, name) whose selector and ports the egress policy needs."""
    return sorted({(t.namespace, t.service) for t in targets if t.kind == "service"})


@dataclass(frozen=True)
class Desired:
    """What the reconciler keeps for a cluster, and the destinations it does not open (and why)."""

    objects: list[dict[str, Any]]
    refused: list[tuple[str, str]]


def desired_state(settings: EffectiveSettings, options: Options, *, webhook_source: Mapping[str, bytes] | None,
                  webhook_config: bytes | None, services: Mapping[tuple[str, str], Mapping[str, Any] | None],
                  config: OperatorConfig = DEFAULT, webhook_namespace: str = "audit-webhook",
                  mode: Mode = "standalone", owner: Owner | None = None) -> Desired:
    """The one decision of what a cluster namespace holds, for the reconciler and `files` alike.

    `webhook_source` is the datacenter's webhook Secret to copy (webhook_sources), `webhook_config`
    the webhook.yaml that names the backend's server, `services` each needed Service's
    `egress.service_view` (None: not found, its namespace alone is allowed).
    """
    targets = egress_targets(settings, webhook_config)
    refused = [(t.destination.source, why) for t in targets if (why := refusal(t, config, webhook_namespace))]
    egress = network_policy(settings, targets, services, config, webhook_namespace)
    return Desired(desired_objects(settings, options, webhook_source, egress, mode, owner), refused)


def _content(obj: dict[str, Any]) -> Any:
    return obj.get("spec") if obj.get("kind") == "NetworkPolicy" else (obj.get("data") or {})


def _key(obj: dict[str, Any]) -> tuple[str, str]:
    return kind_of(obj)[1], name_of(obj)


def plan(settings: EffectiveSettings, desired: list[dict[str, Any]], existing: list[dict[str, Any]],
         ours: Ownership) -> list[Action]:
    """Creates, updates and deletes that turn `existing` (what the namespace holds under the names
    `ours` lists or a desired object has) into `desired`.

    Only objects `ours` owns are ever updated or deleted. One of a desired name that
    is not ours (KKP's, a user's) is reported and left alone; so is a user's `audit-config`
    without a preset, which is created once and then belongs to the user. Ours is kept equal to
    the preset's policy while a preset is set.
    """
    current = {_key(o): o for o in existing}
    actions: list[Action] = []
    for want in desired:
        kind, name = _key(want)
        have = current.get((kind, name))
        label = f"{kind} {name}"
        if have is None:
            actions.append(Action("create", want, f"created {label}"))
            continue
        user_policy = kind == "ConfigMap" and name == names.CONFIGMAP_AUDIT_CONFIG and not settings.preset
        if user_policy or _content(have) == _content(want):
            continue
        if not ours.owns(have):
            actions.append(Action("report", have, f"{label} exists and is not managed by audit-webhook: left alone"))
            continue
        update = {**want, "metadata": {**want["metadata"], "resourceVersion": dig(have, "metadata", "resourceVersion")}}
        why = (f'restored {label} to the "{settings.preset}" preset' if kind == "ConfigMap" else f"updated {label}")
        actions.append(Action("update", update, why))
    wanted = {_key(o) for o in desired}
    for have in existing:
        if _key(have) not in wanted and ours.owns(have):
            actions.append(Action("delete", have, f"deleted {_key(have)[0]} {name_of(have)}: no longer needed"))
    return actions


def stale_pods(pods: list[dict[str, Any]], prepared: Prepared) -> list[dict[str, Any]]:
    """The running Pods injected with other settings than `prepared`'s (not those going away)."""
    return [p for p in pods if not dig(p, "metadata", "deletionTimestamp")
            and (seen := dig(p, "metadata", "annotations", names.SETTINGS_HASH_ANNOTATION)) is not None
            and not prepared.is_current(seen, p)]


def mounted_config(settings: EffectiveSettings, webhook_config: bytes | None,
                   audit_config: Mapping[str, Any] | None) -> str:
    """The mounted digest (settings_hash.mounted_digest) of a cluster: the webhook backend's
    webhook.yaml its Pods mount, and its `audit-config` policy when it is the user's (no preset)."""
    if not settings.needs_injection:
        return ""
    policy = None
    if not settings.preset and audit_config is not None:
        policy = str((audit_config.get("data") or {}).get(names.POLICY_KEY, ""))
    return mounted_digest(webhook_config if settings.webhook is not None else None, policy)


def _newest(pods: list[dict[str, Any]]) -> str:
    return max(str(dig(p, "metadata", "creationTimestamp") or "") for p in pods)


@dataclass(frozen=True)
class DeploymentPatch:
    """A merge patch of the apiserver Deployment, why, and whether it rolls it (a patch of its own
    metadata only records what the upgrade found, and rolls nothing)."""

    patch: dict[str, Any]
    why: str
    rolls: bool


def _settled(seen: str | None, want: str, legacy: str, migrated: str | None,
             record: dict[str, str], key: str) -> bool:
    """Whether a pod template carrying `seen` runs what is wanted; `record` gets what to write on
    the Deployment's metadata under `key` when `seen` is the previous version's (`legacy`) hash
    and nothing was recorded yet: that is the upgrade, which rolls nothing. After it, `migrated`
    (the wanted hash then) tells whether anything changed since."""
    if seen == want:
        return True
    if seen is None or seen != legacy:
        return False
    if migrated is None:
        record[key] = want
        return True
    return migrated == want


def rollout_patch(deployment: dict[str, Any] | None, prepared: Prepared, mode: Mode = "standalone",
                  pods: list[dict[str, Any]] | None = None, mounted: str = "") -> DeploymentPatch | None:
    """A patch of the apiserver Deployment that rolls it (or records what the upgrade found), and
    why; None when there is nothing to do.

    It rolls when what is rendered for its pod template changed, when what the apiserver reads at
    start from its mounted objects changed (`mounted`, settings_hash.mounted_digest), and when one
    of its `pods` runs with stale settings although it was created after the last rollout: a
    replica of the webhook whose cache lagged admitted it with the settings of before. Each rollout
    records the creation time of the newest Pod it replaces (RFC 3339 times compare as text), so
    Pods a rollout is already replacing roll nothing.

    The upgrade rolls nothing by itself: a pod template still carrying 0.1's hash of the same
    settings, or no mounted digest yet, is taken as current once, and the hash it stood for is
    written on the Deployment's own metadata (not the template); a later change of either rolls.
    A Deployment that never carried our annotation and needs nothing is left alone, so turning the
    reconciler on does not roll every apiserver of the seed. In KKP mode the Deployment is KKP's.
    """
    settings = prepared.settings
    if deployment is None or mode == "kkp" or settings is None:
        return None
    template = dig(deployment, "spec", "template", "metadata", "annotations") or {}
    recorded = dig(deployment, "metadata", "annotations") or {}
    want = prepared.pod_hash({"spec": dig(deployment, "spec", "template", "spec") or {}})
    current = template.get(names.SETTINGS_HASH_ANNOTATION)
    pods = pods or []
    record: dict[str, str] = {}
    settings_ok = (current is None and not settings.needs_injection) or _settled(
        current, want, prepared.legacy_hash, recorded.get(names.MIGRATED_HASH_ANNOTATION), record,
        names.MIGRATED_HASH_ANNOTATION)
    # A template without a mounted digest is in the upgrade's state, as 0.1's settings hash is ("").
    mounted_ok = not mounted or _settled(template.get(names.MOUNTED_HASH_ANNOTATION) or "", mounted, "",
                                         recorded.get(names.MOUNTED_BASELINE_ANNOTATION), record,
                                         names.MOUNTED_BASELINE_ANNOTATION)
    annotations: dict[str, str] = {}
    if not (settings_ok and mounted_ok):
        annotations[names.SETTINGS_HASH_ANNOTATION] = want
        if mounted:
            annotations[names.MOUNTED_HASH_ANNOTATION] = mounted
        what = "audit settings" if not settings_ok else "the webhook backend's Secret or the audit policy"
        why = f"{what} changed ({want if not settings_ok else mounted})"
        if pods:
            annotations[names.ROLLED_PODS_ANNOTATION] = _newest(pods)
    else:
        stale = stale_pods(pods, prepared)
        replaced_until = str(template.get(names.ROLLED_PODS_ANNOTATION) or "")
        late = [p for p in stale if str(dig(p, "metadata", "creationTimestamp") or "") > replaced_until]
        if late:
            annotations[names.ROLLED_PODS_ANNOTATION] = _newest(stale)
            why = (f"Pod {name_of(late[0])} runs stale audit settings "
                   f"({dig(late[0], 'metadata', 'annotations', names.SETTINGS_HASH_ANNOTATION)}, "
                   f"current {prepared.pod_hash(late[0])})")
    if not annotations and not record:
        return None
    patch: dict[str, Any] = {}
    if record:
        patch["metadata"] = {"annotations": record}
    if not annotations:
        return DeploymentPatch(patch, "recorded the hashes the upgrade found: " + ", ".join(
            f"{k}={v}" for k, v in sorted(record.items())), rolls=False)
    patch["spec"] = {"template": {"metadata": {"annotations": annotations}}}
    return DeploymentPatch(patch, why, rolls=True)
