"""Rules for the `audit-config` ConfigMap: it must hold a policy kube-apiserver can load."""

from __future__ import annotations

from typing import Any

from webhook import names
from webhook.objects import dig, name_of
from webhook.validation.errors import Findings, Path, required
from webhook.validation.policy import check_policy_text

_DATA = Path("data")


def check_configmap(configmap: Any) -> Findings:
    """Every rule for a ConfigMap; only `audit-config` has any."""
    found = Findings()
    if name_of(configmap) != names.CONFIGMAP_AUDIT_CONFIG:
        return found
    data = dig(configmap, "data")
    if not isinstance(data, dict) or names.POLICY_KEY not in data:
        found.error(required(_DATA.key(names.POLICY_KEY), "the audit policy that kube-apiserver loads"))
        return found
    found.merge(check_policy_text(data[names.POLICY_KEY], _DATA.key(names.POLICY_KEY)))
    return found
