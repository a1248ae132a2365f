"""The settings hash: a digest of what is rendered for a cluster's apiservers. Pure.

It drives rollouts (standalone) and drift (`report`), so it must change exactly when something
kube-apiserver or the sidecar would run differently changes: the injected sidecar, volumes,
mounts and flags, the fluent-bit configuration text and the preset's policy text. What the apiserver
reads from objects whose content the settings do not hold (the webhook backend's Secret, a user's
own policy) is in `mounted_digest`, which the reconciler puts beside it on the pod template. It is taken over
those outputs, not over the inputs that produce them, so a new field in the options, a refactoring
or an upgrade that renders the same bytes changes nothing, while an edit of `defaults.yaml` or of
a preset file rolls exactly the apiservers whose output it changes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from webhook.core import presets
from webhook.core.fluentbit import render
from webhook.core.options import Options
from webhook.core.settings import EffectiveSettings


def rendered(settings: EffectiveSettings, options: Options, volumes: list[Any], apiserver_mounts: list[Any],
             flags: dict[str, str], sidecar: Any) -> dict[str, Any]:
    """Everything the apiserver Pod and the files behind its volumes get, as plain data."""
    files: dict[str, str] = {}
    if settings.enabled:
        key, text = render(settings.sidecar.config, options, settings.keeps_default_output)
        files[key] = text
    if settings.needs_injection and settings.preset:
        # Without a preset the policy is the user's ConfigMap: mounted_digest covers its text.
        files["policy.yaml"] = presets.policy_text(settings.preset)
    return {"volumes": volumes, "apiserverMounts": [list(m) for m in apiserver_mounts], "flags": flags,
            "sidecar": sidecar, "files": files}


def digest(output: dict[str, Any]) -> str:
    """A short stable hash of `rendered` output (canonical JSON, SHA-256)."""
    blob = json.dumps(output, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def mounted_digest(webhook_config: bytes | None, user_policy: str | None) -> str:
    """A digest of what kube-apiserver reads only at start from objects whose content the settings do
    not hold: the webhook backend's webhook.yaml (from its Secret) and a user's own policy (an
    audit-config without a preset). "" when there is neither. Only this digest of the bytes is
    ever written anywhere: the Secret's content is not."""
    if webhook_config is None and user_policy is None:
        return ""
    parts = {"webhook.yaml": hashlib.sha256(webhook_config).hexdigest() if webhook_config is not None else None,
             "policy.yaml": hashlib.sha256(user_policy.encode()).hexdigest() if user_policy is not None else None}
    return digest(parts)
