"""Which build this process is, told the same way by `audit-webhook version` and audit_webhook_build_info."""

from __future__ import annotations

import os
import platform

from webhook import __version__

# Set by the image build (Dockerfile: --build-arg REVISION=<commit>); "unknown" outside an image.
REVISION_ENV = "AUDIT_WEBHOOK_REVISION"


def build_info() -> dict[str, str]:
    """The version, the commit the image was built from and Python's version, as label values."""
    return {"version": __version__, "revision": os.environ.get(REVISION_ENV) or "unknown",
            "python_version": platform.python_version()}


def describe() -> str:
    """One line for people: `audit-webhook 0.1.0 (revision abc1234, Python 3.11.10)`."""
    info = build_info()
    return f"audit-webhook {info['version']} (revision {info['revision']}, Python {info['python_version']})"
