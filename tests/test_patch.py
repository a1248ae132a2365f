"""The JSON patch is checked against an independent RFC 6902 implementation (jsonpatch)."""

import jsonpatch
import pytest

from webhook.patch import apply_patch, make_patch

CASES = [
    ({}, {}),
    ({"a": 1}, {"a": 2}),
    ({"a": 1}, {"a": 1, "b": {"c": [1, 2]}}),
    ({"a": 1, "b": 2}, {"a": 1}),
    ({"l": [1, 2, 3]}, {"l": [1, 2, 3, 4, 5]}),
    ({"l": [1, 2, 3]}, {"l": [1]}),
    ({"l": [1, {"x": 1}]}, {"l": [1, {"x": 2, "y": 3}]}),
    ({"a/b": {"c~d": 1}}, {"a/b": {"c~d": 2}}),
    ({"v": True}, {"v": 1}),
    ({"v": 1}, {"v": 1.0}),
    ({"v": None}, {"v": {}}),
    ({"v": [1]}, {"v": {"0": 1}}),
    ({"k": "x"}, {"k": "x"}),
]


@pytest.mark.parametrize(("src", "dst"), CASES)
def test_patch_turns_src_into_dst(src, dst):
    ops = make_patch(src, dst)
    assert jsonpatch.apply_patch(src, ops) == dst
    assert apply_patch(jsonpatch.apply_patch(src, []), ops) == dst


def test_equal_documents_give_an_empty_patch():
    doc = {"a": [1, {"b": [True, None, "x"]}]}
    assert make_patch(doc, {"a": [1, {"b": [True, None, "x"]}]}) == []


def test_keys_are_escaped_as_json_pointers():
    ops = make_patch({"metadata": {"annotations": {}}}, {"metadata": {"annotations": {"a.io/x~y": "1"}}})
    assert ops == [{"op": "add", "path": "/metadata/annotations/a.io~1x~0y", "value": "1"}]
