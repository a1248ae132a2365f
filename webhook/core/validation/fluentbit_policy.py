"""What a sidecar map may ask of fluent-bit: the plugin and key policy, and a Seed's allowances. Pure.

The policy itself is data (`webhook/data/fluentbit-policy.yaml`); this module reads it, reads
what an operator allows beyond it on a Seed, and answers single questions about one plugin,
key or value. `sidecar.py` walks the maps and asks them.
"""

from __future__ import annotations

import ipaddress
import posixpath
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from fnmatch import fnmatchcase
from functools import cache, lru_cache
from importlib import resources
from typing import Any
from urllib.parse import urlsplit

from webhook.core import names, yamlio
from webhook.core.objects import dig
from webhook.core.quantity import parse_quantity
from webhook.core.validation.errors import FieldError, Path, invalid

_ANNOTATIONS = Path("metadata").child("annotations")


@dataclass(frozen=True)
class Policy:
    """`fluentbit-policy.yaml`, parsed."""

    service_keys: dict[str, dict[str, Any] | None]
    multi_value_keys: frozenset[str]
    denied_plugins: dict[str, str]
    denied_keys: dict[str, str]
    denied_values: dict[str, dict[str, dict[str, str]]]
    key_allow_lists: dict[str, frozenset[str]]
    trust_store_keys: frozenset[str]
    trust_store_paths: tuple[str, ...]
    destination_keys: tuple[str, ...]
    host_required: frozenset[str]
    denied_env_names: tuple[str, ...]
    record_keeping_filters: frozenset[str]
    record_dropping_outputs: dict[str, str]
    protected_paths: tuple[str, ...]
    storage_path: re.Pattern[str]
    protected_ports: frozenset[str]
    loopback_hosts: frozenset[str]
    resource_names: tuple[str, ...]
    floor: dict[str, Decimal]
    ceiling: dict[str, Decimal]


def _quantities(raw: dict[str, Any]) -> dict[str, Decimal]:
    parsed = {k: parse_quantity(str(v)) for k, v in raw.items()}
    return {k: v for k, v in parsed.items() if v is not None}


@cache
def policy() -> Policy:
    """The policy of `webhook/data/fluentbit-policy.yaml`. Loaded once."""
    text = resources.files("webhook").joinpath("data", "fluentbit-policy.yaml").read_text(encoding="utf-8")
    data = yamlio.load(text)
    protected = data["protected"]
    return Policy(
        service_keys={k.lower(): v for k, v in data["serviceKeys"].items()},
        multi_value_keys=frozenset(k.lower() for k in data["multiValueKeys"]),
        denied_plugins=dict(data["deniedPlugins"]),
        denied_keys={k.lower(): v for k, v in data["deniedKeys"].items()},
        denied_values={p: {k.lower(): {str(v).lower(): why for v, why in vals.items()} for k, vals in keys.items()}
                       for p, keys in data["deniedValues"].items()},
        key_allow_lists={p.lower(): frozenset(k.lower() for k in keys) for p, keys in data["keyAllowLists"].items()},
        trust_store_keys=frozenset(k.lower() for k in data["trustStoreKeys"]),
        trust_store_paths=tuple(data["trustStorePaths"]),
        destination_keys=tuple(k.lower() for k in data["destinationKeys"]),
        host_required=frozenset(data["hostRequired"]),
        denied_env_names=tuple(n.upper() for n in data["deniedEnvNames"]),
        record_keeping_filters=frozenset(data["recordKeepingFilters"]),
        record_dropping_outputs=dict(data["recordDroppingOutputs"]),
        protected_paths=tuple(protected["paths"]),
        storage_path=re.compile(protected["storagePath"]),
        protected_ports=frozenset(str(p) for p in protected["ports"]),
        loopback_hosts=frozenset(h.lower() for h in protected["loopbackHosts"]),
        resource_names=tuple(data["resources"]["names"]),
        floor=_quantities(data["resources"]["floor"]),
        ceiling=_quantities(data["resources"]["ceiling"]),
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

    def key(self) -> tuple[Any, ...]:
        """Everything these allowances say, hashable (for memos)."""
        return self.plugins, self.keys, self.record_changes, tuple(sorted(self.ceiling.items()))

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
    for pattern, allowed in policy().key_allow_lists.items():
        if fnmatchcase(lower, pattern) and lower not in allowed:
            return f"is not one of the {pattern} settings a cluster may set"
    return ""


def trusted_certificate_path(key: str, value: str) -> bool:
    """Whether a certificate-authority key names the image's own trust store (read-only, public)."""
    if key not in policy().trust_store_keys:
        return False
    path = posixpath.normpath("/" + value.strip().lstrip("/"))
    return any(path == p or path.startswith(p + "/") for p in policy().trust_store_paths)


@lru_cache(maxsize=4096)
def denied_env_name(name: str) -> bool:
    """Whether an extraEnvs name is one the loader, TLS libraries, proxies or cloud SDKs read."""
    upper = name.upper()
    return any(fnmatchcase(upper, pattern) for pattern in policy().denied_env_names)


def denied_value(plugin: str, key: str, value: str) -> str:
    """Why the policy denies this value of this (lower-case) key of this plugin ("" if it does not)."""
    word = value.strip().lower()
    for owner in (plugin, "*"):
        by_key = policy().denied_values.get(owner)
        why = by_key.get(key, {}).get(word, "") if by_key else ""
        if why:
            return why
    return ""


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
    """Whether an output host is the apiserver Pod itself (its own network namespace).

    Addresses are read as the C library reads them (`127.1`, `0`, `2130706433` are loopback too);
    a DNS name that resolves to loopback cannot be judged here.
    """
    lower = host.strip().strip("[]").lower().rstrip(".")
    if lower in policy().loopback_hosts or lower.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(lower)
    except ValueError:
        packed = inet_aton(lower)
        if packed is None:
            return False
        address = ipaddress.ip_address(packed)
    mapped = getattr(address, "ipv4_mapped", None) or address
    return mapped.is_loopback or mapped.is_unspecified


_HOST_TOKEN = re.compile(r"[\s,;]+")


def hosts_in(value: str) -> list[str]:
    """The hosts a destination value names: `h`, `h:port`, `[v6]:port`, URLs, lists of them."""
    hosts = []
    for token in _HOST_TOKEN.split(value.strip()):
        if not token:
            continue
        if "://" in token:
            try:
                host = urlsplit(token).hostname or ""
            except ValueError:
                host = token
        elif token.startswith("["):
            host = token[1:].partition("]")[0]
        elif token.count(":") == 1:
            host = token.partition(":")[0]
        else:
            host = token
        hosts.append(host)
    return hosts


@lru_cache(maxsize=4096)
def is_destination_key(key: str) -> bool:
    """Whether a key's value picks where records are sent."""
    lower = key.lower()
    return any(fnmatchcase(lower, pattern) for pattern in policy().destination_keys)


def plugin_name(entry: Mapping[str, str]) -> str:
    """The plugin a filter or output map names (its `Name`, in any case), or "?"."""
    return next((v for k, v in entry.items() if k.lower() == "name"), "?")


def record_changes(filters: list[dict[str, str]], outputs: list[dict[str, str]]) -> list[str]:
    """What in a sidecar configuration drops, changes or throws away audit records, for people."""
    dropping = policy().record_dropping_outputs
    found = [f"filters[{i}] {plugin_name(f)}: changes or drops records" for i, f in enumerate(filters)
             if plugin_name(f) not in policy().record_keeping_filters]
    found += [f"outputs[{i}] {plugin_name(o)}: {dropping[plugin_name(o)]}" for i, o in enumerate(outputs)
              if plugin_name(o) in dropping]
    return found


# One part of an inet_aton address: hexadecimal, octal (a leading 0) or decimal, as strtoul with base 0.
_INET_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*")


def inet_aton(text: str) -> bytes | None:
    """The four bytes the C library's inet_aton reads from `text` (None where it refuses): one to four
    parts, the last filling the bytes left (`127.1` is 127.0.0.1, `2130706433` too); as in glibc,
    whatever follows a space is ignored. Pure, so that the core opens no socket module."""
    head = text.split(None, 1)[0] if text.strip() else ""
    parts = head.split(".")
    if len(parts) > 4 or not all(_INET_PART.fullmatch(p) for p in parts):
        return None
    values = [int(p[2:], 16) if p[:2] in ("0x", "0X") else int(p, 8) if p.startswith("0") else int(p)
              for p in parts]
    *leading, last = values
    if any(v > 0xFF for v in leading) or last >= 256 ** (5 - len(values)):
        return None
    number = sum(v << (8 * (3 - i)) for i, v in enumerate(leading)) + last
    return number.to_bytes(4, "big")
