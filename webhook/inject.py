"""The desired apiserver Pod: the current Pod plus what the settings turn on (SPEC §2). Pure.

Everything is upserted by the names in webhook/names.py: a second pass over our own output
finds its work and changes nothing, and whatever we do not own keeps its value and position.
"""

from __future__ import annotations

import copy
import posixpath
from typing import Any

from webhook import names
from webhook.defaults import defaults
from webhook.fluentbit import config_key
from webhook.objects import find_named
from webhook.options import Options
from webhook.quantity import same_quantity
from webhook.settings import EffectiveSettings

Obj = dict[str, Any]


class NoApiserverContainer(Exception):
    """The Pod has no container named `apiserver`, so there is nothing to configure."""


def _upsert_volume(volumes: list[Any], wanted: Obj) -> None:
    existing = find_named(volumes, wanted["name"])
    if existing is None:
        volumes.append(wanted)
        return
    (source_kind, source), = ((k, v) for k, v in wanted.items() if k != "name")
    current = existing.get(source_kind)
    ref_key = {"configMap": "name", "secret": "secretName"}.get(source_kind)
    if isinstance(current, dict) and (ref_key is None or current.get(ref_key) == source[ref_key]):
        return  # the right source already; keep its extras (defaultMode, sizeLimit, ...)
    for key in [k for k in existing if k != "name"]:
        del existing[key]
    existing[source_kind] = source


def _same_path(a: Any, b: str) -> bool:
    return isinstance(a, str) and posixpath.normpath(a) == posixpath.normpath(b)


def _ensure_mount(container: Obj, volume: str, path: str, read_only: bool) -> None:
    """One mount of `volume` at `path`; an existing mount at that path is taken over."""
    mounts = container.setdefault("volumeMounts", [])
    found = False
    for mount in mounts:
        if isinstance(mount, dict) and _same_path(mount.get("mountPath"), path):
            found = True
            mount["name"] = volume
            for key in ("subPath", "subPathExpr"):
                mount.pop(key, None)
            if read_only and mount.get("readOnly") is not True:
                mount["readOnly"] = True
            elif not read_only and mount.get("readOnly"):
                mount["readOnly"] = False
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
    return copy.deepcopy(defaults()["sidecar"]["resources"])


def _sidecar_env(settings: EffectiveSettings) -> list[Obj]:
    return [
        {"name": names.CLUSTER_ID_ENV, "value": settings.cluster_id},
        *({"name": e.name, "value": e.value} for e in settings.sidecar.extraEnvs),
    ]


def _upsert_sidecar(containers: list[Any], settings: EffectiveSettings, options: Options) -> None:
    sidecar = find_named(containers, names.SIDECAR_CONTAINER)
    if sidecar is None:
        sidecar = {"name": names.SIDECAR_CONTAINER}
        containers.append(sidecar)
    sidecar["image"] = options.sidecar_image
    sidecar["command"] = ["/fluent-bit/bin/fluent-bit"]
    sidecar["args"] = ["-c", names.FLUENTBIT_DIR + config_key(options.fluentbit_format)]
    _upsert_env(sidecar, _sidecar_env(settings))
    _set_resources(sidecar, sidecar_resources(settings))
    _ensure_mount(sidecar, names.VOLUME_AUDIT_LOG, names.AUDIT_LOG_DIR, read_only=False)
    _ensure_mount(sidecar, names.VOLUME_FLUENTBIT, names.FLUENTBIT_DIR, read_only=True)


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


def desired_pod(pod: Obj, settings: EffectiveSettings, options: Options) -> Obj:
    """A copy of `pod` with the sidecar, volumes, mounts, flags and settings hash in place."""
    pod = copy.deepcopy(pod)
    spec = pod.setdefault("spec", {})
    containers = spec.get("containers")
    apiserver = find_named(containers, names.APISERVER_CONTAINER)
    if apiserver is None or not isinstance(containers, list):
        raise NoApiserverContainer
    volumes = spec.get("volumes")
    if not isinstance(volumes, list):
        volumes = spec["volumes"] = []

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

    metadata = pod.setdefault("metadata", {})
    annotations = metadata.get("annotations")
    if not isinstance(annotations, dict):
        annotations = metadata["annotations"] = {}
    annotations[names.SETTINGS_HASH_ANNOTATION] = settings.settings_hash(options)
    return pod
