"""Rules for a `Cluster`: its own `spec.auditLogging` and how its datacenter overrides it."""

from __future__ import annotations

from typing import Any

from webhook.core import names
from webhook.core.objects import cluster_namespace, datacenter_of, datacenter_spec, dig, name_of, namespace_of
from webhook.core.operator_config import OperatorConfig
from webhook.core.validation.audit_logging import check_audit_logging
from webhook.core.validation.context import NO_CONTEXT, Context
from webhook.core.validation.errors import Findings, Path, invalid, required
from webhook.core.validation.fluentbit_policy import seed_allowances
from webhook.core.validation.sidecar import SidecarContext
from webhook.core.validation.webhook_backend import SecretRef, secret_ref

_SPEC = Path("spec")
_AUDIT = _SPEC.child("auditLogging")


def check_cluster(cluster: Any, ctx: Context = NO_CONTEXT) -> Findings:
    """Every rule for a Cluster, given the Seed of its datacenter in `ctx` (or None)."""
    seed = ctx.seed
    found = Findings()
    if not isinstance(cluster, dict) or not isinstance(cluster.get("metadata"), dict):
        found.error(required(Path("metadata"), "a Cluster needs metadata.name"), rule="object.metadata")
        return found
    if not name_of(cluster):
        found.error(required(Path("metadata").child("name")), rule="object.metadata")
        return found
    spec = cluster.get("spec")
    if spec is not None and not isinstance(spec, dict):
        found.error(invalid(_SPEC, spec, "must be a map"), rule="object.spec-map")
        return found
    namespace = cluster_namespace(cluster)
    raw = dig(cluster, "spec", "auditLogging")
    found.merge(check_audit_logging(raw, _AUDIT, default_namespace=namespace, own_namespace=namespace,
                                    secrets=ctx.secrets, sidecar=_sidecar_context(cluster, seed, ctx.config),
                                    seed_secrets=_seed_secrets(cluster, seed)))
    _warn_overrides(cluster, raw if isinstance(raw, dict) else {}, seed, found)
    return found


def _seed_secrets(cluster: dict[str, Any], seed: dict[str, Any] | None) -> frozenset[SecretRef]:
    """The Secrets of the Seed's namespace that KKP's defaulting may copy into this Cluster: the
    datacenter's enforced webhook backend, and the Seed's own where the datacenter enforces."""
    if seed is None:
        return frozenset()
    namespace = namespace_of(seed) or "kubermatic"
    dc_spec = datacenter_spec(seed, datacenter_of(cluster))
    refs = [secret_ref(dc_spec.get("enforcedAuditWebhookSettings"), namespace)]
    if dc_spec.get("enforceAuditLogging") is True:
        refs.append(secret_ref(dig(seed, "spec", "auditLogging", "webhookBackend"), namespace))
    return frozenset(r for r in refs if r is not None)


def _sidecar_context(cluster: dict[str, Any], seed: dict[str, Any] | None, config: OperatorConfig) -> SidecarContext:
    # Errors in the Seed's annotations are the Seed's to report; a Cluster gets what parses.
    allowances, _ = seed_allowances(seed)
    enforced = datacenter_spec(seed, datacenter_of(cluster)).get("enforceAuditLogging") is True
    opted_out = dig(cluster, "metadata", "annotations", names.OPT_OUT_ANNOTATION) == "true"
    # Under enforcement with the Seed's own settings the Cluster's maps are not used at all.
    tenant_maps_enforced = enforced and not opted_out and not dig(seed, "spec", "auditLogging")
    return SidecarContext(cluster_id=name_of(cluster), allowances=allowances, keep_records=tenant_maps_enforced,
                          namespace=cluster_namespace(cluster), config=config)


def _warn_overrides(cluster: dict[str, Any], raw: dict[str, Any], seed: dict[str, Any] | None, found: Findings) -> None:
    dc = datacenter_of(cluster)
    dc_spec = datacenter_spec(seed, dc)
    annotation_path = Path("metadata").child("annotations")
    annotation = dig(cluster, "metadata", "annotations", names.OPT_OUT_ANNOTATION)
    out = annotation == "true"
    if annotation is not None and not out:
        found.warn(annotation_path, f'{names.OPT_OUT_ANNOTATION}: only "true" opts out')
    enforced = dc_spec.get("enforceAuditLogging") is True
    if enforced and out:
        found.warn(annotation_path, f'the cluster opts out of audit logging enforced by datacenter "{dc}"')
    elif enforced and isinstance(dig(seed, "spec", "auditLogging"), dict) and raw:
        found.warn(_AUDIT, f'ignored: datacenter "{dc}" enforces audit logging with the Seed\'s settings')
    elif enforced and raw.get("enabled") is False:
        found.warn(_AUDIT.child("enabled"), f'ignored: datacenter "{dc}" enforces audit logging')
    if dc_spec.get("enforcedAuditWebhookSettings") and not out and raw.get("webhookBackend"):
        found.warn(_AUDIT.child("webhookBackend"), f'ignored: datacenter "{dc}" enforces its own webhook backend')
    effectively_on = raw.get("enabled") is True or (enforced and not out)
    if not effectively_on and raw.get("sidecar"):
        found.warn(_AUDIT.child("sidecar"), "has no effect while audit logging is off")
    if not effectively_on and raw.get("policyPreset") and not raw.get("webhookBackend"):
        found.warn(_AUDIT.child("policyPreset"), "has no effect while audit logging and the webhook backend are off")
