"""The objects admission reads, indexed for O(1) lookups, and a Secret's decoded data. Pure."""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from webhook.core.objects import cluster_namespace, datacenter_of, datacenters_of, dig, kind_of, name_of, namespace_of
from webhook.core.validation.admission import CLUSTER, CONFIGMAP, SEED, kind_key

SecretData = dict[str, bytes]


class LoadError(Exception):
    """An object could not be read; the message names where, never a Secret's content."""


def decode_secret(obj: dict[str, Any], where: str) -> SecretData:
    """A Secret's keys and bytes from `data` (base64) and `stringData` (text, which wins)."""
    out: SecretData = {}
    data = obj.get("data") or {}
    string_data = obj.get("stringData") or {}
    if not isinstance(data, dict) or not isinstance(string_data, dict):
        raise LoadError(f"{where}: Secret data and stringData must be maps")
    for key, value in data.items():
        try:
            out[str(key)] = base64.b64decode(str(value), validate=True)
        except (binascii.Error, ValueError):
            raise LoadError(f"{where}: Secret key {key!r} is not valid base64") from None
    for key, value in string_data.items():
        out[str(key)] = str(value).encode()
    return out


@dataclass
class Snapshot:
    """Objects indexed for the lookups admission needs: O(1) per request at any fleet size."""

    # By control-plane namespace, the first claimant by name: fill it through `add`, which keeps `claims`.
    clusters: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every Cluster claiming each namespace, by name: two claimants must not hide one another.
    claims: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    # By datacenter name: KKP needs each datacenter defined by one Seed, and `add` refuses a second.
    seeds: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Every Cluster of each datacenter (`spec.cloud.dc`), by name.
    datacenter_clusters: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], SecretData] = field(default_factory=dict)
    configmaps: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    seed_objects: list[dict[str, Any]] = field(default_factory=list)
    pods: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # by namespace, for reports
    # Secrets' labels, for reports: whether an object in a cluster namespace is ours.
    secret_labels: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    # For reports: the egress NetworkPolicies there are, and the Services their peers are made from.
    network_policies: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    services: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    def add(self, obj: dict[str, Any], where: str = "") -> None:
        """Index one object; objects of other kinds are ignored."""
        kind = kind_key(obj)
        if kind == CLUSTER:
            namespace = cluster_namespace(obj)
            claimants = [c for c in self.claims.get(namespace, []) if name_of(c) != name_of(obj)] + [obj]
            self.claims[namespace] = sorted(claimants, key=name_of)
            self.clusters[namespace] = self.claims[namespace][0]
            dc = datacenter_of(obj)
            members = [c for c in self.datacenter_clusters.get(dc, []) if name_of(c) != name_of(obj)] + [obj]
            self.datacenter_clusters[dc] = sorted(members, key=name_of)
        elif kind == SEED:
            self._refuse_second_definitions(obj, where)
            self.seed_objects.append(obj)
            for dc in datacenters_of(obj):
                self.seeds[dc] = obj
        elif kind == CONFIGMAP:
            self.configmaps[(namespace_of(obj), name_of(obj))] = obj
        elif kind_of(obj) == ("v1", "Pod") and namespace_of(obj):
            self.pods.setdefault(namespace_of(obj), []).append(obj)
        elif kind_of(obj) == ("networking.k8s.io/v1", "NetworkPolicy"):
            self.network_policies[(namespace_of(obj), name_of(obj))] = obj
        elif kind_of(obj) == ("v1", "Service"):
            self.services[(namespace_of(obj), name_of(obj))] = obj
        elif kind_of(obj) == ("v1", "Secret"):
            self.secrets[(namespace_of(obj), name_of(obj))] = decode_secret(obj, where or name_of(obj))
            self.secret_labels[(namespace_of(obj), name_of(obj))] = dig(obj, "metadata", "labels") or {}

    def _refuse_second_definitions(self, seed: dict[str, Any], where: str) -> None:
        """A LoadError when another Seed defines a datacenter of `seed`: which one wins would depend on
        the order the files are read in (KKP refuses such Seeds; see rule seed.datacenter-unique)."""
        for dc in datacenters_of(seed):
            held = self.seeds.get(dc)
            if held is not None and (namespace_of(held), name_of(held)) != (namespace_of(seed), name_of(seed)):
                raise LoadError(f'{where}{": " if where else ""}datacenter "{dc}" of Seed "{name_of(seed)}" is '
                                f'defined by Seed "{name_of(held)}" too; a datacenter belongs to one Seed')

    def all_clusters(self) -> list[dict[str, Any]]:
        """Every Cluster, including each of several claiming one namespace."""
        return [c for claimants in self.claims.values() for c in claimants]

    @classmethod
    def of(cls, objects: Iterable[dict[str, Any]]) -> Snapshot:
        """A snapshot of the given objects."""
        snap = cls()
        for obj in objects:
            snap.add(obj)
        return snap
