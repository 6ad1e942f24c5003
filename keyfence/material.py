"""An exchange API key pair and its fingerprint: the one type that carries key material.

Kept apart from Vault and from key resolution so both can use it without importing each
other, and so every place that may hold material is found by importing this module.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field


@dataclass(frozen=True)
class KeyMaterial:
    """An API key pair. Its repr never shows the values, so it cannot leak through logs or tracebacks."""

    api_key: str = field(repr=False)
    api_secret: str = field(repr=False)

    def __repr__(self) -> str:
        return "KeyMaterial(<redacted>)"

    __str__ = __repr__

    @property
    def fingerprint(self) -> str:
        return fingerprint_of(self.api_key)


def fingerprint_of(api_key: str) -> str:
    """Hex SHA-256 of the api key: a non-secret identity two copies of one key share."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()
