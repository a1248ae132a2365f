"""The effective audit settings of one user cluster, after datacenter enforcement: pure, no I/O."""

from __future__ import annotations

import hashlib
import json
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict

from webhook.core import names
from webhook.core.defaults import defaults
from webhook.core.model import Sidecar, WebhookBackend, audit_logging
from webhook.core.objects import cluster_namespace, datacenter_of, datacenter_spec, dig, name_of, namespace_of
from webhook.core.options import Options


class Origin(StrEnum):
    """Who decided a setting, for warnings and for the security team's report."""

    CLUSTER = "cluster"
    DATACENTER = "datacenter enforcement"
    SEED = "seed defaults"
    OPT_OUT = "cluster (opted out of datacenter enforcement)"


class ResolvedWebhook(BaseModel):
    """A webhook backend with the Secret's home resolved."""

    model_config = ConfigDict(frozen=True)

    secret_name: str
    # Where the Secret is kept; a Pod mounts the copy of the same name in its own namespace.
    secret_namespace: str
    initial_backoff: str


class EffectiveSettings(BaseModel):
    """What one cluster's apiserver must run with, after datacenter enforcement."""

    model_config = ConfigDict(frozen=True)

    cluster_id: str
    namespace: str
    datacenter: str
    enabled: bool
    preset: str
    sidecar: Sidecar
    webhook: ResolvedWebhook | None
    audit_origin: Origin
    webhook_origin: Origin | None
    paused: bool = False

    @property
    def needs_injection(self) -> bool:
        """Whether the apiserver Pod needs anything from us."""
        return self.enabled or self.webhook is not None

    @property
    def keeps_default_output(self) -> bool:
        """The cluster's own sidecar outputs add to the default one: its datacenter enforces audit logging."""
        return self.audit_origin is Origin.DATACENTER

    def legacy_hash(self, options: Options) -> str:
        """The settings hash of version 0.1 (over these settings and every option), still on the
        Pods and Deployments it injected or rolled; webhook/core/settings_hash.py has today's."""
        data = self.model_dump(mode="json", exclude={"audit_origin", "webhook_origin", "paused"})
        data["options"] = options.model_dump(mode="json")
        if self.keeps_default_output:  # only when set, so that no other cluster's hash changes
            data["keeps_default_output"] = True
        blob = json.dumps(data, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def opted_out(cluster: dict[str, Any]) -> bool:
    """Whether the cluster opts out of datacenter enforcement."""
    return dig(cluster, "metadata", "annotations", names.OPT_OUT_ANNOTATION) == "true"


def _resolve_webhook(backend: WebhookBackend | None, default_namespace: str) -> ResolvedWebhook | None:
    if backend is None:
        return None
    ref = backend.auditWebhookConfig
    return ResolvedWebhook(
        secret_name=ref.name,
        secret_namespace=ref.namespace or default_namespace,
        initial_backoff=backend.auditWebhookInitialBackoff or defaults()["webhookBackend"]["initialBackoff"],
    )


def effective_settings(cluster: dict[str, Any], seed: dict[str, Any] | None) -> EffectiveSettings:
    """The settings of `cluster`, given the Seed that holds its datacenter (or None).

    Both objects must have passed validation: this function trusts their shapes.
    """
    namespace = cluster_namespace(cluster)
    dc = datacenter_of(cluster)
    dc_spec = datacenter_spec(seed, dc)
    seed_namespace = namespace_of(seed) if seed else namespace
    out = opted_out(cluster)

    settings = audit_logging(dig(cluster, "spec", "auditLogging"))
    origin, webhook_namespace = Origin.CLUSTER, namespace
    if dc_spec.get("enforceAuditLogging") is True:
        seed_raw = dig(seed, "spec", "auditLogging")
        if out:
            origin = Origin.OPT_OUT
        elif seed_raw:
            settings = audit_logging(seed_raw).model_copy(update={"enabled": True})
            origin, webhook_namespace = Origin.SEED, seed_namespace
        else:
            settings = settings.model_copy(update={"enabled": True})
            origin = Origin.DATACENTER

    webhook = _resolve_webhook(settings.webhookBackend, webhook_namespace)
    webhook_origin = origin if webhook else None
    enforced_webhook = dc_spec.get("enforcedAuditWebhookSettings")
    if enforced_webhook and not out:
        webhook = _resolve_webhook(WebhookBackend.model_validate(enforced_webhook), seed_namespace)
        webhook_origin = Origin.DATACENTER

    return EffectiveSettings(
        cluster_id=name_of(cluster),
        namespace=namespace,
        datacenter=dc,
        enabled=settings.enabled,
        preset=settings.policyPreset,
        sidecar=settings.sidecar,
        webhook=webhook,
        audit_origin=origin,
        webhook_origin=webhook_origin,
        paused=dig(cluster, "spec", "pause") is True,
    )
