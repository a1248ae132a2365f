"""What a change to a running apiserver Pod may not touch. Pure.

Kubernetes lets a Pod UPDATE change container images, and `pods/ephemeralcontainers` add a
debugging container that may mount any of the Pod's volumes. On an audited apiserver Pod that
would swap the audit sidecar's image after admission, or let a container read the webhook
backend's credentials or rewrite the audit log.
"""

from __future__ import annotations

from typing import Any

from webhook.core import names

# Volumes whose content is the audit trail or its configuration.
OUR_VOLUMES = frozenset({names.VOLUME_AUDIT_LOG, names.VOLUME_AUDIT_CONFIG, names.VOLUME_FLUENTBIT,
                         names.VOLUME_WEBHOOK_BACKEND})


def _containers(pod: Any, field: str) -> list[dict[str, Any]]:
    spec = pod.get("spec") if isinstance(pod, dict) else None
    items = spec.get(field) if isinstance(spec, dict) else None
    return [c for c in items if isinstance(c, dict)] if isinstance(items, list) else []


def _named(pod: Any, name: str) -> dict[str, Any] | None:
    return next((c for c in _containers(pod, "containers") if c.get("name") == name), None)


def pod_update_problems(old: Any, new: Any) -> list[str]:
    """Why this update of an injected apiserver Pod is refused (empty: it may go on)."""
    problems = []
    for name in (names.SIDECAR_CONTAINER, names.APISERVER_CONTAINER):
        before, after = _named(old, name), _named(new, name)
        if before is not None and after != before:
            problems.append(f'container "{name}" of an audited apiserver Pod cannot change after admission')
    known = {c.get("name") for c in _containers(old, "ephemeralContainers")}
    for added in _containers(new, "ephemeralContainers"):
        if added.get("name") in known:
            continue
        mounted = sorted({m.get("name") for m in added.get("volumeMounts") or [] if isinstance(m, dict)} & OUR_VOLUMES)
        if mounted:
            problems.append(f'ephemeral container "{added.get("name")}" may not mount {", ".join(mounted)}: the '
                            "audit log and its configuration are the audit trail's")
    return problems
