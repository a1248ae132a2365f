"""YAML in and out: libyaml's safe loader when present, and output for people."""

from __future__ import annotations

import io
from collections.abc import Iterator
from typing import Any, TextIO

import yaml

# libyaml parses several times faster than the pure-Python loader, with the same safe types.
_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
YAMLError = yaml.YAMLError


# What one document may cost, aliases expanded: a 600-byte "billion laughs" alias bomb expands to
# hundreds of millions of nodes, and whatever walks the result (validation, JSON) pays for each.
# A KKP audit policy has about a thousand nodes, a kubeconfig a few dozen, a Cluster a few hundred.
MAX_NODES = 200_000
MAX_BYTES = 8 * 1024 * 1024
# Nesting: a Cluster or a fluent-bit configuration is about a dozen levels deep; walking a deeper
# document recursively would exhaust the stack (and libyaml itself stops at 1000).
MAX_DEPTH = 100


class TooLarge(yaml.YAMLError):
    """A document over the budget; refused before it is built."""


def _check_budget(text: str | bytes, max_nodes: int) -> None:
    """Count the nodes of every document as if its aliases were expanded, on the parser's events."""
    if len(text) > MAX_BYTES:
        raise TooLarge(f"is {len(text)} bytes; at most {MAX_BYTES} are read")
    try:
        _count(yaml.parse(text, Loader=_Loader), max_nodes)
    except yaml.MarkedYAMLError as exc:
        # libyaml scans ahead of the events: past its own limit (1000 levels) it stops before _count can.
        if "nesting depth" in str(exc.problem):
            raise TooLarge(f"nests more than {MAX_DEPTH} levels deep") from None
        raise


def _count(events: Iterator[yaml.Event], max_nodes: int) -> None:
    sizes: dict[str, int] = {}
    open_collections: list[tuple[str | None, int]] = []
    expanded = 0
    for event in events:
        if isinstance(event, yaml.DocumentStartEvent):
            sizes, expanded = {}, 0
        elif isinstance(event, yaml.ScalarEvent):
            expanded += 1
            if event.anchor:
                sizes[event.anchor] = 1
        elif isinstance(event, yaml.AliasEvent):
            expanded += sizes.get(event.anchor, 1)
        elif isinstance(event, yaml.CollectionStartEvent):
            expanded += 1
            open_collections.append((event.anchor, expanded - 1))
            if len(open_collections) > MAX_DEPTH:
                raise TooLarge(f"nests more than {MAX_DEPTH} levels deep")
        elif isinstance(event, yaml.CollectionEndEvent):
            anchor, start = open_collections.pop()
            if anchor:
                sizes[anchor] = expanded - start
        if expanded > max_nodes:
            raise TooLarge(f"has more than {max_nodes} nodes with its aliases expanded")


def load(text: str | bytes, max_nodes: int = MAX_NODES) -> Any:
    """One YAML document, safely (no object construction) and within a budget of nodes and bytes."""
    _check_budget(text, max_nodes)
    return yaml.load(text, Loader=_Loader)


def load_all(text: str, max_nodes: int = MAX_NODES) -> Iterator[Any]:
    """Every document of a multi-document YAML text, safely, each within the budget."""
    _check_budget(text, max_nodes)
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
