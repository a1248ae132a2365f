"""The admission decisions, over a lookup interface: what /mutate and /validate answer, and what
`audit-webhook check` and `render` answer from files. The shell (webhook/adapters/handlers.py for HTTP,
webhook/adapters/cli.py offline) reads the Secrets a decision names beforehand; everything here is
synchronous and looks only at what it is given."""

from __future__ import annotations

import operator
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydantic_core import to_json

from webhook.core import names
from webhook.core.lookup import Lookup
from webhook.core.mutation import Prepared, decide_mutation, is_apiserver_pod, prepare
from webhook.core.objects import (
    cluster_namespace,
    datacenter_of,
    datacenters_of,
    dig,
    kind_of,
    name_of,
    namespace_of,
)
from webhook.core.operator_config import DEFAULT, OperatorConfig
from webhook.core.options import Options
from webhook.core.pod_updates import pod_update_problems
from webhook.core.review import AdmissionRequest, Answer
from webhook.core.validation.admission import (
    CLEANUP_USERS,
    CLUSTER,
    CONFIGMAP,
    SEED,
    check_admission,
    crd_deletion_message,
    deletion_blockers,
    deletion_message,
    kind_key,
    object_label,
    qualified_kind,
    secret_refs,
)
from webhook.core.validation.cluster import check_cluster
from webhook.core.validation.context import Context
from webhook.core.validation.errors import Findings, Path, Tier, invalid_message, rule_suffix
from webhook.core.validation.webhook_backend import SecretRef, Secrets

# The rule a contested namespace breaks: two Clusters claim it (one status written past /validate).
_NAMESPACE_HOLDER = "cluster.namespace-holder"


class _IdentityLru:
    """A bounded map, least recently used out first, whose keys name objects by `id()`: each entry
    holds those objects (so no other object can take their ids while it lives), and is a hit only
    for the very same ones."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[Any, tuple[tuple[Any, ...], Any]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Any, objects: tuple[Any, ...], make: Callable[[], Any]) -> Any:
        """The value for `key` made with `objects`: kept, or `make()` (then kept)."""
        hit = self._entries.get(key)
        if hit is not None and all(map(operator.is_, hit[0], objects)):  # same length: one key, one shape
            self._entries.move_to_end(key)
            return hit[1]
        value = make()
        self._entries[key] = (objects, value)
        if len(self._entries) > self.size:
            self._entries.popitem(last=False)
        return value


class PreparedCache:
    """`prepare()` results by the identity of the stored Cluster and Seed objects.

    A store replaces an object when it changes, so identity is a version: a changed Cluster
    misses the cache and is prepared again. Bounded, least recently used out first.
    """

    def __init__(self, size: int = 50_000) -> None:
        self._entries = _IdentityLru(size)

    def get(self, cluster: dict[str, Any], seed: dict[str, Any] | None, options: Options) -> Prepared:
        """The prepared decision inputs for this version of the cluster and seed."""
        prepared: Prepared = self._entries.get((id(cluster), id(seed)), (cluster, seed),
                                               lambda: prepare(cluster, seed, options))
        return prepared

    def of_cluster(self, cluster: dict[str, Any], store: Lookup, options: Options) -> Prepared:
        """`get` with the Seed of the cluster's datacenter looked up in `store`."""
        return self.get(cluster, store.seed_for_datacenter(datacenter_of(cluster)), options)


class InjectionMemo:
    """The answers to apiserver Pod CREATEs, by the Pod's exact content and the `Prepared` they were
    decided with.

    kube-apiserver runs mutating admission before it names a Pod made from `generateName` and
    before it gives it a uid and a creation time, so every Pod a ReplicaSet creates reaches us as
    the same object: the second and third replica of a rollout, and each Pod recreated after an
    eviction or a node drain, get the first one's answer without it being worked out again. A
    changed Cluster or Seed is a new `Prepared` (PreparedCache), which no entry matches. Bounded,
    least recently used out first. Answers are shared between requests: nothing may modify one.

    An answer can quote its Pod (a patch carries the container's args, a refusal its container
    names), so only Pods of at most `max_pod_bytes` are remembered: a full-size KKP apiserver Pod
    is about 12 KB, and the memo then holds at most `size` times that, whatever is sent.
    """

    def __init__(self, size: int = 512, max_pod_bytes: int = 32 * 1024) -> None:
        self.max_pod_bytes = max_pod_bytes
        # Keyed by the Pod's JSON itself: a dict hashes it once, and a hit compares it whole.
        self._entries = _IdentityLru(size)

    def answer(self, pod: Any, prepared: Prepared, decide: Callable[[], Answer]) -> Answer:
        """The answer for `pod` with `prepared`: remembered, or `decide()`."""
        try:
            # NaN and Infinity (json's fallback parser reads them) stay apart from null in the key.
            content = to_json(pod, inf_nan_mode="constants")
        except ValueError:  # a lone surrogate: kube-apiserver never sends one; decided, not remembered
            return decide()
        if len(content) > self.max_pod_bytes:
            return decide()
        answer: Answer = self._entries.get((content, id(prepared)), (prepared,), decide)
        return answer


def mutate_pod(req: AdmissionRequest, store: Lookup, options: Options, cache: PreparedCache,
               memo: InjectionMemo | None = None) -> Answer:
    """Inject audit logging into an apiserver Pod; with `memo`, a Pod seen before gets its answer again."""
    if req.kind.kind != "Pod" or req.kind.group != "":
        return Answer(True, reason="not-pod")
    namespace = req.namespace or namespace_of(req.object)
    claimants = store.clusters_in(namespace)
    if len(claimants) > 1 and req.operation == "CREATE" and is_apiserver_pod(req.object):
        # Whose settings would this Pod run with? Neither may decide for the other.
        listed = ", ".join(f'"{name_of(c)}"' for c in claimants)
        return Answer(False, f'audit-webhook: namespace "{namespace}" is claimed by Clusters {listed}; an apiserver '
                             f"Pod there is refused until one Cluster holds it{rule_suffix(_NAMESPACE_HOLDER)}",
                      code=403, reason="contested-namespace", rules=[_NAMESPACE_HOLDER])
    cluster = store.cluster_for_namespace(namespace)
    if cluster is None:
        return decide_mutation(req.operation, req.object, None, None, options)
    seed = store.seed_for_datacenter(datacenter_of(cluster))
    prepared = cache.get(cluster, seed, options)

    def decide() -> Answer:
        return decide_mutation(req.operation, req.object, cluster, seed, options, prepared=prepared)
    if memo is None or req.operation != "CREATE" or not is_apiserver_pod(req.object):
        return decide()
    return memo.answer(req.object, prepared, decide)


def secrets_needed(req: AdmissionRequest) -> list[SecretRef]:
    """The Secrets `validate_request` reads for this request, for the shell to fetch first."""
    if req.subResource or req.operation not in ("CREATE", "UPDATE") or not kind_key(req.object):
        return []
    old = req.oldObject if req.operation == "UPDATE" else None
    return sorted({*secret_refs(req.object), *secret_refs(old)})


def validate_request(req: AdmissionRequest, store: Lookup, secrets: Secrets, options: Options,
                     cache: PreparedCache, config: OperatorConfig = DEFAULT) -> Answer:
    """Refuse Clusters, Seeds and ConfigMaps that would break or leak audit logging, and the
    deletion of Secrets and ConfigMaps that running apiservers need. `secrets` holds those
    `secrets_needed` names."""
    if kind_of(req.object) == ("v1", "Pod") and req.operation == "UPDATE":
        return _validate_pod_update(req)
    if req.subResource == "status" and req.operation == "UPDATE" and kind_key(req.object) == CLUSTER:
        # status.namespaceName says where the control plane runs: it may not point into another's.
        found = check_admission(req.object, None, Context(namespace_holders=_namespace_holders(req.object, store)),
                                only_identity=True)
        if found.errors:
            return Answer(False, invalid_message(qualified_kind(req.object), object_label(req.object), found.errors),
                          code=422, reason="invalid", rules=list(dict.fromkeys(e.rule for e in found.errors)))
        return Answer(True, reason="valid")
    if req.subResource:
        return Answer(True, reason="not-checked")
    if req.operation == "DELETE":
        return _validate_delete(req, store, options, cache)
    if req.operation not in ("CREATE", "UPDATE"):
        return Answer(True, reason="not-checked")
    obj, old = req.object, req.oldObject if req.operation == "UPDATE" else None
    if not kind_key(obj):
        return Answer(True, reason="not-checked")
    return validate_object(obj, old, store, secrets, options, cache, config, namespace=req.namespace)


def validate_object(obj: Any, old: Any, store: Lookup, secrets: Secrets, options: Options, cache: PreparedCache,
                    config: OperatorConfig = DEFAULT, *, namespace: str = "") -> Answer:
    """The answer to a Cluster, Seed or ConfigMap create (`old` None) or update, given the Secrets it
    names: what /validate and `audit-webhook check` both say, from the same lookups."""
    seed = store.seed_for_datacenter(datacenter_of(obj)) if kind_key(obj) == CLUSTER else None
    owner = None
    if kind_key(obj) == CONFIGMAP:
        cluster = store.cluster_for_namespace(namespace or namespace_of(obj))
        if cluster is not None:
            owner = cache.of_cluster(cluster, store, options).settings
    holders = _namespace_holders(obj, store) if kind_key(obj) == CLUSTER else ()
    dc_holders = _datacenter_holders(obj, store) if kind_key(obj) == SEED else ()
    found = check_admission(obj, old, Context(seed=seed, secrets=secrets, owner=owner, config=config,
                                              namespace_holders=holders, datacenter_holders=dc_holders))
    if kind_key(obj) == SEED and old is not None:
        found.merge(_clusters_no_longer_injected(obj, old, store))
    if found.errors:
        message = invalid_message(qualified_kind(obj), object_label(obj), found.errors)
        rules = list(dict.fromkeys(e.rule for e in found.errors))
        return Answer(False, message, code=422, warnings=found.warnings, warning_rules=found.warning_rules,
                      reason="invalid", rules=rules)
    return Answer(True, warnings=found.warnings, warning_rules=found.warning_rules, reason="valid")


def _validate_delete(req: AdmissionRequest, store: Lookup, options: Options, cache: PreparedCache) -> Answer:
    obj = req.oldObject
    refused = crd_deletion_message(obj)
    if refused:
        return Answer(False, refused, code=403, reason="protected-crd")
    if kind_of(obj)[1] not in ("Secret", "ConfigMap") or req.userInfo.username in CLEANUP_USERS:
        return Answer(True, reason="not-checked")
    users = []
    for cluster in store.all_clusters():
        settings = cache.of_cluster(cluster, store, options).settings
        if settings is not None:
            users.append((cluster, settings))
    namespace = req.namespace or namespace_of(obj)
    blockers = deletion_blockers(obj, namespace, users)
    if blockers:
        return Answer(False, deletion_message(obj, namespace, blockers), code=403, reason="in-use")
    return Answer(True, reason="not-in-use")


def _namespace_holders(cluster: Any, store: Lookup) -> tuple[str, ...]:
    """The Clusters that held `cluster`'s control-plane namespace before it (older, or first by name)."""
    def age(obj: Any) -> tuple[str, str]:
        # RFC 3339 timestamps sort as text; a Cluster being created has none yet and comes last.
        created = obj.get("metadata", {}).get("creationTimestamp") if isinstance(obj, dict) else None
        return (created or "~", name_of(obj))

    mine = age(cluster)
    return tuple(name_of(c) for c in store.clusters_in(cluster_namespace(cluster))
                 if name_of(c) != name_of(cluster) and age(c) < mine)


# How many Clusters a warning names; it counts the rest.
_LISTED = 10


def _clusters_no_longer_injected(seed: Any, old: Any, store: Lookup) -> Findings:
    """Warnings naming the stored Clusters that this Seed update leaves breaking a render-safety rule,
    one warning per rule: from now on their apiserver Pods are refused, not injected, until the
    Clusters drop what the Seed no longer allows (a plugin that runs code, say: a tenant never gets
    to run code in the seed, not even an existing cluster). The update itself is the operator's."""
    newly: dict[str, list[str]] = {}
    for dc in dict.fromkeys([*datacenters_of(old), *datacenters_of(seed)]):
        for cluster in store.clusters_in_datacenter(dc):
            if _unsafe_rules(cluster, old):
                continue  # refused already
            for rule in _unsafe_rules(cluster, seed if dc in datacenters_of(seed) else None):
                newly.setdefault(rule, []).append(name_of(cluster))
    found = Findings()
    for rule, clusters in sorted(newly.items()):
        listed = ", ".join(f'"{c}"' for c in clusters[:_LISTED])
        more = f" and {len(clusters) - _LISTED} more" if len(clusters) > _LISTED else ""
        found.warn(Path("metadata").child("annotations"),
                   f"{len(clusters)} Cluster(s) will have their apiserver Pods refused until they drop what this Seed "
                   f"no longer allows: {listed}{more}", rule)
    return found


def _unsafe_rules(cluster: dict[str, Any], seed: Any) -> list[str]:
    """The render-safety rules a stored Cluster breaks with this Seed: any one stops injection."""
    errors = check_cluster(cluster, Context(seed=seed if isinstance(seed, dict) else None)).errors
    return list(dict.fromkeys(e.rule for e in errors if e.tier is Tier.SAFETY))


def _datacenter_holders(seed: Any, store: Lookup) -> tuple[tuple[str, str], ...]:
    """(datacenter, other Seed) for each datacenter of `seed` that another Seed defines."""
    me = (namespace_of(seed), name_of(seed))
    return tuple((dc, name_of(other)) for dc in datacenters_of(seed) for other in store.seeds_for_datacenter(dc)
                 if (namespace_of(other), name_of(other)) != me)


def _validate_pod_update(req: AdmissionRequest) -> Answer:
    """An injected apiserver Pod keeps its sidecar and audit flags, and lends no one its audit volumes."""
    injected = dig(req.oldObject, "metadata", "annotations", names.SETTINGS_HASH_ANNOTATION) is not None
    if not injected or not is_apiserver_pod(req.oldObject):
        return Answer(True, reason="not-checked")
    problems = pod_update_problems(req.oldObject, req.object)
    if problems:
        return Answer(False, f'Pod "{name_of(req.object)}": ' + "; ".join(problems), code=403, reason="audited-pod")
    return Answer(True, reason="valid")
