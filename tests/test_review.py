"""Reading a review body: load_json reads exactly what json.loads reads, and refuses what it refuses."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from webhook.core.review import load_json

json_values = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(10**40), max_value=10**40),
              st.floats(allow_nan=False), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=5)),
    max_leaves=30)


def outcome(read: Any, body: bytes) -> str:
    """What a reader makes of `body`: the repr of the value (which tells 1 from 1.0 and -0.0 from 0.0),
    or the kind of error."""
    try:
        return repr(read(body))
    except (ValueError, RecursionError) as exc:
        return f"refused: {type(exc).__name__}"


@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_load_json_reads_any_json_as_json_loads_does(value, ascii_only):
    body = json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    assert outcome(load_json, body) == outcome(json.loads, body)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=40))
def test_load_json_refuses_what_json_loads_refuses(body):
    assert outcome(load_json, body) == outcome(json.loads, body)


@pytest.mark.parametrize("body", [
    b'"\\ud800"',  # a lone surrogate, escaped
    b'"\xed\xa0\x80"',  # a lone surrogate, raw
    b"\xef\xbb\xbf{}",  # a UTF-8 byte-order mark
    '{"a": 1}'.encode("utf-16"),
    b"[" * 300 + b"]" * 300,  # deeper than pydantic-core's limit
    b"[NaN, Infinity, -Infinity]",
    b'{"a": 1, "a": 2}',
    b"1" * 5000,  # more digits than Python converts
    b'"a\tb"',  # a raw control character
    b"1e400",
    b"-0",
])
def test_load_json_on_the_edges_of_either_parser(body):
    assert outcome(load_json, body) == outcome(json.loads, body)
