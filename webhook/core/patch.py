"""RFC 6902 JSON patch operations: recorded as the injection changes a Pod, and applied. Pure.

The injection builds its result copy-on-write: it replaces only the lists it changes, and in
them only the items it changes, and it appends. So the patch is recorded field by field from
what it did, never by diffing whole Pods, and names nothing it did not change.
"""

from __future__ import annotations

import operator
from itertools import compress
from typing import Any

Op = dict[str, Any]
_MISSING = object()


def escape(token: str) -> str:
    """A map key as a JSON-pointer token."""
    if "~" in token or "/" in token:
        return token.replace("~", "~0").replace("/", "~1")
    return token


def record_change(ops: list[Op], parent_path: str, parent: dict[str, Any], key: str, new: Any,
                  keep: int | None = None) -> None:
    """Record the operations that turn `parent[key]` into `new`.

    When both are lists, `new` must share the items it keeps with the old list (copy on write):
    items that are other objects and unequal are replaced whole, and the list's new tail is
    added. `keep` is an index whose item was edited in place and recorded on its own.
    Anything else is one `add` or `replace` of the whole value.
    """
    old = parent.get(key, _MISSING)
    if old is new:
        return
    path = f"{parent_path}/{escape(key)}"
    if type(old) is not list or type(new) is not list:
        if old is _MISSING or type(old) is not type(new) or old != new:  # True == 1, but not in JSON
            ops.append({"op": "add" if old is _MISSING else "replace", "path": path, "value": new})
        return
    # Found in C: the positions whose items are not the very same objects.
    for i in compress(range(len(new)), map(operator.is_not, old, new)):
        if i != keep and (type(old[i]) is not type(new[i]) or old[i] != new[i]):
            ops.append({"op": "replace", "path": f"{path}/{i}", "value": new[i]})
    if len(new) > len(old):
        ops.extend({"op": "add", "path": f"{path}/{i}", "value": new[i]} for i in range(len(old), len(new)))
    elif len(old) > len(new):
        ops.extend({"op": "remove", "path": f"{path}/{i}"} for i in reversed(range(len(new), len(old))))


def _unescape(token: str) -> str:
    return token.replace("~1", "/").replace("~0", "~")


def apply_patch(doc: Any, ops: list[Op]) -> Any:
    """Apply the add/replace/remove operations `record_change` records, in place; returns `doc`."""
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
