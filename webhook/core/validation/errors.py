"""Field errors worded like Kubernetes' own (k8s.io/apimachinery/pkg/util/validation/field)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

_MAX_VALUE_CHARS = 200
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
# kube-apiserver drops warnings with control characters and truncates those over 256 characters
# (k8s.io/apiserver's admission warning limits). Our own texts are written to fit well under it; a
# long field path (a user's map key) is shortened in its middle, so the sentence is never cut.
MAX_WARNING_CHARS = 256


class ErrorType(StrEnum):
    """The error kinds of Kubernetes field validation, with their exact wording."""

    REQUIRED = "Required value"
    INVALID = "Invalid value"
    UNSUPPORTED = "Unsupported value"
    DUPLICATE = "Duplicate value"
    FORBIDDEN = "Forbidden"
    NOT_FOUND = "Not found"


_NO_VALUE = (ErrorType.REQUIRED, ErrorType.FORBIDDEN)


class Tier(StrEnum):
    """Whether a rule gates injection, or only admission.

    SAFETY: the rendered files and flags would be unsafe or unloadable (a line break in a value,
    code execution, a policy kube-apiserver refuses); no Pod is injected with such settings.
    POLICY: the operator's choices (plugin lists, ceilings, what an enforced datacenter keeps).
    They refuse a Cluster at admission, but a stored Cluster that breaks one added later is still
    injected, with a warning and an Event: tightening a rule never stops a running control plane.
    """

    SAFETY = "safety"
    POLICY = "policy"


class Path(str):
    """A field path: `spec.auditLogging.sidecar.config.filters[0][Name]`.

    A str, so that building one per visited field (validation does, on every request) is cheap.
    """

    __slots__ = ()

    def child(self, name: str) -> Path:
        """The path of a named field below this one."""
        return Path(f"{self}.{name}" if self else name)

    def index(self, i: int) -> Path:
        """The path of a list element."""
        return Path(f"{self}[{i}]")

    def key(self, key: str) -> Path:
        """The path of a map entry."""
        return Path(f"{self}[{key}]")


def format_value(value: Any) -> str:
    """A value as Kubernetes prints it in a field error: strings quoted, long ones cut."""
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif value is None:
        text = "null"
    elif isinstance(value, int | float):
        text = str(value)
    else:
        text = json.dumps(value, ensure_ascii=False, default=str, separators=(",", ":"))
    if len(text) > _MAX_VALUE_CHARS:
        text = text[:_MAX_VALUE_CHARS] + "...(truncated)"
    return text


@dataclass(frozen=True)
class FieldError:
    """One problem with one field."""

    type: ErrorType
    path: Path
    value: Any = None
    detail: str = ""
    tier: Tier = Tier.SAFETY
    # The value a Forbidden or Required error is about, never shown: the UPDATE ratchet excuses an
    # old error only while this is unchanged (switching one foreign Secret for another is new).
    offending: Any = None
    # The rule that found it (webhook/core/validation/rules.py): what metrics and the decision log name.
    rule: str = field(default="", compare=False)

    @property
    def body(self) -> str:
        """The error without its field path: `Invalid value: "x": detail`."""
        body = self.type.value if self.type in _NO_VALUE else f"{self.type.value}: {format_value(self.value)}"
        return f"{body}: {self.detail}" if self.detail else body

    def __str__(self) -> str:
        return f"{self.path}: {self.body}"

    def shown(self) -> str:
        """The error as messages show it: Kubernetes' wording, then the id of the rule in brackets."""
        return f"{self}{rule_suffix(self.rule)}"


def rule_suffix(rule: str) -> str:
    """How an error or a warning names its rule: ` [sidecar.plugin-known]` ("" for none)."""
    return f" [{rule}]" if rule else ""


def required(path: Path, detail: str = "") -> FieldError:
    """A field that must be set is missing or empty."""
    return FieldError(ErrorType.REQUIRED, path, None, detail)


def invalid(path: Path, value: Any, detail: str) -> FieldError:
    """A value with the wrong form."""
    return FieldError(ErrorType.INVALID, path, value, detail)


def unsupported(path: Path, value: Any, supported: list[str] | tuple[str, ...]) -> FieldError:
    """A value outside a fixed set, listing the set."""
    listed = ", ".join(json.dumps(s) for s in supported)
    return FieldError(ErrorType.UNSUPPORTED, path, value, f"supported values: {listed}")


def duplicate(path: Path, value: Any, detail: str = "") -> FieldError:
    """A value that may appear once and appears again."""
    return FieldError(ErrorType.DUPLICATE, path, value, detail)


def forbidden(path: Path, detail: str, offending: Any = None) -> FieldError:
    """A field that may not be set (to this value, `offending`, compared by the ratchet but not shown)."""
    return FieldError(ErrorType.FORBIDDEN, path, None, detail, offending=offending)


def not_found(path: Path, value: Any, detail: str = "") -> FieldError:
    """A reference to an object that does not exist."""
    return FieldError(ErrorType.NOT_FOUND, path, value, detail)


def warning(path: Path, text: str, rule: str = "") -> str:
    """A warning about a field, fit for kubectl: one line, no control characters, the text whole
    when it fits, and always the id of the rule it is about (`rule`, "" for advice)."""
    shown = _CONTROL.sub(" ", str(path))
    suffix = rule_suffix(rule)
    room = MAX_WARNING_CHARS - len(text) - len(suffix) - 2
    if len(shown) > room:
        keep = max(room - 3, 8)
        shown = shown[: keep // 2] + "..." + shown[len(shown) - (keep - keep // 2):]
    return sanitize_warning(f"{shown}: {text}", suffix)


def sanitize_warning(text: str, suffix: str = "") -> str:
    """Make a warning survive kube-apiserver: no control characters, bounded length, and `suffix`
    (the rule id) kept whole at its end."""
    text = _CONTROL.sub(" ", text)
    room = MAX_WARNING_CHARS - len(suffix)
    if len(text) > room:
        text = text[: room - 3] + "..."
    return text + suffix


@dataclass
class Findings:
    """What validation found: errors reject the object, warnings only inform."""

    errors: list[FieldError] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # The rule id of each warning that is about a rule (one entry per such warning; advice has none).
    warning_rules: list[str] = field(default_factory=list)

    def error(self, err: FieldError, rule: str = "") -> None:
        """Record an error found by `rule`, an id of webhook/core/validation/rules.py, whose table row
        gives the error its tier."""
        if rule and rule != err.rule:
            from webhook.core.validation.rules import RULES  # the table imports Tier from here

            err = replace(err, rule=rule, tier=RULES[rule].tier)
        self.errors.append(err)

    def warn(self, path: Path, text: str, rule: str = "") -> None:
        """Record a warning about a field, about the rule `rule` or ("") advice."""
        self.warnings.append(warning(path, text, rule))
        if rule:
            self.warning_rules.append(rule)

    def present_as(self, raw: Any, kind: type | tuple[type, ...], path: Path, detail: str) -> bool:
        """Whether `raw` is set and of `kind`, so its rules apply; a value of another type is an error."""
        if raw is None:
            return False
        if not isinstance(raw, kind):
            self.error(invalid(path, raw, detail), rule="object.field-type")
            return False
        return True

    def merge(self, other: Findings) -> None:
        """Add everything another validation found."""
        self.errors.extend(other.errors)
        self.warnings.extend(other.warnings)
        self.warning_rules.extend(other.warning_rules)

    def excused(self, errors: list[FieldError], note: Callable[[FieldError], str]) -> Findings:
        """These findings with `errors` turned into warnings (`note` words each) that keep their rule."""
        kept = Findings([e for e in self.errors if e not in errors], list(self.warnings), list(self.warning_rules))
        for e in errors:
            kept.warn(e.path, note(e), e.rule)
        return kept

    def ratchet(self, old: Findings) -> Findings:
        """Downgrade errors the old object already had to warnings.

        An update must not be refused for a problem it did not introduce: KKP's controllers
        update Clusters all the time, and a Secret deleted yesterday must not wedge them.
        """
        return self.excused([e for e in self.errors if e in old.errors],
                            lambda e: f"wrong before this update too, please fix: {e.body}")


def invalid_message(kind: str, name: str, errors: list[FieldError]) -> str:
    """The denial message, worded like kube-apiserver's own StatusReasonInvalid."""
    listed = errors[0].shown() if len(errors) == 1 else "[" + ", ".join(e.shown() for e in errors) + "]"
    return f"{kind} {json.dumps(name)} is invalid: {listed}"
