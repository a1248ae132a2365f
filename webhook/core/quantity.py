"""Kubernetes resource quantities ("100m", "60Mi", "1e3"), parsed to exact decimals."""

from __future__ import annotations

import re
from decimal import Decimal

# The grammar of k8s.io/apimachinery resource.ParseQuantity, written out.
QUANTITY_RE = re.compile(
    r"^(?P<num>[+-]?(?:\d+(?:\.\d*)?|\.\d+))(?P<suffix>Ki|Mi|Gi|Ti|Pi|Ei|n|u|m|k|M|G|T|P|E|[eE][+-]?\d+)?$"
)
QUANTITY_FORMAT = "'^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}


def parse_quantity(value: object) -> Decimal | None:
    """The exact value of a quantity given as a string or a number, or None if it is not one."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        value = str(value)
    if not isinstance(value, str):
        return None
    match = QUANTITY_RE.match(value)
    if match is None:
        return None
    number = Decimal(match["num"])
    suffix = match["suffix"] or ""
    if suffix in _BINARY:
        return number * (1024 ** _BINARY[suffix])
    if suffix in _DECIMAL:
        return number.scaleb(_DECIMAL[suffix])
    return number.scaleb(int(suffix[1:]))


def same_quantity(a: object, b: object) -> bool:
    """True when both parse and are equal ("1000m" and "1"), as kube-apiserver would see them."""
    qa, qb = parse_quantity(a), parse_quantity(b)
    return qa is not None and qa == qb
