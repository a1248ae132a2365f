"""AdmissionReview in and out (admission.k8s.io v1 and v1beta1), with no transport in sight."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import from_json, to_json

SUPPORTED_VERSIONS = ("admission.k8s.io/v1", "admission.k8s.io/v1beta1")
_STATUS_REASONS = {403: "Forbidden", 422: "Invalid", 500: "InternalError", 503: "ServiceUnavailable"}


class ReviewError(Exception):
    """The body is not an AdmissionReview we can answer: HTTP 400."""


class GroupVersionKind(BaseModel):
    """`request.kind`."""

    model_config = ConfigDict(extra="allow")
    group: str = ""
    version: str = ""
    kind: str = ""


class UserInfo(BaseModel):
    """`request.userInfo`."""

    model_config = ConfigDict(extra="allow")
    username: str = ""
    groups: list[str] = Field(default_factory=list)


class AdmissionRequest(BaseModel):
    """The parts of `request` we read; `object` and `oldObject` stay raw JSON."""

    model_config = ConfigDict(extra="allow")
    uid: str = Field(min_length=1)
    kind: GroupVersionKind = Field(default_factory=GroupVersionKind)
    subResource: str = ""
    name: str = ""
    namespace: str = ""
    operation: str = ""
    userInfo: UserInfo = Field(default_factory=UserInfo)
    object: Any = None
    oldObject: Any = None
    dryRun: bool = False


@dataclass
class Answer:
    """What a handler decided; `to_review` turns it into the wire format."""

    allowed: bool
    message: str = ""
    code: int = 200
    patch: list[dict[str, Any]] | None = None
    warnings: list[str] = field(default_factory=list)
    # Why, in one word, for metrics and the decision log ("injected", "invalid", ...).
    reason: str = ""
    # The ids of the rules that refused the object (webhook/core/validation/rules.py), for metrics and
    # the decision log.
    rules: list[str] = field(default_factory=list)
    # The rule id of each warning that is about a rule (one entry per such warning; advice has none).
    warning_rules: list[str] = field(default_factory=list)
    # `patch` as the answer carries it (base64 of its JSON), worked out once: a remembered answer
    # (webhook/core/decide.py, InjectionMemo) is sent again and again.
    _encoded_patch: str | None = field(default=None, init=False, repr=False, compare=False)

    def encoded_patch(self) -> str:
        """The base64 of `patch`'s JSON."""
        if self._encoded_patch is None:
            self._encoded_patch = base64.b64encode(to_json(self.patch)).decode()
        return self._encoded_patch


def load_json(body: bytes) -> Any:
    """`json.loads(body)`, in Rust where it can be: pydantic-core's parser reads a review about three
    times as fast. It accepts no body that json refuses, and reads the same values; what it refuses
    (deep nesting, lone surrogates, a byte-order mark, UTF-16) goes to json, which reads or refuses
    it as it always has."""
    try:
        return from_json(body)
    except ValueError:
        return json.loads(body)


def parse_review(body: bytes) -> tuple[str, AdmissionRequest]:
    """(apiVersion, request) of a review body, or ReviewError saying what is wrong."""
    try:
        doc = load_json(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ReviewError(f"request body is not JSON: {exc}") from None
    except RecursionError:
        raise ReviewError("request body is nested too deeply to be an AdmissionReview") from None
    if not isinstance(doc, dict):
        raise ReviewError("request body must be a JSON object (an AdmissionReview)")
    api_version = doc.get("apiVersion")
    if api_version not in SUPPORTED_VERSIONS:
        raise ReviewError(f"apiVersion must be one of {', '.join(SUPPORTED_VERSIONS)}, got {json.dumps(api_version)}")
    if doc.get("kind") != "AdmissionReview":
        raise ReviewError(f"kind must be AdmissionReview, got {json.dumps(doc.get('kind'))}")
    raw = doc.get("request")
    if not isinstance(raw, dict):
        raise ReviewError("AdmissionReview has no request")
    if not isinstance(raw.get("uid"), str) or not raw["uid"]:
        raise ReviewError("AdmissionReview request has no uid")
    try:
        return api_version, AdmissionRequest.model_validate(raw)
    except ValidationError as exc:
        where = ", ".join(".".join(str(p) for p in e["loc"]) + ": " + e["msg"] for e in exc.errors()[:5])
        raise ReviewError(f"AdmissionReview request is malformed: {where}") from None


def encode_review(api_version: str, uid: str, answer: Answer) -> bytes:
    """`to_review` as compact JSON bytes (pydantic-core's encoder: several times faster than json's)."""
    return to_json(to_review(api_version, uid, answer))


def to_review(api_version: str, uid: str, answer: Answer) -> dict[str, Any]:
    """The AdmissionReview that answers request `uid`."""
    response: dict[str, Any] = {"uid": uid, "allowed": answer.allowed}
    if not answer.allowed:
        response["status"] = {"code": answer.code, "message": answer.message,
                              "reason": _STATUS_REASONS.get(answer.code, "Forbidden")}
    elif answer.message:
        response["status"] = {"code": 200, "message": answer.message}
    if answer.patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = answer.encoded_patch()
    if answer.warnings:
        response["warnings"] = answer.warnings
    return {"apiVersion": api_version, "kind": "AdmissionReview", "response": response}
