"""Go duration strings ("10s", "1m30s", "1.5h"), as time.ParseDuration reads them."""

from __future__ import annotations

import re
from decimal import Decimal

_UNITS = {
    "ns": Decimal("1e-9"),
    "us": Decimal("1e-6"),
    "µs": Decimal("1e-6"),
    "μs": Decimal("1e-6"),
    "ms": Decimal("1e-3"),
    "s": Decimal(1),
    "m": Decimal(60),
    "h": Decimal(3600),
}
_PART = r"(?:\d+(?:\.\d*)?|\.\d+)(?:ns|us|µs|μs|ms|s|m|h)"
_DURATION_RE = re.compile(rf"^[+-]?(?:{_PART})+$")
_PART_RE = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


def parse_duration(text: str) -> Decimal | None:
    """Seconds in a Go duration string, or None when Go would refuse it."""
    if text in ("0", "+0", "-0"):
        return Decimal(0)
    if not _DURATION_RE.match(text):
        return None
    seconds = sum(Decimal(num) * _UNITS[unit] for num, unit in _PART_RE.findall(text))
    return -seconds if text.startswith("-") else seconds
