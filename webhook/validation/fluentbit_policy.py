"""What a sidecar map may ask of fluent-bit: the plugin and key policy, and a Seed's allowances. Pure.

The policy itself is data (`webhook/data/fluentbit-policy.yaml`); this module reads it, reads
what an operator allows beyond it on a Seed, and answers single questions about one plugin,
key or value. `sidecar.py` walks the maps and asks them.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import fnmatchcase
from functools import cache, lru_cache
from importlib import resources
from typing import Any

from webhook import names, yamlio
from webhook.objects import dig
from webhook.quantity import parse_quantity
from webhook.validation.errors import FieldError, Path, invalid

_ANNOTATIONS = Path("metadata").child("annotations")


@dataclass(frozen=True)
class Policy:
    """`fluentbit-policy.yaml`, parsed."""

    service_keys: frozenset[str]
    denied_plugins: dict[str, str]
    denied_keys: dict[str, str]
    denied_values: dict[str, dict[str, dict[str, str]]]
    record_keeping_filters: frozenset[str]
    record_dropping_outputs: dict[str, str]
    protected_paths: tuple[str, ...]
    storage_path: re.Pattern[str]
    protected_ports: frozenset[str]
    loopback_hosts: frozenset[str]
    cluster_id_field: str
    resource_names: tuple[str, ...]
    ceiling: dict[str, Decimal]


@cache
def policy() -> Policy:
    """The policy of `webhook/data/fluentbit-policy.yaml`. Loaded once."""
    text = resources.files("webhook").joinpath("data", "fluentbit-policy.yaml").read_text(encoding="utf-8")
    data = yamlio.load(text)
    protected = data["protected"]
    ceiling = {k: parse_quantity(str(v)) for k, v in data["resources"]["ceiling"].items()}
    return Policy(
        service_keys=frozenset(k.lower() for k in data["serviceKeys"]),
        denied_plugins=dict(data["deniedPlugins"]),
        denied_keys={k.lower(): v for k, v in data["deniedKeys"].items()},
        denied_values={p: {k.lower(): {str(v).lower(): why for v, why in vals.items()} for k, vals in keys.items()}
                       for p, keys in data["deniedValues"].items()},
        record_keeping_filters=frozenset(data["recordKeepingFilters"]),
        record_dropping_outputs=dict(data["recordDroppingOutputs"]),
        protected_paths=tuple(protected["paths"]),
        storage_path=re.compile(protected["storagePath"]),
        protected_ports=frozenset(str(p) for p in protected["ports"]),
        loopback_hosts=frozenset(h.lower() for h in protected["loopbackHosts"]),
        cluster_id_field=protected["clusterIdField"].lower(),
        resource_names=tuple(data["resources"]["names"]),
        ceiling={k: v for k, v in ceiling.items() if v is not None},
    )


@dataclass(frozen=True)
class Allowances:
    """What an operator allows the sidecars of one Seed's clusters beyond the policy."""

    plugins: frozenset[str] = frozenset()
    # (plugin or "service" or "*", lower-case key)
    keys: frozenset[tuple[str, str]] = frozenset()
    record_changes: bool = False
    ceiling: dict[str, Decimal] = field(default_factory=dict)

    def allows_plugin(self, plugin: str) -> bool:
        """Whether the Seed allows a plugin the policy denies."""
        return plugin in self.plugins

    def allows_key(self, plugin: str, key: str) -> bool:
        """Whether the Seed allows a key the policy denies, for this plugin (or "service")."""
        return (plugin, key) in self.keys or ("*", key) in self.keys

    def resource_ceiling(self) -> dict[str, Decimal]:
        """The ceiling of the sidecar's requests and limits, by resource name."""
        return {**policy().ceiling, **self.ceiling}


NO_ALLOWANCES = Allowances()
_LIST_SPLIT = re.compile(r"[\s,]+")


def _items(text: str) -> list[str]:
    return [item for item in _LIST_SPLIT.split(text) if item]


def seed_allowances(seed: dict[str, Any] | None) -> tuple[Allowances, list[FieldError]]:
    """The allowances a Seed's annotations grant, and the errors in those annotations."""
    annotations = dig(seed, "metadata", "annotations")
    if not isinstance(annotations, dict):
        return NO_ALLOWANCES, []
    errors: list[FieldError] = []

    def text(name: str) -> str:
        value = annotations.get(name)
        return value if isinstance(value, str) else ""

    plugins = frozenset(_items(text(names.ALLOWED_PLUGINS_ANNOTATION)))
    keys: set[tuple[str, str]] = set()
    for item in _items(text(names.ALLOWED_KEYS_ANNOTATION)):
        plugin, sep, key = item.partition(":")
        if not sep or not plugin or not key:
            errors.append(invalid(_ANNOTATIONS.key(names.ALLOWED_KEYS_ANNOTATION), item,
                                  'each entry must be "<plugin>:<key>", "service:<key>" or "*:<key>"'))
            continue
        keys.add((plugin, key.lower()))
    record = text(names.ALLOW_RECORD_CHANGES_ANNOTATION)
    if record not in ("", "true", "false"):
        errors.append(invalid(_ANNOTATIONS.key(names.ALLOW_RECORD_CHANGES_ANNOTATION), record,
                              'must be "true" or "false"'))
    ceiling: dict[str, Decimal] = {}
    for item in _items(text(names.RESOURCE_CEILING_ANNOTATION)):
        resource, _, amount = item.partition("=")
        quantity = parse_quantity(amount)
        if resource not in policy().resource_names or quantity is None or quantity < 0:
            errors.append(invalid(_ANNOTATIONS.key(names.RESOURCE_CEILING_ANNOTATION), item,
                                  "each entry must be <resource>=<quantity> with a resource of "
                                  + ", ".join(policy().resource_names)))
            continue
        ceiling[resource] = quantity
    return Allowances(plugins, frozenset(keys), record == "true", ceiling), errors


def denied_plugin(plugin: str) -> str:
    """Why the policy denies a filter or output plugin ("" if it does not)."""
    return policy().denied_plugins.get(plugin, "")


@lru_cache(maxsize=4096)
def denied_key(key: str) -> str:
    """Why the policy denies a filter or output key, whatever the plugin ("" if it does not).

    Cached: real configurations use a few hundred distinct keys, and every Cluster admission asks.
    """
    lower = key.lower()
    for pattern, why in policy().denied_keys.items():
        if fnmatchcase(lower, pattern):
            return why
    return ""


def denied_value(plugin: str, key: str, value: str) -> str:
    """Why the policy denies this value of this (lower-case) key of this plugin ("" if it does not)."""
    by_key = policy().denied_values.get(plugin)
    return by_key.get(key, {}).get(value.strip().lower(), "") if by_key else ""


_PATH_TOKEN = re.compile(r"[^\s,;=:'\"]*/[^\s,;=:'\"]*")


def protected_path_in(value: str) -> str:
    """The protected path a value names (after `//`, `/./` and `..` are resolved), or ""."""
    if "/" not in value:
        return ""
    for token in _PATH_TOKEN.findall(value):
        path = posixpath.normpath("/" + token.lstrip("/"))
        for protected in policy().protected_paths:
            if path == protected or path.startswith(protected + "/"):
                return protected
    return ""


def is_loopback(host: str) -> bool:
    """Whether an output host is the apiserver Pod itself (its own network namespace)."""
    lower = host.strip().strip("[]").lower().rstrip(".")
    if lower in policy().loopback_hosts or lower.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(lower)
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None) or address
    return mapped.is_loopback or mapped.is_unspecified


def record_changes(filters: list[dict[str, str]], outputs: list[dict[str, str]]) -> list[str]:
    """What in a sidecar configuration drops, changes or throws away audit records, for people."""
    def plugin(entry: dict[str, str]) -> str:
        return next((v for k, v in entry.items() if k.lower() == "name"), "?")

    found = [f"filters[{i}] {plugin(f)}: changes or drops records" for i, f in enumerate(filters)
             if plugin(f) not in policy().record_keeping_filters]
    found += [f"outputs[{i}] {plugin(o)}: {policy().record_dropping_outputs[plugin(o)]}" for i, o in enumerate(outputs)
              if plugin(o) in policy().record_dropping_outputs]
    return found
