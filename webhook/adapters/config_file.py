"""The operator's configuration file, read at start and reloaded when a ConfigMap volume changes it."""

from __future__ import annotations

import logging
from pathlib import Path

from webhook.adapters.store.files import STDIN, stdin_text
from webhook.core.operator_config import DEFAULT, ConfigError, OperatorConfig, parse

log = logging.getLogger("audit_webhook.operator_config")


class ConfigFile:
    """The configuration in a file, reloaded by `poll()` when its content changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._raw: bytes | None = None
        self.current = DEFAULT
        if path is not None:
            self.current = self._read()

    def _read(self) -> OperatorConfig:
        assert self.path is not None
        try:
            self._raw = stdin_text().encode() if self.path == STDIN else self.path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read: {exc.strerror}") from None
        except UnicodeDecodeError:
            raise ConfigError(f"{self.path}: cannot read: not UTF-8 text") from None
        return parse(self._decoded(self._raw), str(self.path))

    def _decoded(self, raw: bytes) -> str:
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ConfigError(f"{self.path}: cannot read: not UTF-8 text") from None

    def poll(self) -> bool:
        """Reload if the file changed; a broken new version is logged once and the last good one kept."""
        if self.path is None or self.path == STDIN:  # standard input is read once
            return False
        try:
            raw = self.path.read_bytes()
        except OSError:
            return False  # a ConfigMap volume swaps its files: the next poll sees the new one
        if raw == self._raw:
            return False
        self._raw = raw
        try:
            self.current = parse(self._decoded(raw), str(self.path))
        except ConfigError as exc:
            log.error("keeping the previous configuration: %s", exc)
            return False
        log.info("configuration reloaded from %s", self.path)
        return True
