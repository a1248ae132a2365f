"""The desired apiserver Pod: the current Pod plus what the settings turn on (SPEC §2). Pure.

Everything is upserted by the names in webhook/names.py: a second pass over our own output
finds its work and changes nothing, and whatever we do not own keeps its value and position.
The result shares every part it does not change with the input (copy on write), so the input
is never modified and the patch diff can skip shared parts by identity.
"""

from __future__ import annotations

import posixpath
from typing import Any

from webhook import names
from webhook.defaults import defaults
from webhook.fluentbit import config_key
from webhook.objects import clone, find_named
from webhook.options import Options
from webhook.quantity import same_quantity
from webhook.settings import EffectiveSettings

Obj = dict[str, Any]


class NoApiserverContainer(Exception):
    """The Pod has no container named `apiserver`, so there is nothing to configure."""


def _index(items: list[Any], name: str) -> int | None:
    return next((i for i, item in enumerate(items) if isinstance(item, dict) and item.get("name") == name), None)


def _upsert_volume(volumes: list[Any], wanted: Obj) -> None:
    at = _index(volumes, wanted["name"])
    if at is None:
        volumes.append(wanted)
        return
    (source_kind, source), = ((k, v) for k, v in wanted.items() if k != "name")
    current = volumes[at].get(source_kind)
    ref_key = {"configMap": "name", "secret": "secretName"}.get(source_kind)
    if isinstance(current, dict) and (ref_key is None or current.get(ref_key) == source[ref_key]):
        return  # the right source already; keep its extras (defaultMode, sizeLimit, ...)
    volumes[at] = wanted


def _same_path(a: Any, b: str) -> bool:
    if not isinstance(a, str):
        return False
    if a == b:
        return True
    if "//" in a or "/." in a:
        return posixpath.normpath(a) == posixpath.normpath(b)
    return a.rstrip("/") == b.rstrip("/")


def _taken_over(mount: Obj, volume: str, read_only: bool) -> Obj:
    out = {k: v for k, v in mount.items() if k not in ("subPath", "subPathExpr")}
    out["name"] = volume
    if read_only and out.get("readOnly") is not True:
        out["readOnly"] = True
    elif not read_only and out.get("readOnly"):
        out["readOnly"] = False
    return out


def _ensure_mount(container: Obj, volume: str, path: str, read_only: bool) -> None:
    """One mount of `volume` at `path`; an existing mount at that path is taken over.

    The container's `volumeMounts` list must be the caller's own; mounts that change are
    replaced, not edited, since they may be shared with the input Pod.
    """
    mounts = container.setdefault("volumeMounts", [])
    found = False
    for i, mount in enumerate(mounts):
        if isinstance(mount, dict) and _same_path(mount.get("mountPath"), path):
            found = True
            wanted = _taken_over(mount, volume, read_only)
            if wanted != mount:
                mounts[i] = wanted
    if not found:
        mounts.append({"name": volume, "mountPath": path, **({"readOnly": True} if read_only else {})})


def set_flags(container: Obj, flags: dict[str, str]) -> None:
    """Give each flag its value: in place where it already is (`--f=v` or `--f v`), else appended."""
    missing = dict(flags)
    for field in ("command", "args"):
        tokens = container.get(field)
        if not isinstance(tokens, list):
            continue
        i = 0
        while i < len(tokens):
            token = tokens[i]
            if isinstance(token, str):
                flag, sep, _ = token.partition("=")
                if flag in flags:
                    missing.pop(flag, None)
                    if sep or i + 1 == len(tokens):
                        tokens[i] = f"{flag}={flags[flag]}"
                    else:
                        tokens[i + 1] = flags[flag]
                        i += 1
            i += 1
    if missing:
        args = container.get("args")
        if not isinstance(args, list):
            args = container["args"] = []
        args.extend(f"{flag}={value}" for flag, value in missing.items())


def read_flags(container: Obj, flags: list[str]) -> dict[str, str | None]:
    """The value each flag has in the container (`--f=v` or `--f v`, command or args; the last wins)."""
    found: dict[str, str | None] = dict.fromkeys(flags)
    tokens = [t for field in ("command", "args") if isinstance(container.get(field), list) for t in container[field]]
    for i, token in enumerate(tokens):
        if not isinstance(token, str):
            continue
        flag, sep, value = token.partition("=")
        if flag in found:
            found[flag] = value if sep else (str(tokens[i + 1]) if i + 1 < len(tokens) else "")
    return found


def _upsert_env(container: Obj, env: list[Obj]) -> None:
    current = container.setdefault("env", [])
    for wanted in env:
        existing = find_named(current, wanted["name"])
        if existing is None:
            current.append(wanted)
        else:
            existing.pop("valueFrom", None)
            existing["value"] = wanted["value"]


def _set_resources(container: Obj, wanted: Obj) -> None:
    resources = container.setdefault("resources", {})
    for kind, quantities in wanted.items():
        current = resources.setdefault(kind, {})
        for resource, quantity in quantities.items():
            # kube-apiserver rewrites "1000m" as "1": equal quantities are left as they are.
            if not same_quantity(current.get(resource), quantity):
                current[resource] = quantity


def sidecar_resources(settings: EffectiveSettings) -> Obj:
    """The sidecar's resources: `sidecar.resources` when given, else the defaults."""
    given = settings.sidecar.resources
    if given is not None:
        return given.model_dump(exclude_defaults=True)
    return clone(defaults()["sidecar"]["resources"])


def _sidecar_env(settings: EffectiveSettings) -> list[Obj]:
    return [
        {"name": names.CLUSTER_ID_ENV, "value": settings.cluster_id},
        *({"name": e.name, "value": e.value} for e in settings.sidecar.extraEnvs),
    ]


def sidecar_container(settings: EffectiveSettings, options: Options) -> Obj:
    """The `audit-logs` container as a new Pod gets it."""
    return {
        "name": names.SIDECAR_CONTAINER,
        "image": options.sidecar_image,
        "command": ["/fluent-bit/bin/fluent-bit"],
        "args": ["-c", names.FLUENTBIT_DIR + config_key(options.fluentbit_format)],
        "env": _sidecar_env(settings),
        "resources": sidecar_resources(settings),
        "volumeMounts": [{"name": names.VOLUME_AUDIT_LOG, "mountPath": names.AUDIT_LOG_DIR},
                         {"name": names.VOLUME_FLUENTBIT, "mountPath": names.FLUENTBIT_DIR, "readOnly": True}],
    }


def _upsert_sidecar(containers: list[Any], settings: EffectiveSettings, options: Options) -> None:
    at = _index(containers, names.SIDECAR_CONTAINER)
    wanted = sidecar_container(settings, options)
    if at is None:
        containers.append(wanted)
        return
    # A sidecar already there (a re-invocation, or a stale copy): bring what we own to the wanted
    # state and keep everything else kube-apiserver or others added (defaults, LimitRange values).
    sidecar = containers[at] = clone(containers[at])
    for key in ("image", "command", "args"):
        sidecar[key] = wanted[key]
    _upsert_env(sidecar, wanted["env"])
    _set_resources(sidecar, wanted["resources"])
    for mount in wanted["volumeMounts"]:
        _ensure_mount(sidecar, mount["name"], mount["mountPath"], read_only=mount.get("readOnly", False))


def audit_flags(settings: EffectiveSettings) -> dict[str, str]:
    """The kube-apiserver flags the settings call for, in the order they are appended."""
    flags: dict[str, str] = {}
    if settings.enabled:
        flags["--audit-log-path"] = names.AUDIT_LOG_PATH
        flags.update(defaults()["auditLogRotation"])
        flags["--audit-policy-file"] = names.POLICY_PATH
    if settings.webhook is not None:
        flags["--audit-policy-file"] = names.POLICY_PATH
        flags["--audit-webhook-config-file"] = names.WEBHOOK_CONFIG_PATH
        flags["--audit-webhook-initial-backoff"] = settings.webhook.initial_backoff
    return flags


def _own_apiserver(container: Obj) -> Obj:
    """A copy of the apiserver container deep enough for the parts we change (flags, mounts)."""
    container = dict(container)
    for field in ("command", "args"):
        if isinstance(container.get(field), list):
            container[field] = list(container[field])
    if isinstance(container.get("volumeMounts"), list):
        container["volumeMounts"] = list(container["volumeMounts"])
    return container


def desired_pod(pod: Obj, settings: EffectiveSettings, options: Options, *, settings_hash: str = "") -> Obj:
    """`pod` with the sidecar, volumes, mounts, flags and settings hash in place; `pod` is not modified.

    `settings_hash` saves recomputing `settings.settings_hash(options)` when the caller has it.
    """
    pod = dict(pod)
    spec = pod["spec"] = dict(pod["spec"]) if isinstance(pod.get("spec"), dict) else {}
    containers = spec.get("containers")
    at = _index(containers, names.APISERVER_CONTAINER) if isinstance(containers, list) else None
    if at is None or not isinstance(containers, list):
        raise NoApiserverContainer
    containers = spec["containers"] = list(containers)
    apiserver = containers[at] = _own_apiserver(containers[at])
    volumes = spec["volumes"] = list(spec["volumes"]) if isinstance(spec.get("volumes"), list) else []

    config_volume = {"name": names.VOLUME_AUDIT_CONFIG, "configMap": {"name": names.CONFIGMAP_AUDIT_CONFIG}}
    if settings.enabled:
        _upsert_volume(volumes, {"name": names.VOLUME_AUDIT_LOG, "emptyDir": {}})
        _upsert_volume(volumes, config_volume)
        _upsert_volume(volumes, {"name": names.VOLUME_FLUENTBIT, "secret": {"secretName": names.SECRET_FLUENTBIT}})
        _ensure_mount(apiserver, names.VOLUME_AUDIT_CONFIG, names.AUDIT_CONFIG_DIR, read_only=True)
        _ensure_mount(apiserver, names.VOLUME_AUDIT_LOG, names.AUDIT_LOG_DIR, read_only=False)
        _upsert_sidecar(containers, settings, options)
    if settings.webhook is not None:
        webhook_volume = {"name": names.VOLUME_WEBHOOK_BACKEND, "secret": {"secretName": settings.webhook.secret_name}}
        _upsert_volume(volumes, config_volume)
        _upsert_volume(volumes, webhook_volume)
        _ensure_mount(apiserver, names.VOLUME_AUDIT_CONFIG, names.AUDIT_CONFIG_DIR, read_only=True)
        _ensure_mount(apiserver, names.VOLUME_WEBHOOK_BACKEND, names.WEBHOOK_CONFIG_DIR, read_only=True)
    set_flags(apiserver, audit_flags(settings))

    metadata = pod["metadata"] = dict(pod["metadata"]) if isinstance(pod.get("metadata"), dict) else {}
    annotations = metadata.get("annotations")
    annotations = metadata["annotations"] = dict(annotations) if isinstance(annotations, dict) else {}
    annotations[names.SETTINGS_HASH_ANNOTATION] = settings_hash or settings.settings_hash(options)
    return pod
