"""Which apiserver Pods the injecting webhook must see even when it is down. Pure.

The ValidatingWebhookConfiguration judges `audit-config` the same way: `validate-config.` (Fail)
for the audited namespaces, `validate-config-other.` (Ignore) for the rest, so that with the
webhook down KKP, which writes `audit-config` before the Deployment, still creates new control
planes. The MutatingWebhookConfiguration has three webhooks, told apart by name:

- `inject.`: failurePolicy Fail, for the namespaces of clusters that need injection. With the
  webhook down, their apiserver Pods do not start without their audit configuration.
- `inject-marked.`: Fail, for any other apiserver Pod that already carries audit settings (the
  `audit-logs` container or an `--audit-` flag, as KKP renders them), so a cluster created while
  this list was stale is still not started half-configured.
- `inject-other.`: Ignore, for the rest: with the webhook down, control planes that need nothing
  from us still start.

The reconciler's leader keeps the namespace lists equal to the clusters' settings.
"""

from __future__ import annotations

from typing import Any

NAME_KEY = "kubernetes.io/metadata.name"
# An `In` list may not be empty; no namespace has this name.
NONE_PLACEHOLDER = "audit-webhook-no-audited-namespace"
# Webhooks for the audited namespaces (Fail), and for the others, by name.
FAIL_PREFIXES = ("inject.", "validate-config.", "protect-pod.")
OTHERS_PREFIXES = ("inject-", "validate-config-")


def wanted_selector(webhook_name: str, own_namespace: str, audited: list[str]) -> dict[str, Any] | None:
    """The namespaceSelector a webhook of ours should have, or None for webhooks not ours to steer."""
    if webhook_name.startswith(FAIL_PREFIXES):
        values = sorted(set(audited) - {own_namespace}) or [NONE_PLACEHOLDER]
        return {"matchExpressions": [{"key": NAME_KEY, "operator": "In", "values": values}]}
    if webhook_name.startswith(OTHERS_PREFIXES):
        return {"matchExpressions": [{"key": NAME_KEY, "operator": "NotIn",
                                      "values": sorted({own_namespace, *audited})}]}
    return None


def selector_patch(configuration: dict[str, Any], own_namespace: str, audited: list[str]) -> dict[str, Any] | None:
    """A strategic-merge patch (webhooks merge by name) of the namespaceSelectors that differ, or None."""
    changes = []
    for hook in configuration.get("webhooks") or []:
        if not isinstance(hook, dict) or not isinstance(hook.get("name"), str):
            continue
        wanted = wanted_selector(hook["name"], own_namespace, audited)
        if wanted is not None and hook.get("namespaceSelector") != wanted:
            changes.append({"name": hook["name"], "namespaceSelector": wanted})
    return {"webhooks": changes} if changes else None
