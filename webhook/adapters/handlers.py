"""The HTTP side of the two admission paths: read the Secrets a decision names, then decide
(webhook/core/decide.py)."""

from __future__ import annotations

from webhook.adapters.store import Store, StoreUnavailable
from webhook.core.decide import InjectionMemo, PreparedCache, mutate_pod, secrets_needed, validate_request
from webhook.core.operator_config import DEFAULT, OperatorConfig
from webhook.core.options import Options
from webhook.core.review import AdmissionRequest, Answer


async def mutate(req: AdmissionRequest, store: Store, options: Options, cache: PreparedCache,
                 memo: InjectionMemo | None = None) -> Answer:
    """Inject audit logging into an apiserver Pod."""
    return mutate_pod(req, store, options, cache, memo)


async def validate(req: AdmissionRequest, store: Store, options: Options, cache: PreparedCache,
                   config: OperatorConfig = DEFAULT) -> Answer:
    """Judge an object, after reading the Secrets it names live."""
    try:
        secrets = {ref: await store.secret(*ref) for ref in secrets_needed(req)}
    except StoreUnavailable as exc:
        # Fail closed, and say so: a Secret we cannot read is not a Secret we have checked.
        return Answer(False, f"audit-webhook: {exc}; try again", code=503, reason="store-unavailable")
    return validate_request(req, store, secrets, options, cache, config)
