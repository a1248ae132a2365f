"""What a rule may look at beyond the object it judges: one value, passed down unchanged."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from webhook.core.operator_config import DEFAULT, OperatorConfig
from webhook.core.settings import EffectiveSettings
from webhook.core.validation.webhook_backend import Secrets


@dataclass(frozen=True)
class Context:
    """The inputs of every rule besides the object. The shell fills it in before it asks."""

    # The Seed that defines a Cluster's datacenter (None: none known).
    seed: dict[str, Any] | None = None
    # The Secrets the object names, read beforehand; None: not checked (an object already stored).
    secrets: Secrets | None = None
    # The settings of the cluster whose namespace holds an audit-config ConfigMap.
    owner: EffectiveSettings | None = None
    # The operator's configuration (the egress allow-list).
    config: OperatorConfig = DEFAULT
    # The Clusters that held a Cluster's control-plane namespace before it.
    namespace_holders: tuple[str, ...] = ()
    # (datacenter, Seed) for each datacenter of a Seed that another Seed defines too.
    datacenter_holders: tuple[tuple[str, str], ...] = ()


NO_CONTEXT = Context()
