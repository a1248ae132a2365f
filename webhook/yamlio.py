"""YAML in and out: libyaml's safe loader when present, and output for people."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, TextIO

import yaml

# libyaml parses several times faster than the pure-Python loader, with the same safe types.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YAMLError = yaml.YAMLError


def load(text: str | bytes) -> Any:
    """One YAML document, safely (no object construction)."""
    return yaml.load(text, Loader=_Loader)


def load_all(text: str) -> Iterator[Any]:
    """Every document of a multi-document YAML text, safely."""
    return yaml.load_all(text, Loader=_Loader)


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: Any, stream: TextIO) -> None:
    """Write `doc` as block-style YAML: multi-line strings as `|` blocks, keys in their order."""
    yaml.dump(doc, stream, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 16)


def dumps(doc: Any) -> str:
    """`dump` into a string."""
    buffer = io.StringIO()
    dump(doc, buffer)
    return buffer.getvalue()
