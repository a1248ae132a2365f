"""The operator's configuration file, read at start and reloaded when a ConfigMap volume changes it."""

from __future__ import annotations

import logging
from pathlib import Path

from webhook.core.operator_config import DEFAULT, ConfigError, OperatorConfig, parse

log = logging.getLogger("audit_webhook.operator_config")


class ConfigFile:
    """The configuration in a file, reloaded by `poll()` when its content changes."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._text: str | None = None
        self.current = DEFAULT
        if path is not None:
            self.current = self._read()

    def _read(self) -> OperatorConfig:
        assert self.path is not None
        try:
            text = self.path.read_text()
        except OSError as exc:
            raise ConfigError(f"{self.path}: cannot read: {exc.strerror}") from None
        self._text = text
        return parse(text, str(self.path))

    def poll(self) -> bool:
        """Reload if the file changed; a broken new version is logged once and the last good one kept."""
        if self.path is None:
            return False
        try:
            text = self.path.read_text()
        except OSError:
            return False  # a ConfigMap volume swaps its files: the next poll sees the new one
        if text == self._text:
            return False
        self._text = text
        try:
            self.current = parse(text, str(self.path))
        except ConfigError as exc:
            log.error("keeping the previous configuration: %s", exc)
            return False
        log.info("configuration reloaded from %s", self.path)
        return True
