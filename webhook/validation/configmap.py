"""Rules for the `audit-config` ConfigMap: it must hold a policy kube-apiserver can load."""

from __future__ import annotations

from typing import Any

from webhook import names, presets
from webhook.objects import dig, name_of
from webhook.settings import EffectiveSettings
from webhook.validation.errors import Findings, Path, forbidden, required
from webhook.validation.policy import check_policy_text

_DATA = Path("data")


def check_configmap(configmap: Any, owner: EffectiveSettings | None = None) -> Findings:
    """Every rule for a ConfigMap; only `audit-config` has any.

    `owner` is the effective settings of the cluster whose namespace holds it: while a preset
    manages the policy, only the preset's own text is accepted.
    """
    found = Findings()
    if name_of(configmap) != names.CONFIGMAP_AUDIT_CONFIG:
        return found
    data = dig(configmap, "data")
    path = _DATA.key(names.POLICY_KEY)
    if not isinstance(data, dict) or names.POLICY_KEY not in data:
        found.error(required(path, "the audit policy that kube-apiserver loads"))
        return found
    if owner is not None and owner.preset and owner.needs_injection:
        if data[names.POLICY_KEY] != presets.policy_text(owner.preset):
            found.error(forbidden(path, f'cluster "{owner.cluster_id}" uses the audit policy preset "{owner.preset}", '
                                        "which owns this policy; to write your own, first set "
                                        'spec.auditLogging.policyPreset to "" on the Cluster'))
        return found
    found.merge(check_policy_text(data[names.POLICY_KEY], path))
    return found
