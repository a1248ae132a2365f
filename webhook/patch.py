"""RFC 6902 JSON patch from the raw request object to the desired one: pure.

Diffing the raw object (not a model of it) is what keeps fields we do not know intact.
Lists are compared position by position and only grow or shrink at the end, which is
exactly how the injection changes them, so the patch names only what changed.
"""

from __future__ import annotations

from typing import Any

Op = dict[str, Any]


def escape(token: str) -> str:
    """A map key as a JSON-pointer token."""
    return token.replace("~", "~0").replace("/", "~1")


def _same_scalar(a: Any, b: Any) -> bool:
    # True == 1 in Python, but not in JSON.
    return type(a) is type(b) and a == b


def make_patch(src: Any, dst: Any, path: str = "") -> list[Op]:
    """The operations that turn `src` into `dst`."""
    if src is dst:
        return []  # shared, unchanged part of a copy-on-write result
    if isinstance(src, dict) and isinstance(dst, dict):
        ops: list[Op] = [{"op": "remove", "path": f"{path}/{escape(k)}"} for k in src if k not in dst]
        for key, value in dst.items():
            if key not in src:
                ops.append({"op": "add", "path": f"{path}/{escape(key)}", "value": value})
            elif src[key] is not value:  # shared parts of a copy-on-write result are skipped unvisited
                ops.extend(make_patch(src[key], value, f"{path}/{escape(key)}"))
        return ops
    if isinstance(src, list) and isinstance(dst, list):
        ops = []
        for i in range(min(len(src), len(dst))):
            if src[i] is not dst[i]:
                ops.extend(make_patch(src[i], dst[i], f"{path}/{i}"))
        ops.extend({"op": "add", "path": f"{path}/{i}", "value": dst[i]} for i in range(len(src), len(dst)))
        ops.extend({"op": "remove", "path": f"{path}/{i}"} for i in reversed(range(len(dst), len(src))))
        return ops
    if isinstance(src, dict | list) or isinstance(dst, dict | list) or not _same_scalar(src, dst):
        return [{"op": "replace", "path": path, "value": dst}]
    return []


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
