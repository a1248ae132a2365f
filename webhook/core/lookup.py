"""The lookups a decision may make: the interface between the core and any store."""

from __future__ import annotations

from typing import Any, Protocol


class Lookup(Protocol):
    """The objects a decision may look up (the store's synchronous half)."""

    def cluster_for_namespace(self, namespace: str) -> dict[str, Any] | None:
        """The Cluster whose control plane runs in `namespace` (the first by name if several claim it)."""

    def clusters_in(self, namespace: str) -> list[dict[str, Any]]:
        """Every Cluster that claims `namespace`, by name: more than one is a conflict."""

    def seed_for_datacenter(self, datacenter: str) -> dict[str, Any] | None:
        """The Seed that defines `datacenter` (the first by name if several do)."""

    def seeds_for_datacenter(self, datacenter: str) -> list[dict[str, Any]]:
        """Every Seed that defines `datacenter`, by name: more than one is a conflict KKP does not allow."""

    def clusters_in_datacenter(self, datacenter: str) -> list[dict[str, Any]]:
        """Every Cluster whose `spec.cloud.dc` is `datacenter`, by name."""

    def all_clusters(self) -> list[dict[str, Any]]:
        """Every Cluster the store knows."""
