"""Rules for `spec.auditLogging`, the same on a Cluster and on a Seed."""

from __future__ import annotations

from typing import Any

from webhook.core import presets
from webhook.core.validation.errors import Findings, Path, invalid, unsupported
from webhook.core.validation.sidecar import DEFAULT_CONTEXT, SidecarContext, check_sidecar
from webhook.core.validation.webhook_backend import SecretRef, Secrets, check_webhook_backend

_FIELDS = ("enabled", "policyPreset", "sidecar", "webhookBackend")


def check_audit_logging(
    raw: Any, path: Path, *, default_namespace: str, own_namespace: str | None, secrets: Secrets | None,
    sidecar: SidecarContext = DEFAULT_CONTEXT, seed_secrets: frozenset[SecretRef] = frozenset(),
) -> Findings:
    """Every rule for one `auditLogging` map; `sidecar` says who wrote it and what the Seed allows."""
    found = Findings()
    if not found.present_as(raw, dict, path, "must be a map with " + ", ".join(f"`{f}`" for f in _FIELDS)):
        return found
    for key in raw:
        if key not in _FIELDS:
            found.warn(path.child(str(key)), "unknown field, ignored")
    enabled = raw.get("enabled")
    if enabled is not None and not isinstance(enabled, bool):
        found.error(invalid(path.child("enabled"), enabled, "must be true or false"), rule="audit.enabled-bool")
    preset = raw.get("policyPreset")
    if preset is not None and preset not in presets.SUPPORTED_VALUES:
        found.error(unsupported(path.child("policyPreset"), preset, presets.SUPPORTED_VALUES),
                    rule="audit.preset-supported")
    found.merge(check_sidecar(raw.get("sidecar"), path.child("sidecar"), sidecar))
    found.merge(check_webhook_backend(raw.get("webhookBackend"), path.child("webhookBackend"),
                                      default_namespace=default_namespace, own_namespace=own_namespace,
                                      secrets=secrets, seed_secrets=seed_secrets))
    return found
