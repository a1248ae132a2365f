"""The desired apiserver Pod: the current Pod plus what the settings turn on. Pure.

Everything is upserted by the names in webhook/core/names.py: a second pass over our own output
finds its work and changes nothing, and whatever we do not own keeps its value and position.
The result shares every part it does not change with the input (copy on write), so the input
is never modified, and the JSON patch is recorded from exactly the parts that were replaced.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from functools import cache, lru_cache
from typing import Any

from webhook.core import names, settings_hash
from webhook.core.apiserver_flags import bool_flags, normalized, parse, starting_with, tokens_of
from webhook.core.defaults import defaults
from webhook.core.fluentbit import config_key
from webhook.core.images import same_repository
from webhook.core.objects import clone, find_named
from webhook.core.options import Options
from webhook.core.patch import Op, record_change
from webhook.core.quantity import same_quantity
from webhook.core.settings import EffectiveSettings

Obj = dict[str, Any]


class NoApiserverContainer(Exception):
    """The Pod has no container named `apiserver`, so there is nothing to configure."""


def _names(items: list[Any]) -> list[Any]:
    """The `name` of each item (None for an item that is not a map), position by position."""
    return [item.get("name") if type(item) is dict else None for item in items]


def _index(items: list[Any], name: str) -> int | None:
    try:
        return _names(items).index(name)
    except ValueError:
        return None


def _upserted_volumes(volumes: list[Any], wanted: list[Obj]) -> list[Any]:
    """`volumes` with each wanted one in place by name, or appended; a volume with the right source
    is kept as it is. A new list when anything changes, else `volumes` itself."""
    original, volumes = volumes, list(volumes)
    changed = False
    present = _names(volumes)
    for volume in wanted:
        i = present.index(volume["name"]) if volume["name"] in present else None
        if i is None:
            volumes.append(volume)
            changed = True
            continue
        if _same_volume(volumes[i], volume):
            continue
        volumes[i] = volume
        changed = True
    return volumes if changed else original


def _same_volume(current: Any, wanted: Obj) -> bool:
    """Whether a volume of our name is ours: our source and nothing else. Only `defaultMode`, which
    kube-apiserver adds, may differ; `items` (remapping our keys), `sizeLimit` (a 1Ki audit log),
    `optional` or a second source would each let the Pod run with less than we set."""
    if not isinstance(current, dict) or current.keys() != wanted.keys():
        return False
    (kind, source), = ((k, v) for k, v in wanted.items() if k != "name")
    have = current.get(kind)
    return isinstance(have, dict) and {k: v for k, v in have.items() if k != "defaultMode"} == source


def _path_key(path: Any) -> str | None:
    """What makes two mount paths the same directory: `/a/b`, `/a/b/` and `/a//./b` are one."""
    if not isinstance(path, str):
        return None
    if "//" in path or "/." in path:
        return posixpath.normpath(path)
    return path.rstrip("/")


def _taken_over(mount: Obj, volume: str, read_only: bool) -> Obj:
    out = {k: v for k, v in mount.items() if k not in ("subPath", "subPathExpr")}
    out["name"] = volume
    if read_only and out.get("readOnly") is not True:
        out["readOnly"] = True
    elif not read_only and out.get("readOnly"):
        out["readOnly"] = False
    return out


Mount = tuple[str, str, bool]  # volume, mountPath, readOnly

SIDECAR_MOUNTS: list[Mount] = [(names.VOLUME_AUDIT_LOG, names.AUDIT_LOG_DIR, False),
                               (names.VOLUME_FLUENTBIT, names.FLUENTBIT_DIR, True)]


def _mount(volume: str, path: str, read_only: bool) -> Obj:
    return {"name": volume, "mountPath": path, **({"readOnly": True} if read_only else {})}


def _ensure_mounts(container: Obj, wanted: list[Mount]) -> None:
    """One mount of each wanted volume at its path; existing mounts at those paths are taken over.

    The container must be the caller's own; its `volumeMounts` list is replaced, never edited,
    and only when something changes, since it may be shared with the input Pod.
    """
    current = container.get("volumeMounts")
    by_path, inside, keyed = _mount_plan(tuple(wanted))
    found: set[str | None] = set()
    mounts: list[Any] = []
    for mount in current if isinstance(current, list) else []:
        if type(mount) is not dict:
            mounts.append(mount)
            continue
        key = _path_key(mount.get("mountPath"))
        if key in by_path:
            found.add(key)
            volume, read_only = by_path[key]
            replacement = _taken_over(mount, volume, read_only)
            mounts.append(mount if replacement == mount else replacement)
        elif not (isinstance(key, str) and key.startswith(inside)):  # else it would shadow ours: it goes
            mounts.append(mount)
    mounts.extend(_mount(*m) for key, m in keyed if key not in found)
    if mounts != current:
        container["volumeMounts"] = mounts


@lru_cache(maxsize=16)
def _mount_plan(wanted: tuple[Mount, ...]) -> tuple[dict[str | None, tuple[str, bool]], tuple[str, ...],
                                                    tuple[tuple[str | None, Mount], ...]]:
    """For `_ensure_mounts`, worked out once per set of wanted mounts (shared: never modify it): the
    volume and readOnly for each path key; the folders inside which a mount would shadow ours (a
    subPath over policy.yaml, another volume over the audit log), which therefore goes; and each
    wanted mount with its path key."""
    by_path = {_path_key(path): (volume, read_only) for volume, path, read_only in wanted}
    return by_path, tuple(p + "/" for p in by_path if p), tuple((_path_key(m[1]), m) for m in wanted)


_AUDIT = "--audit"  # every flag of ours, in `-` and `_` spelling, starts with this


def _flag_name(token: Any) -> str:
    """A token's flag as kube-apiserver reads it (see webhook/core/apiserver_flags.py)."""
    return normalized(token.partition("=")[0]) if isinstance(token, str) else ""


def set_flags(container: Obj, flags: dict[str, str]) -> None:
    """Give each flag its value, and make it the only occurrence: kube-apiserver takes the last.

    The first occurrence, in any spelling (`--f=v`, `--f v`, `_` for `-`, in `command` or `args`),
    is rewritten in place; later ones are dropped; missing flags are appended to `args`. Lists are
    replaced, not edited, and only when something changes, so a container that shares them with
    another object can be passed in.
    """
    missing = dict(flags)
    for field in ("command", "args"):
        tokens = container.get(field)
        if not isinstance(tokens, list):
            continue
        # Only the tokens that may be our flags are looked at; the runs between them are copied whole.
        out: list[Any] = []
        copied = 0  # tokens[:copied] are dealt with
        for i in starting_with(tokens, _AUDIT):
            if i < copied:  # the value of the flag before it
                continue
            token = tokens[i]
            name = _flag_name(token)
            if name not in flags:
                continue
            out += tokens[copied:i]
            two_tokens = "=" not in token and name not in bool_flags() and i + 1 < len(tokens)
            if name in missing:  # the first occurrence: ours, where it stands
                del missing[name]
                out += [name, flags[name]] if two_tokens else [f"{name}={flags[name]}"]
            copied = i + 2 if two_tokens else i + 1  # a later one is dropped, with its value
        if copied:
            out += tokens[copied:]
            if out != tokens:
                container[field] = out
    if missing:
        args = container.get("args")
        args = container["args"] = list(args) if isinstance(args, list) else []
        args.extend(f"{flag}={value}" for flag, value in missing.items())


def read_flags(container: Obj, flags: list[str]) -> dict[str, str | None]:
    """The value each flag has in the container as kube-apiserver reads it (None: not set)."""
    values = parse(tokens_of(container)).values
    return {flag: values.get(flag) for flag in flags}


def _upsert_env(container: Obj, env: list[Obj]) -> None:
    current = container.get("env")
    if not isinstance(current, list):  # `null` or worse: ours replaces it
        current = container["env"] = []
    for wanted in env:
        existing = find_named(current, wanted["name"])
        if existing is None:
            current.append(wanted)
        else:
            existing.pop("valueFrom", None)
            existing["value"] = wanted["value"]


def _set_resources(container: Obj, wanted: Obj) -> None:
    """`wanted`'s quantities in the container's own copy of `resources` (a `null` or other non-map
    there, or under `requests`/`limits`, is replaced)."""
    resources = container.get("resources")
    resources = container["resources"] = dict(resources) if isinstance(resources, dict) else {}
    for kind, quantities in wanted.items():
        current = resources.get(kind)
        current = resources[kind] = dict(current) if isinstance(current, dict) else {}
        for resource, quantity in quantities.items():
            # kube-apiserver rewrites "1000m" as "1": equal quantities are left as they are.
            if not same_quantity(current.get(resource), quantity):
                current[resource] = quantity


def sidecar_resources(settings: EffectiveSettings) -> Obj:
    """The sidecar's resources: the defaults, with what `sidecar.resources` sets in their place.

    Merged, so the sidecar always has limits (the defaults are shared: never modify them).
    """
    given = settings.sidecar.resources
    default = _default_sidecar_resources()
    if given is None:
        return default
    return {"requests": {**default["requests"], **given.requests}, "limits": {**default["limits"], **given.limits}}


# Injections are kept per cluster (10,000 clusters, 10,000 injections): the parts that do not
# depend on the cluster are built once and shared, never modified.
@lru_cache(maxsize=64)
def _sidecar_common(image: str, fluentbit_format: str) -> Obj:
    return {
        "name": names.SIDECAR_CONTAINER,
        "image": image,
        "command": ["/fluent-bit/bin/fluent-bit"],
        "args": ["-c", names.FLUENTBIT_DIR + config_key(fluentbit_format)],
        "volumeMounts": [_mount(*m) for m in SIDECAR_MOUNTS],
    }


@cache
def _default_sidecar_resources() -> Obj:
    return clone(defaults()["sidecar"]["resources"])


def _sidecar_env(settings: EffectiveSettings) -> list[Obj]:
    return [
        {"name": names.CLUSTER_ID_ENV, "value": settings.cluster_id},
        *({"name": e.name, "value": e.value} for e in settings.sidecar.extraEnvs),
    ]


def sidecar_container(settings: EffectiveSettings, options: Options) -> Obj:
    """The `audit-logs` container as a new Pod gets it; it shares its fixed parts with other clusters'."""
    common = _sidecar_common(options.sidecar_image, options.fluentbit_format)
    return {
        "name": common["name"],
        "image": common["image"],
        "command": common["command"],
        "args": common["args"],
        "env": _sidecar_env(settings),
        "resources": sidecar_resources(settings),
        "volumeMounts": common["volumeMounts"],
    }


def _upsert_sidecar(containers: list[Any], wanted: Obj) -> None:
    at = _index(containers, names.SIDECAR_CONTAINER)
    if at is None:
        containers.append(wanted)
        return
    # A sidecar already there (a re-invocation, or a stale copy): bring what we own to the wanted
    # state and keep everything else kube-apiserver or others added (defaults, LimitRange values).
    sidecar = containers[at] = clone(containers[at])
    # An image of the same repository keeps its registry and pinned tag or digest: KKP rewrites it
    # for air-gapped seeds (overwriteRegistry), and a mirror we do not know of is still the image.
    if not same_repository(sidecar.get("image"), wanted["image"]):
        sidecar["image"] = wanted["image"]
    for key in ("command", "args"):
        sidecar[key] = wanted[key]
    _upsert_env(sidecar, wanted["env"])
    _set_resources(sidecar, wanted["resources"])
    _ensure_mounts(sidecar, SIDECAR_MOUNTS)


def audit_flags(settings: EffectiveSettings) -> dict[str, str]:
    """The kube-apiserver flags the settings call for, in the order they are appended."""
    return dict(_flags(settings.enabled, settings.webhook.initial_backoff if settings.webhook else None))


@lru_cache(maxsize=256)
def _flags(enabled: bool, webhook_backoff: str | None) -> dict[str, str]:
    flags: dict[str, str] = {}
    if enabled:
        flags["--audit-log-path"] = names.AUDIT_LOG_PATH
        flags.update(defaults()["auditLogRotation"])
        flags.update(defaults()["auditLogTruncation"])
        flags["--audit-policy-file"] = names.POLICY_PATH
    if webhook_backoff is not None:
        flags["--audit-policy-file"] = names.POLICY_PATH
        flags["--audit-webhook-config-file"] = names.WEBHOOK_CONFIG_PATH
        flags["--audit-webhook-initial-backoff"] = webhook_backoff
    return flags


@lru_cache(maxsize=256)
def _pod_volumes(enabled: bool, webhook_secret: str | None) -> list[Obj]:
    """The volumes the settings call for, each once, in the order they are appended."""
    config = {"name": names.VOLUME_AUDIT_CONFIG, "configMap": {"name": names.CONFIGMAP_AUDIT_CONFIG}}
    wanted = []
    if enabled:
        wanted += [{"name": names.VOLUME_AUDIT_LOG, "emptyDir": {}}, config,
                   {"name": names.VOLUME_FLUENTBIT, "secret": {"secretName": names.SECRET_FLUENTBIT}}]
    if webhook_secret is not None:
        wanted += [config, {"name": names.VOLUME_WEBHOOK_BACKEND, "secret": {"secretName": webhook_secret}}]
    return list({v["name"]: v for v in wanted}.values())


@lru_cache(maxsize=4)
def _apiserver_mounts(enabled: bool, webhook: bool) -> list[Mount]:
    """The apiserver container's mounts the settings call for, each once."""
    wanted: list[Mount] = []
    if enabled:
        wanted += [(names.VOLUME_AUDIT_CONFIG, names.AUDIT_CONFIG_DIR, True),
                   (names.VOLUME_AUDIT_LOG, names.AUDIT_LOG_DIR, False)]
    if webhook:
        wanted += [(names.VOLUME_AUDIT_CONFIG, names.AUDIT_CONFIG_DIR, True),
                   (names.VOLUME_WEBHOOK_BACKEND, names.WEBHOOK_CONFIG_DIR, True)]
    return list(dict.fromkeys(wanted))


@dataclass(frozen=True)
class Injection:
    """What the settings put into every apiserver Pod of a cluster, worked out once per settings.

    Desired Pods share these parts (as they share their input's): nothing may modify them.
    """

    volumes: list[Obj]
    apiserver_mounts: list[Mount]
    flags: dict[str, str]
    sidecar: Obj | None  # None when the settings want no sidecar
    settings_hash: str
    # What settings_hash is the digest of: hashed again with the image a Pod's own sidecar keeps.
    rendered: Obj = dataclass_field(default_factory=dict, compare=False, repr=False)

    def kept_image(self, pod: Any) -> str | None:
        """The sidecar image `inject` leaves in `pod`: an existing sidecar's image of the same
        repository (an air-gapped seed's registry and tag), else ours; None without a sidecar."""
        if self.sidecar is None:
            return None
        spec = pod.get("spec") if isinstance(pod, dict) else None
        containers = spec.get("containers") if isinstance(spec, dict) else None
        at = _index(containers, names.SIDECAR_CONTAINER) if isinstance(containers, list) else None
        have = containers[at].get("image") if at is not None and isinstance(containers, list) else None
        return have if isinstance(have, str) and same_repository(have, self.sidecar["image"]) else self.sidecar["image"]

    def hash_for(self, pod: Any) -> str:
        """The settings hash of exactly what `inject` renders for `pod`."""
        image = self.kept_image(pod)
        if self.sidecar is None or image == self.sidecar["image"] or not self.rendered:
            return self.settings_hash
        return settings_hash.digest({**self.rendered, "sidecar": {**self.rendered["sidecar"], "image": image}})


def injection_for(settings: EffectiveSettings, options: Options) -> Injection:
    """The injection for these settings, with the hash of everything it renders (webhook/core/settings_hash.py)."""
    hook = settings.webhook
    volumes = _pod_volumes(settings.enabled, hook.secret_name if hook else None)
    mounts = _apiserver_mounts(settings.enabled, hook is not None)
    flags = _flags(settings.enabled, hook.initial_backoff if hook else None)
    sidecar = sidecar_container(settings, options) if settings.enabled else None
    output = settings_hash.rendered(settings, options, volumes, mounts, flags, sidecar)
    return Injection(volumes=volumes, apiserver_mounts=mounts, flags=flags, sidecar=sidecar,
                     settings_hash=settings_hash.digest(output), rendered=output)


def desired_pod(pod: Obj, injection: Injection) -> Obj:
    """`pod` with the sidecar, volumes, mounts, flags and settings hash in place; `pod` is not modified."""
    return inject(pod, injection)[0]


def inject(pod: Obj, injection: Injection) -> tuple[Obj, list[Op]]:
    """The desired Pod (see `desired_pod`) and the JSON patch that turns `pod` into it."""
    old_spec = pod.get("spec")
    old_containers = old_spec.get("containers") if isinstance(old_spec, dict) else None
    at = _index(old_containers, names.APISERVER_CONTAINER) if isinstance(old_containers, list) else None
    if at is None or not isinstance(old_spec, dict) or not isinstance(old_containers, list):
        raise NoApiserverContainer
    pod = dict(pod)
    spec = pod["spec"] = dict(old_spec)
    containers = spec["containers"] = list(old_containers)
    old_apiserver = old_containers[at]
    # The container, not its lists: _ensure_mounts and set_flags replace the lists they change.
    apiserver = containers[at] = dict(old_apiserver)
    volumes = spec.get("volumes")
    spec["volumes"] = _upserted_volumes(volumes if isinstance(volumes, list) else [], injection.volumes)
    _ensure_mounts(apiserver, injection.apiserver_mounts)
    if injection.sidecar is not None:
        _upsert_sidecar(containers, injection.sidecar)
    set_flags(apiserver, injection.flags)

    ops: list[Op] = []
    # The hash of what this Pod gets: the sidecar image it keeps is part of it.
    pod_hash = injection.hash_for(pod)
    container_path = f"/spec/containers/{at}"
    for field in ("volumeMounts", "command", "args"):
        if field in apiserver:
            record_change(ops, container_path, old_apiserver, field, apiserver[field])
    record_change(ops, "/spec", old_spec, "containers", containers, keep=at)
    record_change(ops, "/spec", old_spec, "volumes", spec["volumes"])
    _set_settings_hash(pod, pod_hash, ops)
    return pod, ops


def _set_settings_hash(pod: Obj, value: str, ops: list[Op]) -> None:
    """Set the settings-hash annotation on the caller's copy of the Pod, recording the change."""
    before = {"metadata": pod["metadata"]} if "metadata" in pod else {}
    old_metadata = pod.get("metadata")
    metadata = pod["metadata"] = dict(old_metadata) if isinstance(old_metadata, dict) else {}
    old_annotations = metadata.get("annotations")
    annotations = metadata["annotations"] = dict(old_annotations) if isinstance(old_annotations, dict) else {}
    annotations[names.SETTINGS_HASH_ANNOTATION] = value
    if not isinstance(old_metadata, dict):
        record_change(ops, "", before, "metadata", metadata)
    elif not isinstance(old_annotations, dict):
        record_change(ops, "/metadata", old_metadata, "annotations", annotations)
    else:
        record_change(ops, "/metadata/annotations", old_annotations, names.SETTINGS_HASH_ANNOTATION, value)
