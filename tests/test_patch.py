"""Recorded JSON patches are checked against an independent RFC 6902 implementation (jsonpatch)."""

import copy

import jsonpatch
import pytest

from webhook.core.patch import apply_patch, record_change

ITEM = {"name": "x", "mountPath": "/x"}
SHARED = [ITEM, "a", "b"]

# (document, parent path, key, new value): the document's map at the parent path gets `key` = new.
CASES = [
    ({}, "", "a", 1),
    ({"a": 1}, "", "a", 2),
    ({"a": 1}, "", "b", {"c": [1, 2]}),
    ({"v": True}, "", "v", 1),
    ({"v": 1}, "", "v", 1.0),
    ({"v": None}, "", "v", {}),
    ({"v": [1]}, "", "v", {"0": 1}),
    ({"v": {"0": 1}}, "", "v", [1]),
    ({"l": SHARED}, "", "l", [*SHARED, "c", {"d": 1}]),
    ({"l": SHARED}, "", "l", [ITEM, "z", "b"]),
    ({"l": SHARED}, "", "l", [{"name": "x", "mountPath": "/y"}, "a", "b", "c"]),
    ({"l": SHARED}, "", "l", [ITEM]),
    ({"l": [True]}, "", "l", [1]),
    ({"m": {"a/b": {"c~d": 1}}}, "/m", "a/b", {"c~d": 2}),
    ({"m": {"a": {}}}, "/m/a", "x~y/z", "1"),
]


def _parent(doc, path):
    for token in [t for t in path.split("/") if t]:
        doc = doc[token]
    return doc


@pytest.mark.parametrize(("doc", "parent_path", "key", "new"), CASES)
def test_recorded_patch_turns_the_old_value_into_the_new(doc, parent_path, key, new):
    want = copy.deepcopy(doc)
    _parent(want, parent_path)[key] = copy.deepcopy(new)
    ops = []
    record_change(ops, parent_path, _parent(doc, parent_path), key, new)
    assert ops
    assert jsonpatch.apply_patch(doc, ops) == want
    assert apply_patch(copy.deepcopy(doc), ops) == want


def test_equal_or_shared_values_record_nothing():
    ops = []
    record_change(ops, "", {"l": SHARED}, "l", SHARED)
    record_change(ops, "", {"l": SHARED}, "l", list(SHARED))
    record_change(ops, "", {"l": SHARED}, "l", [copy.deepcopy(ITEM), "a", "b"])  # other objects, equal
    record_change(ops, "", {"a": {"b": 1}}, "a", {"b": 1})
    assert ops == []


def test_kept_item_is_left_to_its_own_ops():
    ops = []
    edited = {**ITEM, "readOnly": True}
    record_change(ops, "/spec", {"l": SHARED}, "l", [edited, "a", "b", "c"], keep=0)
    assert ops == [{"op": "add", "path": "/spec/l/3", "value": "c"}]


def test_keys_are_escaped_as_json_pointers():
    ops = []
    record_change(ops, "/metadata/annotations", {}, "a.io/x~y", "1")
    assert ops == [{"op": "add", "path": "/metadata/annotations/a.io~1x~0y", "value": "1"}]
