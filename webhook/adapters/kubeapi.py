"""Small helpers over the `kubernetes` client shared by the edges that talk to the API."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Any

from kubernetes.client.rest import ApiException


def read_or_none(read: Callable[..., Any], *args: Any) -> dict[str, Any] | None:
    """The raw JSON of a `read_namespaced_*` call, or None when the object does not exist."""
    try:
        response = read(*args, _preload_content=False, _request_timeout=10)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise
    return json.loads(response.data)


def list_items(list_call: Callable[..., Any], *args: Any, api_version: str, kind: str, page: int = 100,
               **params: Any) -> Iterator[dict[str, Any]]:
    """The items of a `list_*` call as raw objects, with the apiVersion and kind list items lack,
    fetched `page` at a time: no single response holds more."""
    token = None
    while True:
        response = list_call(*args, _preload_content=False, _request_timeout=60, limit=page,
                             **({"_continue": token} if token else {}), **params)
        body = json.loads(response.data)
        yield from ({"apiVersion": api_version, "kind": kind, **item} for item in body["items"])
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return


def api_message(exc: ApiException) -> str:
    """What kube-apiserver said (it names the verb, resource and object), without the request's body."""
    try:
        message = json.loads(exc.body or "{}").get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or exc.reason or "")


def webhook_configuration_calls(api: Any) -> tuple[tuple[str, Callable[..., Any], Callable[..., Any]], ...]:
    """(kind, read, patch) of both kinds of webhook configuration, for an AdmissionregistrationV1Api."""
    return (("MutatingWebhookConfiguration", api.read_mutating_webhook_configuration,
             api.patch_mutating_webhook_configuration),
            ("ValidatingWebhookConfiguration", api.read_validating_webhook_configuration,
             api.patch_validating_webhook_configuration))
