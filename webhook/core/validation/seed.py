"""Rules for a `Seed`: its audit defaults and every datacenter's enforcement settings."""

from __future__ import annotations

from typing import Any

from webhook.core.objects import dig, namespace_of
from webhook.core.validation.audit_logging import check_audit_logging
from webhook.core.validation.context import NO_CONTEXT, Context
from webhook.core.validation.errors import Findings, Path, duplicate, invalid
from webhook.core.validation.fluentbit_policy import seed_allowances
from webhook.core.validation.sidecar import SidecarContext
from webhook.core.validation.webhook_backend import check_webhook_backend

_DATACENTERS = Path("spec").child("datacenters")


def check_seed(seed: Any, ctx: Context = NO_CONTEXT) -> Findings:
    """Every rule for a Seed. Secrets without a namespace are looked up in the Seed's namespace."""
    found = Findings()
    if not isinstance(seed, dict):
        found.error(invalid(Path(""), seed, "must be a Seed object"), rule="object.seed")
        return found
    namespace = namespace_of(seed) or "kubermatic"
    audit = dig(seed, "spec", "auditLogging")
    audit_path = Path("spec").child("auditLogging")
    allowances, annotation_errors = seed_allowances(seed)
    for error in annotation_errors:
        found.error(error, rule="seed.annotations")
    # The Seed's defaults are the operator's own: they may change records, within the same allowances.
    found.merge(check_audit_logging(audit, audit_path, default_namespace=namespace, own_namespace=None,
                                    secrets=ctx.secrets,
                                    sidecar=SidecarContext(allowances=allowances, config=ctx.config)))
    datacenters = dig(seed, "spec", "datacenters")
    if datacenters is None:
        return found
    if not isinstance(datacenters, dict):
        found.error(invalid(_DATACENTERS, datacenters, "must be a map of datacenter names to datacenters"),
                    rule="seed.datacenters")
        return found
    any_enforced = False
    for dc, body in datacenters.items():
        spec_path = _DATACENTERS.key(str(dc)).child("spec")
        spec = dig(body, "spec")
        if spec is None:
            continue
        if not isinstance(spec, dict):
            found.error(invalid(spec_path, spec, "must be a map"), rule="seed.datacenters")
            continue
        enforce = spec.get("enforceAuditLogging")
        if enforce is not None and not isinstance(enforce, bool):
            found.error(invalid(spec_path.child("enforceAuditLogging"), enforce, "must be true or false"),
                        rule="seed.enforce-bool")
        any_enforced = any_enforced or enforce is True
        found.merge(check_webhook_backend(spec.get("enforcedAuditWebhookSettings"),
                                          spec_path.child("enforcedAuditWebhookSettings"),
                                          default_namespace=namespace, own_namespace=None, secrets=ctx.secrets))
    if any_enforced and isinstance(audit, dict) and audit.get("enabled") is False:
        found.warn(audit_path.child("enabled"), "forced to true in the datacenters that enforce audit logging")
    check_datacenters_unique(datacenters, ctx.datacenter_holders, found)
    return found


def check_datacenters_unique(datacenters: dict[Any, Any], holders: tuple[tuple[str, str], ...],
                             found: Findings) -> None:
    """KKP looks a datacenter up by name across all Seeds: a second definition would make which
    Seed's enforcement applies depend on the order Seeds are listed in. (The UPDATE ratchet judges
    the old Seed with the same `holders`: only the datacenters it defines count.)"""
    for dc, other in holders:
        if dc in datacenters:
                found.error(duplicate(_DATACENTERS.key(dc), dc, f'Seed "{other}" defines this datacenter already'),
                        rule="seed.datacenter-unique")
