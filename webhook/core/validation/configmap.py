"""Rules for the `audit-config` ConfigMap: it must hold a policy kube-apiserver can load."""

from __future__ import annotations

from typing import Any

from webhook.core import names, presets, yamlio
from webhook.core.objects import dig, name_of
from webhook.core.settings import EffectiveSettings
from webhook.core.validation.errors import Findings, Path, forbidden, required
from webhook.core.validation.policy import check_policy_text
from webhook.core.validation.preset_promise import broken_promises, describe

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
        found.error(required(path, "the audit policy that kube-apiserver loads"), rule="policy.configmap-key")
        return found
    text = data[names.POLICY_KEY]
    # KKP writes a preset's text only while audit logging is on (otherwise its default policy), so
    # the promise binds only then; any policy kube-apiserver loads is accepted otherwise.
    preset = owner.preset if owner is not None and owner.enabled else ""
    if preset and text == presets.policy_text(preset):
        return found
    found.merge(check_policy_text(text, path))
    if preset and not found.errors:
        # Not our text (KKP's controllers write their own): accepted when it keeps the preset's promise.
        broken = broken_promises(yamlio.load(text), preset)
        if broken:
            req, level, floor = broken[0]
            found.error(forbidden(path, f'cluster "{owner.cluster_id}" uses the audit policy preset "{preset}", which '
                                        f'records "{describe(req)}" at {floor} or more; this policy gives {level}'
                                        f"{f' (and {len(broken) - 1} more short)' if len(broken) > 1 else ''}. "
                                        'To write your own, first set spec.auditLogging.policyPreset to "" on the '
                                        "Cluster"), rule="policy.preset-owned")
    return found
