"""RFC 6902 JSON patch from the raw request object to the desired one: pure.

Diffing the raw object (not a model of it) is what keeps fields we do not know intact.
Lists are compared position by position and only grow or shrink at the end, which is
exactly how the injection changes them, so the patch names only what changed.
"""

from __future__ import annotations

import operator
from itertools import compress
from typing import Any

Op = dict[str, Any]


def escape(token: str) -> str:
    """A map key as a JSON-pointer token."""
    if "~" in token or "/" in token:
        return token.replace("~", "~0").replace("/", "~1")
    return token


def make_patch(src: Any, dst: Any, path: str = "") -> list[Op]:
    """The operations that turn `src` into `dst`."""
    ops: list[Op] = []
    _diff(src, dst, path, ops)
    return ops



def _diff(src: Any, dst: Any, path: str, ops: list[Op]) -> None:
    # Parts a copy-on-write result shares with its input are skipped by identity, unvisited;
    # that is what makes the diff of a large Pod cost only what the injection changed.
    if src is dst:
        return
    kind = type(src)
    if kind is not type(dst):  # True == 1 in Python, but not in JSON
        ops.append({"op": "replace", "path": path, "value": dst})
    elif kind is dict:
        if not src.keys() <= dst.keys():
            ops.extend({"op": "remove", "path": f"{path}/{escape(k)}"} for k in src if k not in dst)
        # The keys whose values are not the very same objects, found without a Python-level loop.
        for key in compress(dst, map(operator.is_not, map(src.get, dst), dst.values())):
            if key in src:
                _diff(src[key], dst[key], f"{path}/{escape(key)}", ops)
            else:
                ops.append({"op": "add", "path": f"{path}/{escape(key)}", "value": dst[key]})
    elif kind is list:
        for i in compress(range(len(dst)), map(operator.is_not, src, dst)):
            _diff(src[i], dst[i], f"{path}/{i}", ops)
        ops.extend({"op": "add", "path": f"{path}/{i}", "value": dst[i]} for i in range(len(src), len(dst)))
        ops.extend({"op": "remove", "path": f"{path}/{i}"} for i in reversed(range(len(dst), len(src))))
    elif src != dst:
        ops.append({"op": "replace", "path": path, "value": dst})


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(doc: Any, ops: list[Op]) -> Any:
    """Apply the add/replace/remove operations `make_patch` emits, in place; returns `doc`."""
    for op in ops:
        *parents, last = [_unescape(t) for t in op["path"].split("/")[1:]]
        target = doc
        for token in parents:
            target = target[int(token)] if isinstance(target, list) else target[token]
        if isinstance(target, list):
            index = int(last)
            if op["op"] == "add":
                target.insert(index, op["value"])
            elif op["op"] == "replace":
                target[index] = op["value"]
            else:
                del target[index]
        elif op["op"] == "remove":
            del target[last]
        else:
            target[last] = op["value"]
    return doc
