"""The objects behind the apiserver's audit volumes as Kubernetes manifests. Pure."""

from __future__ import annotations

from typing import Any

from webhook.core import names, presets
from webhook.core.fluentbit import render
from webhook.core.options import Options
from webhook.core.settings import EffectiveSettings

MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "audit-webhook"
CLUSTER_LABEL = "audit-webhook.kubermatic.k8c.io/cluster"


def managed_metadata(name: str, settings: EffectiveSettings) -> dict[str, Any]:
    """Metadata of an object we manage for a cluster: its namespace and the labels that say so."""
    return {
        "name": name,
        "namespace": settings.namespace,
        "labels": {MANAGED_BY_LABEL: MANAGED_BY, CLUSTER_LABEL: settings.cluster_id},
    }


def audit_config(settings: EffectiveSettings) -> dict[str, Any]:
    """ConfigMap `audit-config`: the preset's policy, or the default one without a preset."""
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": managed_metadata(names.CONFIGMAP_AUDIT_CONFIG, settings),
        "data": {names.POLICY_KEY: presets.policy_text(settings.preset)},
    }


def fluentbit_secret(settings: EffectiveSettings, options: Options) -> dict[str, Any]:
    """Secret `audit-logs-fluentbit` with the rendered sidecar configuration, as stringData."""
    key, text = render(settings.sidecar.config, options, settings.keeps_default_output)
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": managed_metadata(names.SECRET_FLUENTBIT, settings),
        "stringData": {key: text},
    }


def needed_files(settings: EffectiveSettings, options: Options) -> list[dict[str, Any]]:
    """Every object the cluster's apiserver Pod mounts that we generate."""
    items = []
    if settings.needs_injection:
        items.append(audit_config(settings))
    if settings.enabled:
        items.append(fluentbit_secret(settings, options))
    return items
