"""Egress for the audit sinks: the NetworkPolicy that lets an apiserver Pod reach its webhook
backend and its sidecar outputs, where the operator's allow-list permits, on their ports only,
and nothing the policy cannot express. Pure."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from webhook.core import names
from webhook.core.manifests import managed_metadata
from webhook.core.operator_config import DEFAULT, OperatorConfig, carries_ipv4, forbidden_address, forbidden_namespace
from webhook.core.settings import EffectiveSettings

POLICY_NAME = "audit-logging-egress"
_DNS_RULE = {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}},
                     "podSelector": {"matchLabels": {"k8s-app": "kube-dns"}}}],
             "ports": [{"protocol": "UDP", "port": 53}, {"protocol": "TCP", "port": 53}]}


@dataclass(frozen=True)
class Destination:
    """Where audit events are sent: a host, a port (None: any), and who asked for it."""

    host: str
    port: int | None
    source: str


@dataclass(frozen=True)
class Classified:
    """A destination as a NetworkPolicy sees it: an IP, a Service, or an outside name it cannot express."""

    kind: str  # "ip", "service", "external"
    destination: Destination
    namespace: str = ""
    service: str = ""


def _port(text: str | None) -> int | None:
    try:
        port = int(text) if text else None
    except ValueError:
        return None
    return port if port and 0 < port < 65536 else None


def destinations(settings: EffectiveSettings, webhook_server: str | None) -> list[Destination]:
    """The webhook backend's server (a URL) and every sidecar output with a Host."""
    out = []
    if settings.webhook is not None and webhook_server:
        url = urlsplit(webhook_server)
        try:
            port = url.port or (443 if url.scheme == "https" else 80)
        except ValueError:  # a port out of range: kube-apiserver cannot reach it either
            port = None
        if url.hostname and port is not None:
            out.append(Destination(url.hostname, port, "webhook backend"))
    if settings.enabled:
        for i, output in enumerate(settings.sidecar.config.outputs):
            lower = {k.lower(): v for k, v in output.items()}
            if lower.get("host"):
                out.append(Destination(lower["host"], _port(lower.get("port")), f"sidecar output {i}"))
    return out


def classify(dest: Destination, namespace: str) -> Classified:
    """An IP, an in-cluster Service name (`svc`, `svc.ns.svc`, `svc.ns.svc.cluster.local`), or external."""
    try:
        ipaddress.ip_address(dest.host)
        return Classified("ip", dest)
    except ValueError:
        pass
    parts = dest.host.rstrip(".").split(".")
    if len(parts) == 1:
        return Classified("service", dest, namespace, parts[0])
    if len(parts) in (3, 5) and parts[2] == "svc" and (len(parts) == 3 or parts[3:] == ["cluster", "local"]):
        return Classified("service", dest, parts[1], parts[0])
    return Classified("external", dest)


@lru_cache(maxsize=4096)
def is_outside(host: str) -> bool:
    """Whether a host is a name outside the cluster, which a NetworkPolicy cannot allow.

    Cached: validation asks on every Cluster update, for the same few hosts.
    """
    return classify(Destination(host, None, ""), "").kind == "external"


def _ports(port: int | None) -> list[dict[str, Any]]:
    return [{"protocol": "TCP", "port": port}] if port else []


_ALLOW_LIST = "the operator's egress allow-list"


def refusal(target: Classified, config: OperatorConfig = DEFAULT, webhook_namespace: str = "audit-webhook") -> str:
    """Why the egress policy will not open this destination ("" when it will, or when it is an
    outside name no policy can express)."""
    dest, allow = target.destination, config.egress
    if target.kind == "ip":
        ip = ipaddress.ip_address(dest.host)
        if forbidden_address(ip):
            return f"{dest.host} is a link-local, loopback or metadata address"
        if carries_ipv4(ip):
            return f"{dest.host} is an IPv6 form of an IPv4 address (NAT64, mapped, 6to4, ...): write that address"
        if config.in_seed_network(ip):
            return f"{dest.host} is in the seed's Pod or Service network (seedNetworks): name the sink by its Service"
        if not allow.allows_ip(ip):
            return f"{dest.host} is not in {_ALLOW_LIST} (egress.cidrs)"
    elif target.kind == "service":
        ns = target.namespace
        if forbidden_namespace(ns, webhook_namespace):
            return f'namespace "{ns}" belongs to a control plane or to the seed'
        if not allow.allows_service(ns, target.service):
            return f"Service {ns}/{target.service} is not in {_ALLOW_LIST} (egress.namespaces, egress.services)"
    else:
        return ""
    if dest.port is None:
        return f"{dest.host} has no Port: every port would be open"
    return ""


def network_policy(settings: EffectiveSettings, targets: list[Classified],
                   services: Mapping[tuple[str, str], Mapping[str, Any] | None],
                   config: OperatorConfig = DEFAULT, webhook_namespace: str = "audit-webhook") -> dict[str, Any] | None:
    """The egress NetworkPolicy for `app=apiserver` Pods, or None when there is nothing to allow.

    `services` gives each named Service's pod selector and port map (None: not found); an unknown
    Service is allowed by its namespace alone. Destinations `refusal` names are never opened.
    """
    rules: list[dict[str, Any]] = []
    targets = [t for t in targets if not refusal(t, config, webhook_namespace)]
    for target in targets:
        port = target.destination.port
        if target.kind == "ip":
            ip = ipaddress.ip_address(target.destination.host)
            rules.append({"to": [{"ipBlock": {"cidr": f"{ip}/{ip.max_prefixlen}"}}], "ports": _ports(port)})
        elif target.kind == "service":
            service = services.get((target.namespace, target.service)) or {}
            peer: dict[str, Any] = {"namespaceSelector": {"matchLabels": {
                "kubernetes.io/metadata.name": target.namespace}}}
            if service.get("selector"):
                peer["podSelector"] = {"matchLabels": dict(service["selector"])}
            target_port = (service.get("ports") or {}).get(port, port)
            rules.append({"to": [peer], "ports": _ports(target_port)})
    if not rules:
        return None
    if any(t.kind == "service" for t in targets):
        rules.append(_DNS_RULE)
    for rule in rules:
        if not rule["ports"]:
            del rule["ports"]
    key, value = names.APISERVER_LABEL
    return {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": managed_metadata(POLICY_NAME, settings),
            "spec": {"podSelector": {"matchLabels": {key: value}}, "policyTypes": ["Egress"], "egress": rules}}


def service_view(service: Mapping[str, Any]) -> dict[str, Any]:
    """What the policy takes from a Service: its pod selector and its numeric targetPort per port."""
    spec = service.get("spec") if isinstance(service.get("spec"), Mapping) else {}
    ports = {p.get("port"): p.get("targetPort") for p in spec.get("ports") or []
             if isinstance(p, Mapping) and isinstance(p.get("targetPort"), int)}
    return {"selector": spec.get("selector") or {}, "ports": ports}


@lru_cache(maxsize=4096)
def egress_refusal(host: str, port: str | None, own_namespace: str, config: OperatorConfig = DEFAULT) -> str:
    """`refusal` for an output's Host and Port as written in a sidecar map (for admission warnings)."""
    return refusal(classify(Destination(host, _port(port), "output"), own_namespace), config)
