"""YAML output for people: multi-line strings as `|` blocks, keys in their original order."""

from __future__ import annotations

from typing import Any, TextIO

import yaml


class _Dumper(yaml.SafeDumper):
    pass


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def dump(doc: Any, stream: TextIO) -> None:
    """Write `doc` as block-style YAML."""
    yaml.dump(doc, stream, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=1 << 16)
