"""The operator's configuration file: settings no tenant can reach, in one typed document.

`deploy/` mounts it from the ConfigMap `audit-webhook-config`; `serve` and `reconcile` read it
with `--config` (webhook/adapters/config_file.py reloads it when it changes). Every field is
described in docs/configuration.md.
"""

from __future__ import annotations

import ipaddress
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from webhook.core import yamlio

# Cloud metadata services outside the link-local range (AWS's over IPv6).
METADATA_ADDRESSES = frozenset({ipaddress.ip_address("fd00:ec2::254")})
# Namespaces no audit sink may ever be in: the seed's own.
SYSTEM_NAMESPACES = frozenset({"kube-system", "kubermatic"})
CLUSTER_NAMESPACE_PREFIX = "cluster-"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
DNSLabel = Annotated[str, Field(pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")]


def forbidden_namespace(namespace: str, webhook_namespace: str) -> bool:
    """A namespace whose Pods no control plane's audit sink may reach: the seed's, the webhook's,
    and every control plane's."""
    return (namespace in SYSTEM_NAMESPACES or namespace == webhook_namespace
            or namespace.startswith(CLUSTER_NAMESPACE_PREFIX))


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_V4_COMPATIBLE = ipaddress.ip_network("::/96")
# IPv6 ranges that carry or translate to IPv4 addresses: well-known and local-use NAT64 (RFC 6052,
# RFC 8215), SIIT, mapped and compatible addresses, 6to4, Teredo.
_IPV4_CARRIERS = tuple(ipaddress.ip_network(n) for n in (
    "64:ff9b::/96", "64:ff9b:1::/48", "::ffff:0:0:0/96", "::ffff:0:0/96", "::/96", "2002::/16", "2001::/32"))


def carries_ipv4(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """An IPv6 address that stands for an IPv4 one: its destination is not what it looks like."""
    return isinstance(ip, ipaddress.IPv6Address) and any(ip in net for net in _IPV4_CARRIERS)


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, NAT64, IPv4-compatible, Teredo)."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in _NAT64 or ip in _V4_COMPATIBLE:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def forbidden_address(ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    """Link-local (cloud metadata), loopback, unspecified, multicast and known metadata addresses,
    also when written as an IPv6 address that carries one (`::ffff:169.254.169.254`)."""
    if ip.is_link_local or ip.is_loopback or ip.is_unspecified or ip.is_multicast or ip in METADATA_ADDRESSES:
        return True
    embedded = _embedded_ipv4(ip) if isinstance(ip, ipaddress.IPv6Address) else None
    return embedded is not None and forbidden_address(embedded)


class EgressAllowList(BaseModel):
    """Where the managed egress NetworkPolicy may let an apiserver Pod send its audit events.

    Each destination is opened on its own port only, and only when it is listed here; a cluster's
    sink anywhere else is refused with an admission warning and an `EgressRefused` Event.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    # Networks an output's or webhook backend's IP address may be in (only that address is opened).
    cidrs: tuple[Network, ...] = ()
    # Namespaces whose Services may receive audit events (`svc.ns.svc` hosts).
    namespaces: tuple[DNSLabel, ...] = ()
    # Single Services, as namespace/name.
    services: tuple[Annotated[str, Field(pattern=r"^[a-z0-9-]{1,63}/[a-z0-9-]{1,63}$")], ...] = ()

    @field_validator("cidrs", mode="before")
    @classmethod
    def _strict_networks(cls, value: object) -> object:
        # "10.0.0.1/8" has host bits set: almost always a typo for a narrower network.
        if isinstance(value, list | tuple):
            return tuple(ipaddress.ip_network(str(v), strict=True) for v in value)
        return value

    def allows_ip(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip.version == net.version and ip in net for net in self.cidrs)

    def allows_service(self, namespace: str, name: str) -> bool:
        return namespace in self.namespaces or f"{namespace}/{name}" in self.services


class OperatorConfig(BaseModel):
    """The whole file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # The seed's own Pod and Service networks: an address there is some control plane's Pod or
    # Service (etcd, another apiserver), never an audit sink. Sinks in the seed are named by Service.
    seedNetworks: tuple[Network, ...] = ()
    egress: EgressAllowList = EgressAllowList()

    @field_validator("seedNetworks", mode="before")
    @classmethod
    def _strict_seed_networks(cls, value: object) -> object:
        return EgressAllowList._strict_networks(value)

    def in_seed_network(self, ip: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(ip.version == net.version and ip in net for net in self.seedNetworks)

    def model_post_init(self, _context: object) -> None:
        for allowed in self.egress.cidrs:
            for seed in self.seedNetworks:
                if allowed.version == seed.version and allowed.overlaps(seed):
                    raise ValueError(f"egress.cidrs: {allowed} overlaps the seed network {seed}: name sinks in the "
                                     "seed by Service (egress.namespaces, egress.services) instead")
        for namespace in (*self.egress.namespaces, *(s.split("/")[0] for s in self.egress.services)):
            if forbidden_namespace(namespace, ""):
                raise ValueError(f'egress: namespace "{namespace}" belongs to the seed or to a control plane, '
                                 "and can never receive audit events")


DEFAULT = OperatorConfig()


class ConfigError(Exception):
    """The file is unreadable or does not describe an OperatorConfig."""


def parse(text: str, where: str) -> OperatorConfig:
    """The configuration in `text` (YAML), or ConfigError naming each wrong field."""
    try:
        data = yamlio.load(text)
    except yamlio.TooLarge as exc:
        raise ConfigError(f"{where}: exceeds the YAML budget: {exc}") from None
    except Exception as exc:
        raise ConfigError(f"{where}: not YAML: {exc}") from None
    if data is None:
        return DEFAULT
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: must be a map of settings")
    try:
        return OperatorConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(top)'}: "
                             f"{e['msg'].removeprefix('Value error, ')}" for e in exc.errors())
        raise ConfigError(f"{where}: {problems}") from None
