"""Pydantic models of the parts of KKP objects the webhook reads.

Raw objects are validated field by field first (webhook/validation), so these models only
ever see data of the right shape; unknown fields are ignored here and kept in the raw object.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator


class _Model(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True, coerce_numbers_to_str=True)

    @model_validator(mode="before")
    @classmethod
    def _null_is_absent(cls, data: Any) -> Any:
        # YAML's `extraEnvs:` with nothing after it is null; validation treats it as absent, so must we.
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None}
        return data


class EnvVar(_Model):
    """A sidecar environment variable; only `value` is supported."""

    name: str
    value: str = ""


class SidecarConfig(_Model):
    """The user's sections of the fluent-bit configuration."""

    service: dict[str, str] = Field(default_factory=dict)
    filters: list[dict[str, str]] = Field(default_factory=list)
    outputs: list[dict[str, str]] = Field(default_factory=list)


class ResourceRequirements(_Model):
    """corev1 ResourceRequirements, the parts a sidecar uses."""

    requests: dict[str, str] = Field(default_factory=dict)
    limits: dict[str, str] = Field(default_factory=dict)


class Sidecar(_Model):
    """`auditLogging.sidecar`."""

    resources: ResourceRequirements | None = None
    extraEnvs: list[EnvVar] = Field(default_factory=list)
    config: SidecarConfig = Field(default_factory=SidecarConfig)


class SecretReference(_Model):
    """corev1 SecretReference."""

    name: str
    namespace: str = ""


class WebhookBackend(_Model):
    """`auditLogging.webhookBackend` and a datacenter's `enforcedAuditWebhookSettings`."""

    auditWebhookConfig: SecretReference
    auditWebhookInitialBackoff: str = ""


class AuditLogging(_Model):
    """`spec.auditLogging` of a Cluster or a Seed."""

    enabled: bool = False
    policyPreset: str = ""
    sidecar: Sidecar = Field(default_factory=Sidecar)
    webhookBackend: WebhookBackend | None = None


def audit_logging(raw: Any) -> AuditLogging:
    """The model of a raw `auditLogging` map (absent means disabled)."""
    return AuditLogging.model_validate(raw or {})
