"""Rules for `auditLogging.sidecar`: what may reach the generated fluent-bit file and the Pod.

Every string here is written by the Cluster's owner and passes through YAML (the Secret
manifest), kubectl, fluent-bit's parsers and its `${VAR}` expansion before it means anything.
So each value is judged in three steps: its characters (`text.py`: nothing any of those layers
may read as a line break), then its variables expanded as the sidecar will expand them, then
the plugin and key policy (`fluentbit_policy.py`) on the expanded value.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any

from webhook.core import names
from webhook.core.defaults import defaults, fluentbit_plugins
from webhook.core.egress import egress_refusal, is_outside
from webhook.core.operator_config import DEFAULT, OperatorConfig
from webhook.core.quantity import QUANTITY_FORMAT, parse_quantity
from webhook.core.validation import fluentbit_policy as fb
from webhook.core.validation.errors import (
    FieldError,
    Findings,
    Path,
    duplicate,
    forbidden,
    invalid,
    required,
    unsupported,
)
from webhook.core.validation.text import UNSAFE_DETAIL, has_unsafe_char

# A fluent-bit key is split from its value at the first space; a line break starts a new line
# (a new section or an @INCLUDE); '[' opens a section or sub-group; '@' starts a directive, '#'
# a comment and '$' a variable. Keys are therefore limited to the characters real plugin keys use.
KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
KEY_DETAIL = (
    "a fluent-bit key must consist of letters, digits, '_', '.' or '-' and start with a letter or digit "
    "(no spaces, brackets, '@', '#', '$' or line breaks)"
)
_VAR_RE = re.compile(r"\$\{([^}]*)\}")
ENV_NAME_RE = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
_TRUTHY = {"on", "true", "yes", "1"}
# A value with nothing for the character and variable steps: printable ASCII without `$`, no
# surrounding spaces. Most values are like this; one match spares the individual checks.
_PLAIN_VALUE = re.compile(r"[!-#%-~](?:[ !-#%-~]*[!-#%-~])?")
# Keys whose value a rule decides on: a variable there would hide the value from the rule.
_DECIDED_KEYS = frozenset({"name", "match", "match_regex", "host", "port", "storage.path", "daemon"})


@dataclass(frozen=True)
class SidecarContext:
    """What the sidecar rules need beyond the map itself."""

    # The value CLUSTER_ID will have in the sidecar (a placeholder for a Seed's defaults).
    cluster_id: str = "cluster"
    allowances: fb.Allowances = fb.NO_ALLOWANCES
    # The maps are a tenant's, in a datacenter that enforces audit logging: records must stay whole.
    keep_records: bool = False
    # The cluster's control-plane namespace ("" for a Seed's defaults).
    namespace: str = ""
    # The operator's configuration (its egress allow-list).
    config: OperatorConfig = DEFAULT


DEFAULT_CONTEXT = SidecarContext()


def _expand(value: str, path: Path, env: dict[str, str], decided: bool, found: Findings) -> str | None:
    """The value as fluent-bit will read it, or None (with an error) when that cannot be known."""
    if "${" not in value:
        return value
    if decided:
        found.error(forbidden(path, "must not use ${...}: the value decides which rules apply, "
                                    "so it must be written out"), rule="sidecar.variables")
        return None
    unknown = [var for var in _VAR_RE.findall(value) if var not in env]
    if unknown:
        known = ", ".join(f"${{{n}}}" for n in sorted(env))
        found.error(invalid(path, value, f"${{{unknown[0]}}} is not set in the sidecar; it has {known} "
                                         "(add variables with extraEnvs)"), rule="sidecar.variables")
        return None
    return _VAR_RE.sub(lambda m: env[m.group(1)], value)


def _check_value(value: Any, path: Path, env: dict[str, str], decided: bool, found: Findings) -> str | None:
    """The expanded value of one entry, or None when it is refused."""
    if not isinstance(value, str):
        hint = f' (quote it: "{value}")' if isinstance(value, int | float | bool) else ""
        found.error(invalid(path, value, f"must be a string{hint}"), rule="sidecar.value-string")
        return None
    if _PLAIN_VALUE.fullmatch(value):
        return value
    if has_unsafe_char(value):
        found.error(invalid(path, value, UNSAFE_DETAIL), rule="sidecar.characters")
        return None
    if not value.strip():
        found.error(invalid(path, value, "must not be empty: fluent-bit refuses a key without a value"),
                    rule="sidecar.value-empty")
        return None
    if value != value.strip():
        found.warn(path, "leading and trailing spaces are dropped by fluent-bit")
    expanded = _expand(value, path, env, decided, found)
    if expanded is not None and has_unsafe_char(expanded):
        found.error(invalid(path, value, UNSAFE_DETAIL), rule="sidecar.characters")
        return None
    return expanded


# By lower-case key: (key as written, value as fluent-bit reads it, or None when already refused).
# A key appears once (a second spelling is refused), except fluent-bit's multi-value keys, whose
# every line is in `Section.items`.
Entries = dict[str, tuple[str, str | None]]


@dataclass
class Section:
    """One checked `key: value` map."""

    entries: Entries
    items: list[tuple[str, str, str]]  # (lower-case key, key as written, value as read), values not refused


def check_entry_map(raw: Any, path: Path, env: dict[str, str]) -> tuple[Findings, Section]:
    """Check one section's `key: value` map: its keys, its characters, its variables."""
    found = Findings()
    section = Section({}, [])
    if not isinstance(raw, dict):
        found.error(invalid(path, raw, "must be a map of string keys to string values"), rule="sidecar.map-shape")
        return found, section
    multi = fb.policy().multi_value_keys
    for key, value in raw.items():
        if not isinstance(key, str) or not KEY_RE.match(key):
            found.error(invalid(path, key, KEY_DETAIL), rule="sidecar.key-form")
            continue
        lower = key.lower()
        if lower in section.entries and lower not in multi:
            found.error(duplicate(path.key(key), key, "fluent-bit keys are case-insensitive and the last one wins; "
                                                      "set each key once"), rule="sidecar.key-duplicate")
            continue
        if type(value) is str and _PLAIN_VALUE.fullmatch(value):  # the common case, without building a path
            read: str | None = value
        else:
            read = _check_value(value, path.key(key), env, lower in _DECIDED_KEYS, found)
        section.entries.setdefault(lower, (key, read))
        if read is not None:
            section.items.append((lower, key, read))
    return found, section


def _check_protected(path: Path, key: str, value: str, found: Findings, at: Path | None = None) -> None:
    """Rules no Seed can relax: the audit files and the Pod's own ports stay out of reach.

    `path` is the section's; the entry's (`at`, else `path[key]`) is built only for an error.
    """
    protected = fb.protected_path_in(value)
    if protected:
        found.error(forbidden(at or path.key(key), f"must not name {protected}: the sidecar may not read, write or "
                                             "serve the audit log, the audit policy, its own configuration or "
                                             "service-account tokens", value), rule="sidecar.protected-path")
    if fb.is_destination_key(key) and any(fb.is_loopback(h) for h in fb.hosts_in(value)):
        found.error(forbidden(at or path.key(key), "must not be the apiserver Pod itself: its ports are "
                                                   "kube-apiserver's", value), rule="sidecar.own-pod")


def _check_plugin_entry(section: Section, path: Path, kind: str, ctx: SidecarContext, found: Findings) -> None:
    entry = section.entries
    known = fluentbit_plugins()[kind]
    singular = kind[:-1]
    policy = fb.policy()
    plugin = ""
    if "name" not in entry:
        found.error(required(path.key("Name"), f'every {singular} names its fluent-bit plugin, e.g. "{known[0]}"'),
                    rule="sidecar.plugin-name")
    elif entry["name"][1] is not None:
        key, plugin = entry["name"][0], entry["name"][1] or ""
        why = fb.denied_plugin(plugin)
        if why and not ctx.allowances.allows_plugin(plugin):
            found.error(forbidden(path.key(key), f'"{plugin}" {why}; an operator may allow it for a Seed '
                                                 f"with the annotation {names.ALLOWED_PLUGINS_ANNOTATION}"),
                        rule="sidecar.plugin-denied")
        elif plugin not in known and not why:
            found.error(unsupported(path.key(key), plugin, [p for p in known if not fb.denied_plugin(p)]),
                        rule="sidecar.plugin-known")
            plugin = ""
        elif ctx.keep_records and not ctx.allowances.record_changes:
            loses = (policy.record_dropping_outputs.get(plugin, "") if kind == "outputs"
                     else "" if plugin in policy.record_keeping_filters else "changes or drops records")
            if loses:
                found.error(forbidden(path.key(key), f'"{plugin}" {loses}, and this datacenter enforces '
                                                                 "audit logging: the cluster may add outputs, not lose "
                                                                 "records"), rule="sidecar.records-kept")
    for lower, key, value in section.items:
        trusted = fb.trusted_certificate_path(lower, value)
        if not trusted:
            _check_protected(path, key, value, found)
        why = fb.denied_key(lower)
        if why and not trusted and not ctx.allowances.allows_key(plugin, lower):
            found.error(forbidden(path.key(key), f"{why}; an operator may allow it for a Seed with the annotation "
                                                 f"{names.ALLOWED_KEYS_ANNOTATION}", value), rule="sidecar.key-denied")
        why = fb.denied_value(plugin, lower, value)
        if why:
            found.error(forbidden(path.key(key), f'"{value.strip()}" {why}'), rule="sidecar.value-denied")
    key, host = entry.get("host", ("", None))
    if host is not None and is_outside(host):
        found.warn(path.key(key), "an outside name: allow egress to it yourself")
    elif host is not None and kind == "outputs":
        port = entry.get("port", ("", None))[1]
        why = egress_refusal(host, port, ctx.namespace, ctx.config)
        if why:
            found.warn(path.key(key), f"egress not opened: {why}")
    if kind == "outputs" and plugin in policy.host_required and "host" not in entry:
        found.error(required(path.key("Host"), f"without it {plugin} sends to 127.0.0.1, the apiserver Pod itself"),
                    rule="sidecar.host-required")
    if "match" not in entry and "match_regex" not in entry:
        found.error(required(path.key("Match"), f'every {singular} needs "Match" or "Match_Regex"; '
                                                '"*" matches the audit log'), rule="sidecar.match-required")


def _check_plugin_list(raw: Any, path: Path, kind: str, env: dict[str, str], ctx: SidecarContext) -> Findings:
    found = Findings()
    if not found.present_as(raw, list, path, f"must be a list of maps, one per [{kind.upper()[:-1]}] section"):
        return found
    for i, item in enumerate(raw):
        entry_path = path.index(i)
        sub, section = check_entry_map(item, entry_path, env)
        found.merge(sub)
        if isinstance(item, dict):
            _check_plugin_entry(section, entry_path, kind, ctx, found)
    return found


def _service_value_problem(rule: dict[str, Any] | None, value: str) -> str:
    """What is wrong with a [SERVICE] value under its rule from the policy ("" if nothing)."""
    if not rule:
        return ""
    text = value.strip()
    if "number" in rule:
        low, high = rule["number"]
        try:
            number = float(text)
        except ValueError:
            number = float("nan")
        return "" if low <= number <= high else f"must be a number from {low} to {high}"
    words = rule.get("oneOf") or []
    return "" if text.lower() in {str(w).lower() for w in words} else "must be one of " + ", ".join(map(str, words))


def _check_service(raw: Any, path: Path, env: dict[str, str], ctx: SidecarContext) -> Findings:
    if raw is None:
        return Findings()
    found, section = check_entry_map(raw, path, env)
    policy = fb.policy()
    allowed = ", ".join(sorted(policy.service_keys))
    for lower, key, value in section.items:
        key_path = path.key(key)
        if lower != "storage.path":  # its own rule below allows one folder of the audit volume
            _check_protected(path, key, value, found)
        if lower == "daemon" and value.strip().lower() in _TRUTHY:
            found.error(forbidden(key_path, "fluent-bit would fork into the background and the sidecar "
                                            "container would exit and restart forever"), rule="sidecar.service")
        elif lower not in policy.service_keys and not ctx.allowances.allows_key("service", lower):
            found.error(forbidden(key_path, f"not a [SERVICE] key a cluster may set; these are: {allowed}"),
                        rule="sidecar.service")
        elif lower == "storage.path" and not policy.storage_path.fullmatch(value):
            found.error(invalid(key_path, value, f"must be a folder inside {names.AUDIT_LOG_DIR}/ (not the audit "
                                                 "log or its database), e.g. "
                                                 f"{names.AUDIT_LOG_DIR}/buffer"), rule="sidecar.service")
        elif lower.endswith("port") and value.strip() in policy.protected_ports:
            found.error(forbidden(key_path, f"port {value.strip()} is kube-apiserver's in this Pod"),
                        rule="sidecar.service")
        elif problem := _service_value_problem(policy.service_keys.get(lower), value):
            found.error(invalid(key_path, value, problem), rule="sidecar.service")
    return found


def sidecar_env(sidecar: Any, cluster_id: str) -> dict[str, str]:
    """The variables fluent-bit can expand: CLUSTER_ID and the extraEnvs with plain string values."""
    env = sidecar.get("extraEnvs") if isinstance(sidecar, dict) else None
    entries = env if isinstance(env, list) else []
    extra = {e["name"]: e.get("value", "") for e in entries
             if isinstance(e, dict) and isinstance(e.get("name"), str) and isinstance(e.get("value", ""), str)}
    # The container runtime sets HOSTNAME (the Pod's name); fluent-bit's own examples use it.
    return {**extra, "HOSTNAME": "apiserver-pod", names.CLUSTER_ID_ENV: cluster_id}


def _check_extra_envs(raw: Any, path: Path) -> Findings:
    found = Findings()
    if not found.present_as(raw, list, path, "must be a list of {name, value} environment variables"):
        return found
    seen: set[str] = set()
    for i, env in enumerate(raw):
        env_path = path.index(i)
        if not isinstance(env, dict):
            found.error(invalid(env_path, env, "must be a map with `name` and `value`"), rule="sidecar.env")
            continue
        name = env.get("name")
        if not isinstance(name, str) or not name:
            found.error(required(env_path.child("name")), rule="sidecar.env")
        elif not ENV_NAME_RE.match(name):
            found.error(invalid(env_path.child("name"), name, "a valid environment variable name must consist of "
                                "alphabetic characters, digits, '_', '-', or '.', and must not start with a digit"),
                        rule="sidecar.env")
        elif name == names.CLUSTER_ID_ENV:
            found.error(forbidden(env_path.child("name"), f"{names.CLUSTER_ID_ENV} is set by the webhook to the "
                                                          "cluster ID and cannot be overridden"), rule="sidecar.env")
        elif name in seen:
            found.error(duplicate(env_path.child("name"), name), rule="sidecar.env")
        elif fb.denied_env_name(name):
            found.error(forbidden(env_path.child("name"), f"{name} is read by the dynamic loader, TLS libraries, "
                                                          "proxies or cloud SDKs in the sidecar"),
                        rule="sidecar.env-denied")
        else:
            seen.add(name)
        if "valueFrom" in env:
            found.error(forbidden(env_path.child("valueFrom"), "only `value` is supported"), rule="sidecar.env")
        value = env.get("value")
        if "value" in env and not isinstance(value, str):
            found.error(invalid(env_path.child("value"), value, "must be a string"), rule="sidecar.env")
        elif isinstance(value, str) and has_unsafe_char(value):
            found.error(invalid(env_path.child("value"), value, UNSAFE_DETAIL), rule="sidecar.characters")
        elif isinstance(value, str) and ("$(" in value or "${" in value):
            found.error(invalid(env_path.child("value"), value, "must not refer to other variables ($(...) or "
                                                                "${...}): Kubernetes or fluent-bit would expand them"),
                        rule="sidecar.env-references")
        elif isinstance(value, str):
            _check_protected(env_path, "value", value, found, at=env_path.child("value"))
    return found


def _check_quantities(raw: Any, path: Path, ceiling: dict[str, Any], floor: dict[str, Any], found: Findings
                      ) -> dict[str, Any]:
    parsed: dict[str, Any] = {}
    if raw is None:
        return parsed
    if not isinstance(raw, dict):
        found.error(invalid(path, raw, "must be a map of resource names to quantities"), rule="sidecar.resources")
        return parsed
    supported = fb.policy().resource_names
    for resource, value in raw.items():
        at = path.key(str(resource))
        q = parse_quantity(value)
        if resource not in supported:
            found.error(unsupported(at, resource, supported), rule="sidecar.resources")
        elif q is None:
            found.error(invalid(at, value, f"must match the regular expression {QUANTITY_FORMAT}"),
                        rule="sidecar.resources")
        elif q < 0:
            found.error(invalid(at, value, "must be greater than or equal to 0"), rule="sidecar.resources")
        elif resource in ceiling and q > ceiling[resource]:
            found.error(invalid(at, value, f"must be at most {_quantity_text(ceiling[resource])}, the "
                                                       "ceiling the operator sets for audit sidecars"),
                        rule="sidecar.resource-ceiling")
        elif resource in floor and q < floor[resource]:
            found.error(invalid(at, value, f"must be at least {_quantity_text(floor[resource])}: below "
                                                       "that fluent-bit falls behind or is killed, and records are "
                                                       "lost"), rule="sidecar.resource-floor")
        else:
            parsed[resource] = q
    return parsed


def _quantity_text(q: Any) -> str:
    for suffix, power in (("Gi", 3), ("Mi", 2), ("Ki", 1)):
        if q >= 1024 ** power and q % (1024 ** power) == 0:
            return f"{q // (1024 ** power)}{suffix}"
    if q < 1 and (q * 1000) == (q * 1000).to_integral_value():
        return f"{int(q * 1000)}m"
    return f"{q.normalize():f}"


def _check_resources(raw: Any, path: Path, ctx: SidecarContext) -> Findings:
    """Requests and limits, each merged with the defaults as the sidecar gets them (desired_pod.py)."""
    found = Findings()
    if not found.present_as(raw, dict, path, "must be a ResourceRequirements map with `requests` and `limits`"):
        return found
    ceiling = ctx.allowances.resource_ceiling()
    requests = _check_quantities(raw.get("requests"), path.child("requests"), ceiling, {}, found)
    limits = _check_quantities(raw.get("limits"), path.child("limits"), ceiling, fb.policy().floor, found)
    default = defaults()["sidecar"]["resources"]
    all_limits = {**{r: parse_quantity(q) for r, q in default["limits"].items()}, **limits}
    shown_limits = {**default["limits"], **(raw.get("limits") if isinstance(raw.get("limits"), dict) else {})}
    for resource, request in requests.items():
        if resource in all_limits and request > all_limits[resource]:
            found.error(invalid(path.child("requests").key(resource), raw["requests"][resource],
                                f"must be less than or equal to {resource} limit of {shown_limits[resource]}"),
                        rule="sidecar.resources")
    return found


def check_sidecar(raw: Any, path: Path, ctx: SidecarContext = DEFAULT_CONTEXT) -> Findings:
    """Every rule for `auditLogging.sidecar`.

    Memoised on the map's JSON text and the context: KKP updates Clusters all the time (status,
    finalizers) with the same sidecar map, and every update is admitted again.
    """
    try:
        text = json.dumps(raw, sort_keys=False, separators=(",", ":"))
    except (TypeError, ValueError):  # not JSON (YAML dates, ...): no memo, the rules say what is wrong
        return _check_sidecar(raw, path, ctx)
    key = (text, path, ctx.cluster_id, ctx.namespace, ctx.keep_records, ctx.allowances.key())
    hit = _MEMO.get(key)
    if hit is None:
        found = _check_sidecar(raw, path, ctx)
        hit = (tuple(found.errors), tuple(found.warnings), tuple(found.warning_rules))
        with _MEMO_LOCK:  # the reconciler's thread validates too
            _MEMO[key] = hit
            if len(_MEMO) > _MEMO_SIZE:
                _MEMO.pop(next(iter(_MEMO)))  # the oldest entry
    return Findings(list(hit[0]), list(hit[1]), list(hit[2]))


_MEMO: dict[tuple[Hashable, ...], tuple[tuple[FieldError, ...], tuple[str, ...], tuple[str, ...]]] = {}
_MEMO_SIZE = 4096
_MEMO_LOCK = threading.Lock()


def _check_sidecar(raw: Any, path: Path, ctx: SidecarContext) -> Findings:
    found = Findings()
    if not found.present_as(raw, dict, path, "must be a map with `resources`, `extraEnvs` and `config`"):
        return found
    env = sidecar_env(raw, ctx.cluster_id)
    found.merge(_check_resources(raw.get("resources"), path.child("resources"), ctx))
    found.merge(_check_extra_envs(raw.get("extraEnvs"), path.child("extraEnvs")))
    config = raw.get("config")
    config_path = path.child("config")
    if not found.present_as(config, dict, config_path, "must be a map with `service`, `filters` and `outputs`"):
        return found
    found.merge(_check_service(config.get("service"), config_path.child("service"), env, ctx))
    found.merge(_check_plugin_list(config.get("filters"), config_path.child("filters"), "filters", env, ctx))
    found.merge(_check_plugin_list(config.get("outputs"), config_path.child("outputs"), "outputs", env, ctx))
    return found
