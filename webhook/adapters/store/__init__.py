"""Where Clusters, Seeds, Secrets and ConfigMaps come from: one interface, several homes."""

from __future__ import annotations

from typing import Any, Protocol

from webhook.core.lookup import Lookup
from webhook.core.snapshot import SecretData, Snapshot


class StoreUnavailable(Exception):
    """The source could not answer in time; the message says what was asked, never a value."""


class Store(Lookup, Protocol):
    """What the handlers ask of a source of objects: the lookups decisions make, and live Secrets."""

    async def secret(self, namespace: str, name: str) -> SecretData | None:
        """A Secret's data, decoded, or None when it does not exist."""

    def ready(self) -> bool:
        """Whether the store has everything it needs to answer."""


class MemoryStore:
    """A store over a snapshot held in memory; the file store and the CLI build on it."""

    def __init__(self, snapshot: Snapshot | None = None) -> None:
        self.snapshot = snapshot or Snapshot()

    def cluster_for_namespace(self, namespace: str) -> dict[str, Any] | None:
        """The Cluster whose control plane runs in `namespace`."""
        return self.snapshot.clusters.get(namespace)

    def clusters_in(self, namespace: str) -> list[dict[str, Any]]:
        """Every Cluster claiming `namespace`."""
        return self.snapshot.claims.get(namespace, [])

    def seed_for_datacenter(self, datacenter: str) -> dict[str, Any] | None:
        """The Seed that defines `datacenter`."""
        return self.snapshot.seeds.get(datacenter)

    def seeds_for_datacenter(self, datacenter: str) -> list[dict[str, Any]]:
        """The Seed that defines `datacenter`, if any (a snapshot holds no second one)."""
        seed = self.snapshot.seeds.get(datacenter)
        return [seed] if seed is not None else []

    def clusters_in_datacenter(self, datacenter: str) -> list[dict[str, Any]]:
        """Every Cluster of `datacenter`."""
        return self.snapshot.datacenter_clusters.get(datacenter, [])

    async def secret(self, namespace: str, name: str) -> SecretData | None:
        """A Secret's data, or None."""
        return self.snapshot.secrets.get((namespace, name))

    def ready(self) -> bool:
        """Always ready: everything is in memory."""
        return True

    def all_clusters(self) -> list[dict[str, Any]]:
        """Every Cluster of the snapshot."""
        return self.snapshot.all_clusters()
