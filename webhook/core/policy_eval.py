"""Which audit level a policy gives a request, with kube-apiserver's matching rules. Pure.

A port of k8s.io/apiserver/pkg/audit/policy/checker.go: the first rule that matches decides,
and a request no rule matches is not logged (level None).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class AuditRequest:
    """The attributes of a request that audit rules look at."""

    verb: str
    resource: str = ""  # "" for a non-resource request
    subresource: str = ""
    group: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""  # non-resource requests only, e.g. "/healthz"
    user: str = ""
    groups: tuple[str, ...] = field(default_factory=tuple)

    @property
    def is_resource_request(self) -> bool:
        """True for requests to a resource, False for a non-resource URL."""
        return bool(self.resource)


@dataclass(frozen=True)
class Match:
    """The level a request gets and the index of the rule that decided it (None: no rule)."""

    level: str
    rule: int | None


def _path_matches(path: str, spec: str) -> bool:
    if spec in ("*", path):
        return True
    return spec.endswith("*") and path.startswith(spec.rstrip("*"))


def _resource_matches(rule: dict[str, Any], req: AuditRequest) -> bool:
    if not req.is_resource_request:
        return False
    namespaces = rule.get("namespaces") or []
    if namespaces and req.namespace not in namespaces:
        return False
    group_resources = rule.get("resources") or []
    if not group_resources:
        return True
    combined = f"{req.resource}/{req.subresource}" if req.subresource else req.resource
    for gr in group_resources:
        if gr.get("group", "") not in (req.group, "*"):
            continue
        resources = gr.get("resources") or []
        if not resources:
            return True
        names = gr.get("resourceNames") or []
        if names and req.name not in names:
            continue
        for res in resources:
            if res in (combined, "*"):
                return True
            if req.subresource and res.startswith("*/") and req.subresource == res[2:]:
                return True
            if res.endswith("/*") and req.resource == res[:-2]:
                return True
    return False


def rule_matches(rule: dict[str, Any], req: AuditRequest) -> bool:
    """Whether one policy rule applies to the request."""
    users = rule.get("users") or []
    if users and req.user not in users:
        return False
    groups = rule.get("userGroups") or []
    if groups and not set(groups) & set(req.groups):
        return False
    verbs = rule.get("verbs") or []
    if verbs and req.verb not in verbs:
        return False
    if rule.get("namespaces") or rule.get("resources"):
        return _resource_matches(rule, req)
    urls = rule.get("nonResourceURLs") or []
    if urls:
        return not req.is_resource_request and any(_path_matches(req.path, u) for u in urls)
    return True


def evaluate(policy: dict[str, Any], req: AuditRequest) -> Match:
    """The level the first matching rule gives, or None when no rule matches."""
    for i, rule in enumerate(policy.get("rules") or []):
        if rule_matches(rule, req):
            return Match(rule.get("level", "None"), i)
    return Match("None", None)
