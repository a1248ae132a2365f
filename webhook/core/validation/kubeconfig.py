"""Would kube-apiserver accept this audit webhook kubeconfig (`--audit-webhook-config-file`)?

Mirrors what client-go's loader and ConfirmUsable refuse. The file comes from a Secret, so
no problem description ever quotes its content: only which part is wrong.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any
from urllib.parse import urlsplit

from webhook.core import yamlio


@dataclass
class KubeconfigReport:
    """Problems make kube-apiserver refuse to start; notes are risky but accepted."""

    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@lru_cache(maxsize=1024)
def kubeconfig_findings(data: bytes) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(problems, notes) of a `webhook.yaml`, remembered: the same Secret is checked on every
    Cluster update, and its content changes far less often."""
    report = check_kubeconfig(data)
    return tuple(report.problems), tuple(report.notes)


def _named(items: Any, name: str, body: str) -> tuple[bool, Any]:
    if not isinstance(items, list):
        return False, None
    for item in items:
        if isinstance(item, dict) and item.get("name") == name:
            return True, item.get(body)
    return False, None


def check_kubeconfig(data: bytes) -> KubeconfigReport:
    """Check the bytes of a `webhook.yaml`."""
    report = KubeconfigReport()
    problems = report.problems
    try:
        doc = yamlio.load(data.decode("utf-8"))
    except UnicodeDecodeError:
        problems.append("is not UTF-8 text")
        return report
    except yamlio.YAMLError:
        problems.append("is not valid YAML")
        return report
    if not isinstance(doc, dict):
        problems.append("is not a kubeconfig (apiVersion: v1, kind: Config)")
        return report
    if doc.get("kind") not in (None, "", "Config") or doc.get("apiVersion") not in (None, "", "v1"):
        problems.append("must have apiVersion v1 and kind Config")
    current = doc.get("current-context")
    if not isinstance(current, str) or not current:
        problems.append("has no current-context")
        return report
    found, context = _named(doc.get("contexts"), current, "context")
    if not found:
        problems.append("current-context names a context that is not in contexts")
        return report
    cluster_name = context.get("cluster") if isinstance(context, dict) else None
    if not isinstance(cluster_name, str) or not cluster_name:
        problems.append("the current context names no cluster")
        return report
    user_name = context.get("user") if isinstance(context, dict) else None
    if isinstance(user_name, str) and user_name and not _named(doc.get("users"), user_name, "user")[0]:
        problems.append("the current context names a user that is not in users")
    found, cluster = _named(doc.get("clusters"), cluster_name, "cluster")
    if not found:
        problems.append("the current context names a cluster that is not in clusters")
        return report
    _check_cluster(cluster if isinstance(cluster, dict) else {}, report)
    return report


def _check_cluster(cluster: dict[str, Any], report: KubeconfigReport) -> None:
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        report.problems.append("the current cluster has no server URL")
        return
    try:
        url = urlsplit(server)
        has_host = bool(url.hostname)
    except ValueError:
        url, has_host = None, False
    if url is None or url.scheme not in ("http", "https") or not has_host:
        report.problems.append("the current cluster's server is not an http:// or https:// URL with a host")
        return
    if url.scheme == "http":
        report.notes.append("sends events over plain http://")
    has_ca_file = bool(cluster.get("certificate-authority"))
    has_ca_data = bool(cluster.get("certificate-authority-data"))
    if has_ca_file and has_ca_data:
        report.problems.append("the current cluster sets both certificate-authority and certificate-authority-data")
    if cluster.get("insecure-skip-tls-verify") is True:
        if has_ca_file or has_ca_data:
            report.problems.append("the current cluster sets a certificate authority together with "
                                   "insecure-skip-tls-verify")
        else:
            report.notes.append("skips server certificate checks")
    if has_ca_file:
        report.notes.append("names a CA file; only the Secret's own files are mounted")


@lru_cache(maxsize=1024)
def server_of(data: bytes) -> str | None:
    """`scheme://host[:port]` of a usable webhook kubeconfig's current cluster, for reports.

    Never the path, query or user info of the URL: those can carry credentials.
    """
    if kubeconfig_findings(data)[0]:
        return None
    doc = yamlio.load(data.decode("utf-8"))
    context = _named(doc.get("contexts"), doc["current-context"], "context")[1]
    cluster = _named(doc.get("clusters"), context["cluster"], "cluster")[1]
    url = urlsplit(cluster["server"])
    host = f"[{url.hostname}]" if url.hostname and ":" in url.hostname else url.hostname
    return f"{url.scheme}://{host}" + (f":{url.port}" if url.port else "")
