"""The data files a platform team reads or changes: defaults, plugin names. Loaded once."""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from webhook.core import yamlio


def load_data(name: str) -> Any:
    """A file of webhook/data, parsed."""
    return yamlio.load(resources.files("webhook").joinpath("data", name).read_text(encoding="utf-8"))


@cache
def defaults() -> dict[str, Any]:
    """The contents of `webhook/data/defaults.yaml`."""
    return load_data("defaults.yaml")


@cache
def fluentbit_plugins() -> dict[str, tuple[str, ...]]:
    """Known fluent-bit plugin names by section kind (`filters`, `outputs`), sorted."""
    return {kind: tuple(sorted(names)) for kind, names in load_data("fluentbit-plugins.yaml").items()}
