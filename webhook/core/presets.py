"""Audit policy presets, kept as YAML files in the package's `presets/` folder.

A preset's policy is the file's text, byte for byte: that is what lands in the `audit-config`
ConfigMap, comments included, so an operator reading the ConfigMap sees why each rule is there.
Every `<name>.yaml` there is a preset called `<name>`: adding a preset means adding its file.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from typing import Any

from webhook.core import yamlio

_SUFFIX = ".yaml"
_FOLDER = resources.files("webhook").joinpath("presets")


def _discover() -> tuple[str, ...]:
    """The names of the `*.yaml` files in the presets folder, sorted."""
    found = (entry.name for entry in _FOLDER.iterdir() if entry.is_file())
    return tuple(sorted(name.removesuffix(_SUFFIX) for name in found if name.endswith(_SUFFIX)))


PRESETS: tuple[str, ...] = _discover()
# What a cluster without a preset starts with (created once, then left to the user).
DEFAULT_PRESET = "metadata"
# Accepted values of `auditLogging.policyPreset`; "" means "no preset, a custom policy".
SUPPORTED_VALUES: tuple[str, ...] = ("", *PRESETS)


@cache
def policy_text(preset: str) -> str:
    """The policy file of a preset (`""` gives the default policy)."""
    name = preset or DEFAULT_PRESET
    if name not in PRESETS:
        raise KeyError(f"unknown audit policy preset {name!r}")
    return _FOLDER.joinpath(f"{name}{_SUFFIX}").read_text(encoding="utf-8")


def policy(preset: str) -> dict[str, Any]:
    """The parsed policy of a preset."""
    return yamlio.load(policy_text(preset))
