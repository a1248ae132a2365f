"""Builders for the objects tests talk about: Clusters, Seeds, Secrets, Pods, reviews."""

from __future__ import annotations

import base64
import copy
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: sink
  cluster:
    server: https://audit-sink.audit.svc:8443/events
contexts:
- name: sink
  context:
    cluster: sink
    user: ""
current-context: sink
users: []
"""


def cluster(name: str = "abc", dc: str = "dc1", audit: dict[str, Any] | None = None,
            annotations: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A kubermatic.k8c.io/v1 Cluster."""
    obj: dict[str, Any] = {
        "apiVersion": "kubermatic.k8c.io/v1",
        "kind": "Cluster",
        "metadata": {"name": name},
        "spec": {"cloud": {"dc": dc}, **spec},
    }
    if audit is not None:
        obj["spec"]["auditLogging"] = audit
    if annotations:
        obj["metadata"]["annotations"] = annotations
    return obj


def seed(datacenters: dict[str, dict[str, Any]], audit: dict[str, Any] | None = None,
         name: str = "kubermatic", namespace: str = "kubermatic") -> dict[str, Any]:
    """A Seed; `datacenters` maps dc name to its `spec`."""
    obj: dict[str, Any] = {
        "apiVersion": "kubermatic.k8c.io/v1",
        "kind": "Seed",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"datacenters": {dc: {"country": "DE", "spec": spec} for dc, spec in datacenters.items()}},
    }
    if audit is not None:
        obj["spec"]["auditLogging"] = audit
    return obj


def secret(namespace: str, name: str, data: dict[str, str]) -> dict[str, Any]:
    """A v1 Secret with base64 `data`."""
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name, "namespace": namespace},
        "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()},
    }


def webhook_backend(name: str = "wh", namespace: str | None = None, backoff: str | None = None) -> dict[str, Any]:
    """An `auditLogging.webhookBackend` map."""
    ref: dict[str, Any] = {"name": name}
    if namespace is not None:
        ref["namespace"] = namespace
    out: dict[str, Any] = {"auditWebhookConfig": ref}
    if backoff is not None:
        out["auditWebhookInitialBackoff"] = backoff
    return out


def kkp_pod() -> dict[str, Any]:
    """The realistic KKP apiserver Pod of examples/pods/apiserver.yaml."""
    return yaml.safe_load((EXAMPLES / "pods" / "apiserver.yaml").read_text())


def bare_pod(**containers_args: list[str]) -> dict[str, Any]:
    """A minimal apiserver Pod whose `apiserver` container has the given args."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "apiserver-0", "labels": {"app": "apiserver"}},
        "spec": {"containers": [{"name": "apiserver", "image": "kube-apiserver", **containers_args}]},
    }


def review(obj: Any, *, kind: str = "Pod", group: str = "", operation: str = "CREATE", namespace: str = "",
           old: Any = None, uid: str = "uid-1", version: str = "admission.k8s.io/v1") -> dict[str, Any]:
    """An AdmissionReview request."""
    request: dict[str, Any] = {
        "uid": uid,
        "kind": {"group": group, "version": "v1", "kind": kind},
        "resource": {"group": group, "version": "v1", "resource": kind.lower() + "s"},
        "operation": operation,
        "namespace": namespace,
        "userInfo": {"username": "alice", "groups": ["system:authenticated"]},
        "object": copy.deepcopy(obj),
    }
    if old is not None:
        request["oldObject"] = copy.deepcopy(old)
    return {"apiVersion": version, "kind": "AdmissionReview", "request": request}


def container(pod: dict[str, Any], name: str) -> dict[str, Any]:
    """The container of that name (the test fails if there is none)."""
    matches = [c for c in pod["spec"]["containers"] if c["name"] == name]
    assert len(matches) == 1, f"expected one container {name!r}, found {len(matches)}"
    return matches[0]
