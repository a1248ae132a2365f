"""The mutating decision: which Pods get what, as a JSON patch. Pure."""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any

from webhook.core import names
from webhook.core.apiserver_flags import unreached
from webhook.core.desired_pod import Injection, inject, injection_for
from webhook.core.objects import dig, name_of
from webhook.core.options import Options
from webhook.core.review import Answer
from webhook.core.settings import EffectiveSettings, effective_settings
from webhook.core.validation.admission import qualified_kind
from webhook.core.validation.cluster import check_cluster
from webhook.core.validation.context import Context
from webhook.core.validation.errors import Findings, Tier, invalid_message
from webhook.core.validation.seed import check_seed

# The `apiserver` container must run this program itself: with anything else in front (`sh -c
# '... "$@" --audit-policy-file=/tmp/none'`, env, tini, ...) that program may add its own flags after ours.
_APISERVER_BINARY = "kube-apiserver"


def _program(container: Any) -> str:
    command = container.get("command") if isinstance(container, dict) else None
    first = command[0] if isinstance(command, list) and command else None
    return posixpath.basename(first) if isinstance(first, str) else ""


def unverifiable(pod: dict[str, Any]) -> str:
    """Why the audit flags could not be shown to reach kube-apiserver in this Pod ("" when they can).

    Only the `apiserver` container's own command line is edited: kube-apiserver elsewhere (a
    renamed container, an initContainer, a native sidecar) or behind a wrapper escapes it.
    """
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    containers = spec.get("containers") if isinstance(spec.get("containers"), list) else []
    inits = spec.get("initContainers") if isinstance(spec.get("initContainers"), list) else []
    names_of = [c.get("name") for c in containers if isinstance(c, dict)]
    if names.APISERVER_CONTAINER not in names_of:
        return f'it has no container named "{names.APISERVER_CONTAINER}" for the audit flags'
    for init in inits:
        if isinstance(init, dict) and (init.get("name") == names.APISERVER_CONTAINER
                                       or _program(init) == _APISERVER_BINARY):
            return f'initContainer "{init.get("name")}" runs kube-apiserver, where the audit flags do not reach'
    for container in containers:
        if isinstance(container, dict) and container.get("name") != names.APISERVER_CONTAINER \
                and _program(container) == _APISERVER_BINARY:
            return f'container "{container.get("name")}" runs kube-apiserver, where the audit flags do not reach'
    apiserver = containers[names_of.index(names.APISERVER_CONTAINER)]
    program = _program(apiserver)
    if program and program != _APISERVER_BINARY:
        return (f'container "{names.APISERVER_CONTAINER}" runs {program!r}, not kube-apiserver: the audit flags '
                "might never reach it")
    return ""


def is_apiserver_pod(pod: Any) -> bool:
    """A Pod labelled `app=apiserver`."""
    key, value = names.APISERVER_LABEL
    return dig(pod, "metadata", "labels", key) == value


def _stored_settings_problems(cluster: dict[str, Any], seed: dict[str, Any] | None) -> tuple[str, Findings]:
    """Why the stored objects cannot be rendered (or ""), with the render-safety errors that say so,
    or the admission-policy rules they break as warnings.

    Secrets are not re-checked here: a missing one is the reconciler's business, and the Pod
    references it by name only. Shapes are re-checked because objects may predate us. Only
    render-safety rules stop injection (see Tier); the others become warnings.
    """
    notes = Findings()
    for obj, errors in ((cluster, check_cluster(cluster, Context(seed=seed)).errors),
                        (seed, check_seed(seed).errors if seed else [])):
        unsafe = [e for e in errors if e.tier is Tier.SAFETY]
        if unsafe:
            return invalid_message(qualified_kind(obj), name_of(obj), unsafe), Findings(unsafe)
        kind = qualified_kind(obj).split(".")[0]
        notes.merge(Findings(errors).excused(
            errors, lambda e, kind=kind: f"breaks a rule the {kind} predates, injected anyway (please fix): {e.body}"))
    return "", notes


@dataclass(frozen=True)
class Prepared:
    """What a Cluster (with its Seed) means for its Pods; depends on those objects only."""

    problem: str
    settings: EffectiveSettings | None
    settings_hash: str
    injection: Injection | None = None
    # Admission-policy rules the stored objects break (injected anyway), as warnings.
    notes: tuple[str, ...] = ()
    # The rule ids: of `notes` (one per note), or of the render-safety errors that are the `problem`.
    rules: tuple[str, ...] = ()
    # The hash 0.1 put on Pods and Deployments for the same settings: one of those is current too,
    # so that the upgrade to the rendered-output hash rolls nothing by itself.
    legacy_hash: str = ""

    def pod_hash(self, pod: Any) -> str:
        """The settings hash of what is rendered for `pod` (or a Deployment's pod template): the
        sidecar image an existing sidecar keeps is part of it."""
        return self.injection.hash_for(pod) if self.injection is not None else self.settings_hash

    def is_current(self, seen: str | None, pod: Any = None) -> bool:
        """Whether a Pod carrying the hash `seen` runs with these settings: today's hash of what is
        rendered for it, or 0.1's hash of the same settings (see reconcile_plan.rollout_patch for
        how a Deployment leaves that one)."""
        want = self.pod_hash(pod) if pod is not None else self.settings_hash
        return seen is not None and seen in (want, self.legacy_hash)


def prepare(cluster: dict[str, Any], seed: dict[str, Any] | None, options: Options) -> Prepared:
    """Validate the stored objects and work out the settings once, for every Pod of the cluster."""
    problem, found = _stored_settings_problems(cluster, seed)
    if problem:
        return Prepared(problem, None, "", rules=tuple(dict.fromkeys(e.rule for e in found.errors)))
    settings = effective_settings(cluster, seed)
    injection = injection_for(settings, options)
    return Prepared("", settings, injection.settings_hash, injection, tuple(found.warnings),
                    tuple(found.warning_rules), legacy_hash=settings.legacy_hash(options))


def decide_mutation(
    operation: str,
    pod: Any,
    cluster: dict[str, Any] | None,
    seed: dict[str, Any] | None,
    options: Options,
    *,
    prepared: Prepared | None = None,
) -> Answer:
    """The answer for a Pod admission, given the Cluster owning its namespace (if any).

    `prepared` is `prepare(cluster, seed, options)` when the caller keeps it between requests.
    """
    if operation != "CREATE":
        return Answer(True, reason="not-create")
    if not isinstance(pod, dict) or not is_apiserver_pod(pod):
        return Answer(True, reason="not-apiserver")
    if cluster is None:
        return Answer(True, reason="no-cluster")
    prepared = prepared or prepare(cluster, seed, options)
    if prepared.settings is None or prepared.injection is None:
        return Answer(False, f"cannot inject audit logging: {prepared.problem}", code=422, reason="invalid-settings",
                      rules=list(prepared.rules))
    if not prepared.settings.needs_injection:
        return Answer(True, reason="audit-off")
    why = unverifiable(pod)
    if why:
        return Answer(False, f'audit-webhook: cluster "{prepared.settings.cluster_id}" needs audit logging, but this '
                             f"Pod cannot be shown to run with it: {why}", code=403, reason="unverifiable")
    desired, patch = inject(pod, prepared.injection)
    apiserver = next(c for c in desired["spec"]["containers"]
                     if isinstance(c, dict) and c.get("name") == names.APISERVER_CONTAINER)
    why = unreached(apiserver, prepared.injection.flags)
    if why:
        return Answer(False, f'audit-webhook: cluster "{prepared.settings.cluster_id}" needs audit logging, but in '
                             f"this Pod kube-apiserver would not get it: {why}", code=403, reason="unverifiable")
    return Answer(True, patch=patch, warnings=list(prepared.notes), warning_rules=list(prepared.rules),
                  reason="injected")
