"""The decision log: one JSON line per admission, for people who ask "why was this refused?"."""

from __future__ import annotations

import logging
import time

from pydantic_core import to_json

from webhook.core.review import AdmissionRequest, Answer

log = logging.getLogger("audit_webhook.decisions")
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING}
# The level decision lines are written at (`--decision-log`); None turns them off.
_level: int | None = logging.INFO


def set_level(name: str) -> None:
    """`off`, or the level (`debug`, `info`, `warning`) at which every decision is logged."""
    global _level
    _level = LEVELS.get(name)


def log_decision(handler: str, req: AdmissionRequest, answer: Answer, seconds: float) -> None:
    """Log what was decided. Never the object, never a message that could quote a value."""
    if _level is None or not log.isEnabledFor(_level):
        return
    record = {
        "ts": round(time.time(), 3),
        "handler": handler,
        "uid": req.uid,
        "kind": req.kind.kind,
        "operation": req.operation,
        "namespace": req.namespace,
        "name": req.name,
        "user": req.userInfo.username,
        "decision": "allowed" if answer.allowed else "denied",
        "reason": answer.reason,
        "rules": answer.rules,
        "patched": bool(answer.patch),
        "warnings": len(answer.warnings),
        "warning_rules": sorted(set(answer.warning_rules)),
        "latency_ms": round(seconds * 1000, 3),
        "dry_run": req.dryRun,
    }
    # Text logs carry the JSON in the message; JSON logs carry the fields themselves (webhook/adapters/logs.py).
    log.log(_level, to_json(record).decode(), extra={"fields": record})
