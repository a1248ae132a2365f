"""Render the `audit-logs` sidecar's fluent-bit configuration. Pure.

Values are written verbatim: fluent-bit itself expands `${VAR}` from the sidecar's env at
start-up, after it has split the file into lines, so a variable can never add a line.
Keys and values reach this module only after validation has refused line breaks, brackets
and directives, which is what keeps the number of sections exactly what the maps ask for.
"""

from __future__ import annotations

from typing import Any

import yaml

from webhook.core import names
from webhook.core.defaults import defaults
from webhook.core.model import SidecarConfig
from webhook.core.options import FluentBitFormat, Options

Section = tuple[str, dict[str, str]]


def config_key(fmt: FluentBitFormat) -> str:
    """The Secret key (and file name under /etc/fluent-bit/) of a format."""
    return names.FLUENTBIT_YAML_KEY if fmt == "yaml" else names.FLUENTBIT_CLASSIC_KEY


def sections(config: SidecarConfig, options: Options, keep_default_output: bool = False) -> list[Section]:
    """The configuration as an ordered list of (SECTION, entries).

    `keep_default_output`: the cluster's outputs come in addition to the default one, not instead
    (where a datacenter enforces audit logging, the cluster may add destinations, not replace them).
    """
    data = defaults()["fluentBit"]
    out: list[Section] = []
    if config.service:
        out.append(("SERVICE", dict(config.service)))
    tail = {
        "Name": "tail",
        "Path": names.AUDIT_LOG_PATH,
        "DB": f"{names.AUDIT_LOG_DIR}/fluentbit.db",
        **{k: str(v) for k, v in data["input"].items() if k != "Name"},
    }
    out.append(("INPUT", tail))
    out.extend(("FILTER", dict(f)) for f in config.filters)
    if options.cluster_id_record:
        # Last, so that no filter of the cluster's can forge, move or remove the field.
        out.append(("FILTER", {k: str(v) for k, v in data["clusterIdFilter"].items()}))
    default = [{k: str(v) for k, v in data["defaultOutput"].items()}]
    outputs = [*default, *config.outputs] if keep_default_output else (config.outputs or default)
    out.extend(("OUTPUT", dict(o)) for o in outputs)
    return out


def render_classic(config: SidecarConfig, options: Options, keep_default_output: bool = False) -> str:
    """fluent-bit's classic format: `[SECTION]` headers, indented `Key value` lines."""
    blocks = []
    for header, entries in sections(config, options, keep_default_output):
        lines = [f"[{header}]", *(f"    {key} {value}" for key, value in entries.items())]
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"


def _yaml_entries(entries: dict[str, str]) -> dict[str, Any]:
    # YAML keys are lower case by convention; fluent-bit keys are case-insensitive, so keys that
    # differ only in case (two `Record` lines) become one key with a list of values.
    out: dict[str, Any] = {}
    for key, value in entries.items():
        lower = key.lower()
        if lower not in out:
            out[lower] = value
        elif isinstance(out[lower], list):
            out[lower].append(value)
        else:
            out[lower] = [out[lower], value]
    return out


def render_yaml(config: SidecarConfig, options: Options, keep_default_output: bool = False) -> str:
    """fluent-bit's YAML format, written by a YAML serializer (no hand-made quoting)."""
    doc: dict[str, Any] = {}
    pipeline: dict[str, list[dict[str, Any]]] = {"inputs": [], "filters": [], "outputs": []}
    for header, entries in sections(config, options, keep_default_output):
        if header == "SERVICE":
            doc["service"] = _yaml_entries(entries)
        else:
            pipeline[f"{header.lower()}s"].append(_yaml_entries(entries))
    doc["pipeline"] = {k: v for k, v in pipeline.items() if v}
    return yaml.safe_dump(doc, sort_keys=False, allow_unicode=True, width=1 << 16)


def render(config: SidecarConfig, options: Options, keep_default_output: bool = False) -> tuple[str, str]:
    """(Secret key, file text) in the format the options choose."""
    if options.fluentbit_format == "yaml":
        return names.FLUENTBIT_YAML_KEY, render_yaml(config, options, keep_default_output)
    return names.FLUENTBIT_CLASSIC_KEY, render_classic(config, options, keep_default_output)
