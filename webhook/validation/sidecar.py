"""Rules for `auditLogging.sidecar`: what may reach the generated fluent-bit file and the Pod."""

from __future__ import annotations

import re
from typing import Any

from webhook import names
from webhook.defaults import fluentbit_plugins
from webhook.egress import is_outside
from webhook.quantity import QUANTITY_FORMAT, parse_quantity
from webhook.validation.errors import Findings, Path, duplicate, forbidden, invalid, required, unsupported

# A fluent-bit key is split from its value at the first space; a line break starts a new line
# (a new section or an @INCLUDE); '[' opens a section or sub-group; '@' starts a directive and
# '#' a comment. Keys are therefore limited to the characters real plugin keys use.
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
KEY_DETAIL = (
    "a fluent-bit key must consist of letters, digits, '_', '.' or '-' and start with a letter or digit "
    "(no spaces, brackets, '@', '#' or line breaks)"
)
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_VAR_RE = re.compile(r"\$\{([^}]*)\}")
ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_TRUTHY = {"on", "true", "yes", "1"}
# A value _check_value has nothing to say about: no control characters, no surrounding spaces, no
# `$`. Most values are like this; one match spares the individual checks.
_PLAIN_VALUE = re.compile(r"[^\s\x00-\x1f\x7f$](?:[^\x00-\x1f\x7f$]*[^\s\x00-\x1f\x7f$])?")


def _check_value(value: Any, path: Path, env_names: set[str], found: Findings) -> None:
    if not isinstance(value, str):
        hint = f' (quote it: "{value}")' if isinstance(value, int | float | bool) else ""
        found.error(invalid(path, value, f"must be a string{hint}"))
    elif _CONTROL_RE.search(value):
        found.error(invalid(path, value, "must not contain line breaks or other control characters: "
                                         "they would start a new line in the fluent-bit configuration"))
    elif not value.strip():
        found.error(invalid(path, value, "must not be empty: fluent-bit refuses a key without a value"))
    else:
        if value != value.strip():
            found.warn(path, "leading and trailing spaces are dropped by fluent-bit")
        for var in _VAR_RE.findall(value):
            if var not in env_names:
                found.warn(path, f"${{{var}}} is not in the sidecar env; add it to extraEnvs")


def check_entry_map(raw: Any, path: Path, env_names: set[str]) -> tuple[Findings, dict[str, str]]:
    """Check one section's `key: value` map; returns the findings and the keys by lower case."""
    found = Findings()
    by_lower: dict[str, str] = {}
    if not isinstance(raw, dict):
        found.error(invalid(path, raw, "must be a map of string keys to string values"))
        return found, by_lower
    for key, value in raw.items():
        if not isinstance(key, str) or not KEY_RE.match(key):
            found.error(invalid(path, key, KEY_DETAIL))
            continue
        lower = key.lower()
        if lower in ("name", "match", "match_regex") and lower in by_lower:
            found.error(duplicate(path.key(key), key))
        by_lower.setdefault(lower, key)
        if type(value) is not str or not _PLAIN_VALUE.fullmatch(value):
            _check_value(value, path.key(key), env_names, found)
    return found, by_lower


def _check_plugin_list(raw: Any, path: Path, kind: str, env_names: set[str]) -> Findings:
    found = Findings()
    if not found.present_as(raw, list, path, f"must be a list of maps, one per [{kind.upper()[:-1]}] section"):
        return found
    known = fluentbit_plugins()[kind]
    singular = kind[:-1]
    for i, entry in enumerate(raw):
        entry_path = path.index(i)
        sub, keys = check_entry_map(entry, entry_path, env_names)
        found.merge(sub)
        if not isinstance(entry, dict):
            continue
        if "name" not in keys:
            found.error(required(entry_path.key("Name"),
                                 f'every {singular} names its fluent-bit plugin, e.g. "{known[0]}"'))
        else:
            plugin = entry[keys["name"]]
            if isinstance(plugin, str) and KEY_RE.match(plugin.strip()) and plugin.strip().lower() not in known:
                found.error(unsupported(entry_path.key(keys["name"]), plugin, known))
        host = entry.get(keys["host"]) if "host" in keys else None
        if isinstance(host, str) and KEY_RE.match(host) and is_outside(host):
            found.warn(entry_path.key(keys["host"]), "an outside name: allow egress to it yourself")
        if "match" not in keys and "match_regex" not in keys:
            found.error(required(entry_path.key("Match"), f'every {singular} needs "Match" or "Match_Regex"; '
                                                          '"*" matches the audit log'))
    return found


def _check_service(raw: Any, path: Path, env_names: set[str]) -> Findings:
    if raw is None:
        return Findings()
    found, keys = check_entry_map(raw, path, env_names)
    daemon = raw.get(keys["daemon"]) if "daemon" in keys else None
    if isinstance(daemon, str) and daemon.strip().lower() in _TRUTHY:
        found.error(forbidden(path.key(keys["daemon"]), "fluent-bit would fork into the background and the "
                                                        "sidecar container would exit and restart forever"))
    return found


def env_names_of(sidecar: Any) -> set[str]:
    """The env variable names the sidecar will have (CLUSTER_ID and the valid extraEnvs)."""
    env = sidecar.get("extraEnvs") if isinstance(sidecar, dict) else None
    entries = env if isinstance(env, list) else []
    extra = {e["name"] for e in entries if isinstance(e, dict) and isinstance(e.get("name"), str)}
    return {names.CLUSTER_ID_ENV, *extra}


def _check_extra_envs(raw: Any, path: Path) -> Findings:
    found = Findings()
    if not found.present_as(raw, list, path, "must be a list of {name, value} environment variables"):
        return found
    seen: set[str] = set()
    for i, env in enumerate(raw):
        env_path = path.index(i)
        if not isinstance(env, dict):
            found.error(invalid(env_path, env, "must be a map with `name` and `value`"))
            continue
        name = env.get("name")
        if not isinstance(name, str) or not name:
            found.error(required(env_path.child("name")))
        elif not ENV_NAME_RE.match(name):
            found.error(invalid(env_path.child("name"), name, "a valid environment variable name must consist of "
                                "alphabetic characters, digits, '_', '-', or '.', and must not start with a digit"))
        elif name == names.CLUSTER_ID_ENV:
            found.error(forbidden(env_path.child("name"), f"{names.CLUSTER_ID_ENV} is set by the webhook to the "
                                                          "cluster ID and cannot be overridden"))
        elif name in seen:
            found.error(duplicate(env_path.child("name"), name))
        else:
            seen.add(name)
        if "valueFrom" in env:
            found.error(forbidden(env_path.child("valueFrom"), "only `value` is supported"))
        if "value" in env and not isinstance(env["value"], str):
            found.error(invalid(env_path.child("value"), env["value"], "must be a string"))
    return found


def _check_quantities(raw: Any, path: Path, found: Findings) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    if raw is None:
        return parsed
    if not isinstance(raw, dict):
        found.error(invalid(path, raw, "must be a map of resource names to quantities"))
        return parsed
    for resource, value in raw.items():
        q = parse_quantity(value)
        if q is None:
            found.error(invalid(path.key(str(resource)), value, f"must match the regular expression {QUANTITY_FORMAT}"))
        elif q < 0:
            found.error(invalid(path.key(str(resource)), value, "must be greater than or equal to 0"))
        else:
            parsed[resource] = q
    return parsed


def _check_resources(raw: Any, path: Path) -> Findings:
    found = Findings()
    if not found.present_as(raw, dict, path, "must be a ResourceRequirements map with `requests` and `limits`"):
        return found
    requests = _check_quantities(raw.get("requests"), path.child("requests"), found)
    limits = _check_quantities(raw.get("limits"), path.child("limits"), found)
    for resource, request in requests.items():
        if resource in limits and request > limits[resource]:
            found.error(invalid(path.child("requests").key(resource), raw["requests"][resource],
                                f"must be less than or equal to {resource} limit of {raw['limits'][resource]}"))
    return found


def check_sidecar(raw: Any, path: Path) -> Findings:
    """Every rule for `auditLogging.sidecar`."""
    found = Findings()
    if not found.present_as(raw, dict, path, "must be a map with `resources`, `extraEnvs` and `config`"):
        return found
    env_names = env_names_of(raw)
    found.merge(_check_resources(raw.get("resources"), path.child("resources")))
    found.merge(_check_extra_envs(raw.get("extraEnvs"), path.child("extraEnvs")))
    config = raw.get("config")
    config_path = path.child("config")
    if not found.present_as(config, dict, config_path, "must be a map with `service`, `filters` and `outputs`"):
        return found
    found.merge(_check_service(config.get("service"), config_path.child("service"), env_names))
    found.merge(_check_plugin_list(config.get("filters"), config_path.child("filters"), "filters", env_names))
    found.merge(_check_plugin_list(config.get("outputs"), config_path.child("outputs"), "outputs", env_names))
    return found
