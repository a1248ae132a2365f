"""The file store: a directory of YAML manifests, re-read when a file changes."""

from __future__ import annotations

import logging
import sys
from functools import cache
from pathlib import Path
from typing import Any

from webhook.adapters.store import MemoryStore
from webhook.core import yamlio
from webhook.core.snapshot import LoadError, Snapshot

log = logging.getLogger(__name__)
_SUFFIXES = (".yaml", ".yml")


# `-` on a command line: the manifests come from standard input.
STDIN = Path("-")


@cache
def stdin_text() -> str:
    return sys.stdin.read()  # read once: a command may look at its input twice


def manifest_files(root: Path) -> list[Path]:
    """Every `*.yaml`/`*.yml` below `root`, sub-folders included, in a stable order (`-`: stdin)."""
    if root == STDIN or root.is_file():
        return [root]
    if not root.exists():
        raise LoadError(f"{root}: cannot read: no such file or directory")
    return sorted(p for p in root.rglob("*") if p.suffix in _SUFFIXES and p.is_file())


def read_manifests(path: Path) -> list[dict[str, Any]]:
    """The objects of one (multi-document) YAML file; `List` kinds are flattened."""
    try:
        text = stdin_text() if path == STDIN else path.read_text(encoding="utf-8")
        docs = list(yamlio.load_all(text))
    except OSError as exc:
        raise LoadError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise LoadError(f"{path}: cannot read: not UTF-8 text") from None
    except yamlio.TooLarge as exc:
        raise LoadError(f"{path}: exceeds the YAML budget: {exc}") from None
    except yamlio.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise LoadError(f"{path}: not valid YAML{where}") from None
    out: list[dict[str, Any]] = []
    for doc in docs:
        if isinstance(doc, dict) and doc.get("kind") == "List" and isinstance(doc.get("items"), list):
            out.extend(i for i in doc["items"] if isinstance(i, dict))
        elif isinstance(doc, dict):
            out.append(doc)
    return out


def load_snapshot(root: Path) -> Snapshot:
    """Read every manifest below `root` into an indexed snapshot."""
    if root != STDIN and not root.exists():
        raise LoadError(f"{root}: no such file or directory")
    snap = Snapshot()
    for path in manifest_files(root):
        for obj in read_manifests(path):
            snap.add(obj, where=str(path))
    return snap


class FileStore(MemoryStore):
    """Objects from a directory of YAML files; `refresh()` re-reads it when anything changed."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self._stamp = self._fingerprint()
        super().__init__(load_snapshot(root))

    def _fingerprint(self) -> tuple[tuple[str, int, int], ...]:
        stamps = []
        for p in manifest_files(self.root):
            try:
                st = p.stat()
            except OSError:
                continue
            stamps.append((str(p), st.st_mtime_ns, st.st_size))
        return tuple(stamps)

    def refresh(self) -> bool:
        """Re-read the directory if a file was added, removed or changed; True if it was."""
        stamp = self._fingerprint()
        if stamp == self._stamp:
            return False
        self._stamp = stamp  # a broken file is reported once per change, not on every poll
        try:
            snapshot = load_snapshot(self.root)
        except LoadError as exc:
            log.error("keeping the previous objects: %s", exc)
            return False
        self.snapshot = snapshot
        log.info("reloaded %d clusters and %d seeds from %s",
                 len(snapshot.all_clusters()), len(snapshot.seed_objects), self.root)
        return True
