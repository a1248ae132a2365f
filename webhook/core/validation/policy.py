"""Would kube-apiserver load this audit policy (`--audit-policy-file`)?

Mirrors k8s.io/apiserver/pkg/apis/audit/validation and the policy loader, which refuses a
policy without rules. Unknown fields are dropped by kube-apiserver, so they only warn.
"""

from __future__ import annotations

import re
from typing import Any

from webhook.core import yamlio
from webhook.core.validation.errors import Findings, Path, invalid, required, unsupported

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
API_VERSION = "audit.k8s.io/v1"
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_POLICY_FIELDS = {"apiVersion", "kind", "metadata", "rules", "omitStages", "omitManagedFields"}
_RULE_FIELDS = {"level", "users", "userGroups", "verbs", "resources", "namespaces", "nonResourceURLs",
                "omitStages", "omitManagedFields"}
_GROUP_RESOURCE_FIELDS = {"group", "resources", "resourceNames"}


def _string_list(raw: Any, path: Path, found: Findings) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(v, str) for v in raw):
        found.error(invalid(path, raw, "must be a list of strings"), rule="policy.shape")
        return []
    return raw


def _unknown_fields(raw: dict[str, Any], known: set[str], path: Path, found: Findings) -> None:
    for key in raw:
        if key not in known:
            found.warn(path.child(str(key)), "unknown field, ignored by kube-apiserver")


def _check_stages(raw: Any, path: Path, found: Findings) -> None:
    for i, stage in enumerate(_string_list(raw, path, found)):
        if stage not in STAGES:
            found.error(unsupported(path.index(i), stage, STAGES), rule="policy.stages")


def _check_resources(raw: Any, path: Path, found: Findings) -> int:
    if raw is None:
        return 0
    if not isinstance(raw, list):
        found.error(invalid(path, raw, "must be a list of {group, resources, resourceNames}"), rule="policy.resources")
        return 0
    for i, gr in enumerate(raw):
        gr_path = path.index(i)
        if not isinstance(gr, dict):
            found.error(invalid(gr_path, gr, "must be a map with group, resources and resourceNames"),
                        rule="policy.resources")
            continue
        _unknown_fields(gr, _GROUP_RESOURCE_FIELDS, gr_path, found)
        group = gr.get("group", "")
        if not isinstance(group, str):
            found.error(invalid(gr_path.child("group"), group, "must be a string"), rule="policy.resources")
        elif group not in ("", "*") and (len(group) > 253 or not _DNS1123_SUBDOMAIN.match(group)):
            found.error(invalid(gr_path.child("group"), group, 'must be "" (the core group), "*" or a lowercase '
                                "DNS-1123 subdomain such as \"apps\" (no version)"), rule="policy.resources")
        resources = _string_list(gr.get("resources"), gr_path.child("resources"), found)
        names = _string_list(gr.get("resourceNames"), gr_path.child("resourceNames"), found)
        if names and not resources:
            found.error(invalid(gr_path.child("resourceNames"), names,
                                "using resourceNames requires at least one resource"), rule="policy.resources")
    return len(raw)


def _check_rule(rule: Any, path: Path, found: Findings) -> None:
    if not isinstance(rule, dict):
        found.error(invalid(path, rule, "must be a map with at least `level`"), rule="policy.rule-shape")
        return
    _unknown_fields(rule, _RULE_FIELDS, path, found)
    level = rule.get("level")
    if level in (None, ""):
        found.error(required(path.child("level"), "one of " + ", ".join(LEVELS)), rule="policy.level")
    elif level not in LEVELS:
        found.error(unsupported(path.child("level"), level, LEVELS), rule="policy.level")
    for field in ("users", "userGroups", "verbs"):
        _string_list(rule.get(field), path.child(field), found)
    namespaces = _string_list(rule.get("namespaces"), path.child("namespaces"), found)
    urls_path = path.child("nonResourceURLs")
    urls = _string_list(rule.get("nonResourceURLs"), urls_path, found)
    for i, url in enumerate(urls):
        if url == "*":
            continue
        if not url.startswith("/"):
            found.error(invalid(urls_path.index(i), url, "non-resource URL rules must begin with a '/' character"),
                        rule="policy.non-resource-urls")
        if url and "*" in url[:-1]:
            found.error(invalid(urls_path.index(i), url,
                                "non-resource URL wildcards '*' must be the final character of the rule"),
                        rule="policy.non-resource-urls")
    n_resources = _check_resources(rule.get("resources"), path.child("resources"), found)
    _check_stages(rule.get("omitStages"), path.child("omitStages"), found)
    if urls and (n_resources or namespaces):
        found.error(invalid(urls_path, urls, "rules cannot apply to both regular resources and non-resource URLs"),
                    rule="policy.non-resource-urls")


def check_policy(doc: Any, path: Path) -> Findings:
    """Check a parsed audit policy."""
    found = Findings()
    if not isinstance(doc, dict):
        found.error(invalid(path, type(doc).__name__, f"must be an {API_VERSION} Policy"), rule="policy.document")
        return found
    if doc.get("apiVersion") != API_VERSION:
        found.error(unsupported(path.child("apiVersion"), doc.get("apiVersion"), [API_VERSION]), rule="policy.document")
    if doc.get("kind") != "Policy":
        found.error(unsupported(path.child("kind"), doc.get("kind"), ["Policy"]), rule="policy.document")
    _unknown_fields(doc, _POLICY_FIELDS, path, found)
    _check_stages(doc.get("omitStages"), path.child("omitStages"), found)
    rules = doc.get("rules")
    if not isinstance(rules, list) or not rules:
        found.error(required(path.child("rules"), "a policy needs at least one rule, e.g. `- level: Metadata`"),
                    rule="policy.document")
        return found
    for i, rule in enumerate(rules):
        _check_rule(rule, path.child("rules").index(i), found)
    return found


def check_policy_text(text: Any, path: Path) -> Findings:
    """Check the text of a policy file (the `policy.yaml` key of `audit-config`)."""
    if not isinstance(text, str):
        found = Findings()
        found.error(invalid(path, text, "must be the text of an audit policy"), rule="policy.document")
        return found
    try:
        doc = yamlio.load(text)
    except yamlio.TooLarge as exc:
        found = Findings()
        found.error(invalid(path, "<policy.yaml>", str(exc)), rule="policy.size")
        return found
    except yamlio.YAMLError as exc:
        found = Findings()
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        found.error(invalid(path, "<policy.yaml>", f"is not valid YAML{where}"), rule="policy.yaml")
        return found
    return check_policy(doc, path)
