"""`audit-webhook explain`: which audit level a policy gives a request, and why. Pure."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from webhook import names, presets, yamlio
from webhook.policy_eval import AuditRequest, evaluate


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
