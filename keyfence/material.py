"""An exchange API key pair and its fingerprint: the one type that carries key material.

Kept apart from Vault and from key resolution so both can use it without importing each
other, and so every place that may hold material is found by importing this module.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Final

MAX_MATERIAL_CHARS: Final = 1024
"""Kraken keys are under 100 characters; anything far longer is the wrong thing pasted."""


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

    @property
    def secret_fingerprint(self) -> str:
        """Hex SHA-256 of the api secret: as safe to show as the fingerprint (the secret is random)."""
        return fingerprint_of(self.api_secret)


def fingerprint_of(api_key: str) -> str:
    """Hex SHA-256 of the api key: a non-secret identity two copies of one key share."""
    return hashlib.sha256(api_key.encode("utf-8")).hexdigest()


def material_problems(api_key: str, api_secret: str) -> list[str]:
    """What makes a pair unusable for Kraken, naming the field and never its value.

    The secret must be strict base64 with its padding: Kraken signs requests with HMAC over
    the decoded secret, so a secret that does not decode is a truncated or mangled copy.
    ``keyfence keys register`` and the deploy pre-flight apply the same rules, so a version
    written by hand is held to what registration demands.
    """
    problems = []
    for name, value in (("api key", api_key), ("api secret", api_secret)):
        if not value:
            problems.append(f"the {name} is empty")
        elif len(value) > MAX_MATERIAL_CHARS:
            problems.append(f"the {name} is over {MAX_MATERIAL_CHARS} characters; is it the right value?")
        elif any(c.isspace() for c in value):
            problems.append(f"the {name} contains whitespace; paste it exactly, with no blanks in it")
        elif not value.isascii() or not value.isprintable():
            problems.append(f"the {name} contains characters that are not printable ASCII")
    if problems:
        return problems
    try:
        decoded = base64.b64decode(api_secret, validate=True)
    except (binascii.Error, ValueError):
        problems.append(
            "the api secret is not valid base64 (Kraken signs requests with the base64-decoded "
            "secret); store it exactly as Kraken showed it, padding '=' included"
        )
    else:
        if not decoded:
            problems.append("the api secret decodes to nothing")
    if api_key == api_secret:
        problems.append("the api key and the api secret are the same value; one of them is misplaced")
    return problems
