"""Rules for a webhook backend: the Secret reference, its kubeconfig, the initial backoff."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from webhook.core import names
from webhook.core.duration import parse_duration
from webhook.core.egress import is_outside
from webhook.core.validation.errors import Findings, Path, forbidden, invalid, not_found, required
from webhook.core.validation.kubeconfig import kubeconfig_findings, server_of

SecretRef = tuple[str, str]  # (namespace, name)
# What the shell fetched for the pure rules: the Secret's data by key, or None when it is missing.
# Rules given no Secrets at all (None) check the reference's shape only.
Secrets = Mapping[SecretRef, Mapping[str, bytes] | None]

_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def secret_ref(raw: Any, default_namespace: str) -> SecretRef | None:
    """The (namespace, name) a webhook backend map refers to, if it names one."""
    ref = raw.get("auditWebhookConfig") if isinstance(raw, dict) else None
    if not isinstance(ref, dict) or not isinstance(ref.get("name"), str) or not ref["name"]:
        return None
    namespace = ref.get("namespace")
    return (namespace if isinstance(namespace, str) and namespace else default_namespace, ref["name"])


def _check_secret(ref: SecretRef, path: Path, secrets: Secrets, found: Findings) -> None:
    shown = f"{ref[0]}/{ref[1]}"
    data = secrets.get(ref)
    if data is None:
        found.error(not_found(path, shown, f'create the Secret with key "{names.WEBHOOK_CONFIG_KEY}" holding '
                                           "the audit webhook kubeconfig first"), rule="webhook.secret-exists")
        return
    if names.WEBHOOK_CONFIG_KEY not in data:
        found.error(invalid(path, shown, f'the Secret has no key "{names.WEBHOOK_CONFIG_KEY}" (the audit webhook '
                                         "kubeconfig that kube-apiserver reads)"), rule="webhook.secret-key")
        return
    problems, notes = kubeconfig_findings(bytes(data[names.WEBHOOK_CONFIG_KEY]))
    for problem in problems:
        found.error(invalid(path, shown, f"{names.WEBHOOK_CONFIG_KEY} {problem}: kube-apiserver would not start"),
                    rule="webhook.kubeconfig")
    for note in notes:
        found.warn(path, f"the Secret's {names.WEBHOOK_CONFIG_KEY} {note}")
    server = server_of(bytes(data[names.WEBHOOK_CONFIG_KEY])) if not problems else None
    host = urlsplit(server).hostname if server else None
    if host and is_outside(host):
        found.warn(path, f"{names.WEBHOOK_CONFIG_KEY}'s server is outside: allow egress to it yourself")


def check_webhook_backend(
    raw: Any, path: Path, *, default_namespace: str, own_namespace: str | None, secrets: Secrets | None,
    seed_secrets: frozenset[SecretRef] = frozenset(),
) -> Findings:
    """Every rule for a webhook backend map at `path`.

    `own_namespace` is set for a Cluster, which may only name Secrets of its own namespace:
    anything else would let a cluster owner copy another tenant's Secret into their Pod. The
    exceptions are `seed_secrets`, the Secrets its datacenter or Seed enforces: KKP's defaulting
    copies those references, Seed namespace and all, into the Cluster.
    """
    found = Findings()
    detail = "must be a map with `auditWebhookConfig` and `auditWebhookInitialBackoff`"
    if not found.present_as(raw, dict, path, detail):
        return found
    ref_path = path.child("auditWebhookConfig")
    ref = raw.get("auditWebhookConfig")
    if ref is None:
        found.error(required(ref_path, f'the Secret (name, namespace) with key "{names.WEBHOOK_CONFIG_KEY}"'),
                    rule="webhook.reference")
    elif not isinstance(ref, dict):
        found.error(invalid(ref_path, ref, "must be a Secret reference with `name` and `namespace`"),
                    rule="webhook.reference")
    else:
        name, namespace = ref.get("name"), ref.get("namespace")
        if name in (None, ""):
            found.error(required(ref_path.child("name")), rule="webhook.reference")
        elif not isinstance(name, str) or len(name) > 253 or not _DNS1123_SUBDOMAIN.match(name):
            found.error(invalid(ref_path.child("name"), name, "must be a lowercase DNS-1123 subdomain (a Secret name)"),
                        rule="webhook.reference")
        if namespace is not None and not isinstance(namespace, str):
            found.error(invalid(ref_path.child("namespace"), namespace, "must be a string"), rule="webhook.reference")
        elif own_namespace and namespace and namespace != own_namespace and (namespace, name) not in seed_secrets:
            allowed = f'"{own_namespace}"' + "".join(f' or its datacenter\'s "{ns}/{n}"'
                                                     for ns, n in sorted(seed_secrets))
            found.error(forbidden(ref_path.child("namespace"), f"a cluster may only use Secrets of its own namespace "
                                                               f"{allowed}", offending=(namespace, name)),
                        rule="webhook.secret-namespace")
        elif not found.errors:
            resolved = secret_ref(raw, default_namespace)
            if resolved is not None and secrets is not None:
                _check_secret(resolved, ref_path, secrets, found)
    backoff_path = path.child("auditWebhookInitialBackoff")
    backoff = raw.get("auditWebhookInitialBackoff")
    if backoff not in (None, ""):
        seconds = parse_duration(backoff) if isinstance(backoff, str) else None
        if seconds is None:
            found.error(invalid(backoff_path, backoff, 'must be a Go duration such as "10s", "500ms" or "1m30s"'),
                        rule="webhook.backoff")
        elif seconds < 0:
            # 0s is valid: KKP's CRD accepts it and kube-apiserver retries at once.
            found.error(invalid(backoff_path, backoff, "must not be negative"), rule="webhook.backoff")
    return found
