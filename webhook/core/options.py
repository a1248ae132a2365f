"""Server-wide rendering options: the sidecar image and the fluent-bit flavour."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict

from webhook.core.defaults import defaults

FluentBitFormat = Literal["classic", "yaml"]


class Options(BaseModel):
    """Choices an operator makes once for every cluster (`audit-webhook serve` flags)."""

    model_config = ConfigDict(frozen=True)

    sidecar_image: str
    fluentbit_format: FluentBitFormat = "classic"
    # A record_modifier filter that adds `cluster_id` to every record, before the user's filters.
    cluster_id_record: bool = True

    @classmethod
    def default(cls) -> Options:
        """The options of `webhook/data/defaults.yaml`."""
        data = defaults()
        return cls(sidecar_image=data["sidecar"]["image"], fluentbit_format=data["fluentBit"]["format"])
