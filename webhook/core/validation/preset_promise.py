"""Whether an audit policy keeps what a preset promises to record. Pure.

While a Cluster names a preset, its `audit-config` may hold any text that kube-apiserver loads
and that records at least what the preset promises (`webhook/data/preset-promises.yaml`), not
only our own text byte for byte: KKP's controllers write their own text for each preset.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from webhook.core import yamlio
from webhook.core.policy_eval import AuditRequest, evaluate

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
Promise = tuple[AuditRequest, str]


def _rows(raw: list[Any]) -> list[list[str]]:
    # A YAML alias (recommended: [*minimal, ...]) nests one preset's rows in another's.
    out: list[list[str]] = []
    for row in raw:
        out.extend(_rows(row) if row and isinstance(row[0], list) else [row])
    return out


@cache
def promises() -> dict[str, tuple[Promise, ...]]:
    """Each preset's promised (request, minimum level) pairs."""
    text = resources.files("webhook").joinpath("data", "preset-promises.yaml").read_text(encoding="utf-8")
    out: dict[str, tuple[Promise, ...]] = {}
    for preset, raw in yamlio.load(text).items():
        pairs = []
        for verb, resource, group, level in _rows(raw):
            name, _, sub = resource.partition("/")
            pairs.append((AuditRequest(verb=verb, resource=name, subresource=sub, group=group, namespace="x",
                                       name="y"), level))
        out[preset] = tuple(pairs)
    return out


def describe(req: AuditRequest) -> str:
    """`create pods/exec`, `patch apps deployments`: a request as the messages name it."""
    resource = f"{req.resource}/{req.subresource}" if req.subresource else req.resource
    return f"{req.verb} {req.group + ' ' if req.group else ''}{resource}"


def broken_promises(policy: dict[str, Any], preset: str) -> list[tuple[AuditRequest, str, str]]:
    """(request, level the policy gives, level the preset promises) for each promise it breaks."""
    broken = []
    for req, floor in promises().get(preset, ()):
        level = evaluate(policy, req).level
        if LEVELS.index(level) < LEVELS.index(floor):
            broken.append((req, level, floor))
    return broken
