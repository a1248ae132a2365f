"""`audit-webhook explain`: which audit level a policy gives a request, and why. Pure."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import cache
from typing import Any

from webhook.core import names, presets, yamlio
from webhook.core.defaults import load_data
from webhook.core.policy_eval import AuditRequest, evaluate

# The verbs kube-apiserver records for resource requests, and the HTTP verbs of non-resource URLs.
RESOURCE_VERBS = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
NON_RESOURCE_VERBS = ("get", "post", "put", "patch", "delete", "head", "options")
_RESOURCE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


@cache
def known_groups() -> dict[str, frozenset[str]]:
    """API group -> the resources webhook/data/api-resources.yaml lists for it."""
    return {group: frozenset(resources) for group, resources in load_data("api-resources.yaml").items()}


# The subresources a CustomResourceDefinition can declare.
CUSTOM_SUBRESOURCES = ("scale", "status")


@cache
def known_subresources() -> dict[tuple[str, str], tuple[str, ...]]:
    """(API group, resource) -> the subresources webhook/data/api-subresources.yaml lists for it."""
    return {(group, resource): tuple(subs) for group, resources in load_data("api-subresources.yaml").items()
            for resource, subs in resources.items()}


def request_problem(verb: str, resource: str, group: str | None, path: str, subresource: str = "",
                    custom: bool = False) -> str:
    """Why `explain` cannot answer for this request as given ("" when it can), in words that say
    what would be accepted. `custom`: the user says the resource is a custom resource, which no
    list here holds."""
    verbs = NON_RESOURCE_VERBS if path else RESOURCE_VERBS
    if verb not in verbs:
        return f'--verb: Unsupported value: "{verb}": supported values: ' + ", ".join(f'"{v}"' for v in verbs)
    if path:
        return "" if path.startswith("/") else f'--path: Invalid value: "{path}": must start with "/"'
    if not _RESOURCE.match(resource):
        return (f'--resource: Invalid value: "{resource}": resources are lowercase plurals, '
                f'e.g. "{resource.lower()}"')
    if subresource and not _RESOURCE.match(subresource):
        return f'--subresource: Invalid value: "{subresource}": subresources are lowercase, e.g. "status"'
    if custom:
        if not group or "." not in group:
            return "--custom-resource: give the custom resource's --group, which has a dot in it"
        if subresource and subresource not in CUSTOM_SUBRESOURCES:
            return (f'--subresource: "{subresource}": a custom resource has only the subresources '
                    + ", ".join(f'"{s}"' for s in CUSTOM_SUBRESOURCES))
        return ""
    groups = known_groups()
    owners = _groups_with(resource)
    if group is None:
        if not owners:
            return (f'--resource: "{resource}" is not a resource explain knows: for a custom resource, give its '
                    "--group and --custom-resource")
        if len(owners) > 1 and "" not in owners:  # the core group's is the one meant without a group
            return f'--resource: "{resource}" is in several groups ({", ".join(repr(g) for g in owners)}): give --group'
        group = owners[0]
    elif group not in groups:
        known = f' ("{resource}" is in {", ".join(repr(g) for g in owners)})' if owners else ""
        return (f'--group: "{group}" is not an API group explain knows{known}; for a custom resource, add '
                "--custom-resource")
    elif resource not in groups[group]:
        return f'--resource: "{resource}" is not a resource of group "{group}"'
    subs = known_subresources().get((group, resource), ())
    if subresource and subresource not in subs:
        listed = ", ".join(f'"{s}"' for s in subs) if subs else "none"
        return f'--subresource: "{subresource}" is not a subresource of {resource} (it has {listed})'
    return ""


def _groups_with(resource: str) -> list[str]:
    """The known groups that have `resource`, sorted: the core group ("") first."""
    return sorted(g for g, resources in known_groups().items() if resource in resources)


def group_of(resource: str) -> str:
    """The group of a resource `request_problem` accepted without --group."""
    return _groups_with(resource)[0]


@dataclass(frozen=True)
class Explanation:
    """The level, the index of the deciding rule (None: no rule matched) and the rule itself."""

    level: str
    rule_index: int | None
    rule: dict[str, Any] | None
    source: str

    def as_dict(self) -> dict[str, Any]:
        """Plain data for `-o json`."""
        return asdict(self)

    def text(self) -> str:
        """The human answer."""
        if self.rule_index is None:
            return f"level: {self.level}\nrule:  none of the rules of {self.source} matches; not logged\n"
        rule = yamlio.dumps(self.rule).rstrip().replace("\n", "\n  ")
        return f"level: {self.level}\nrule:  rules[{self.rule_index}] of {self.source}\n  {rule}\n"


def policy_from_document(doc: Any) -> dict[str, Any]:
    """A Policy from a parsed policy file or an `audit-config` ConfigMap manifest."""
    if isinstance(doc, dict) and doc.get("kind") == "ConfigMap":
        text = (doc.get("data") or {}).get(names.POLICY_KEY)
        if not isinstance(text, str):
            raise ValueError(f'the ConfigMap has no data["{names.POLICY_KEY}"]')
        doc = yamlio.load(text)
    if not isinstance(doc, dict) or doc.get("kind") != "Policy":
        raise ValueError("not an audit.k8s.io/v1 Policy (or a ConfigMap holding one)")
    return doc


def explain(policy: dict[str, Any], request: AuditRequest, source: str) -> Explanation:
    """Evaluate `request` against `policy` with kube-apiserver's first-match semantics."""
    match = evaluate(policy, request)
    rule = policy["rules"][match.rule] if match.rule is not None else None
    return Explanation(match.level, match.rule, rule, source)


def explain_preset(preset: str, request: AuditRequest) -> Explanation:
    """`explain` against a preset's policy."""
    return explain(presets.policy(preset), request, f'preset "{preset}"')
