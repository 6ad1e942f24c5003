"""One pass over every string of a resource, looking for exchange keys.

Each string is hashed once (SHA-256, compared with the known keys' fingerprints) and
searched once for a known key's Vault path. A string is also split into tokens, so a key
inside ``--api-key=<key>``, a ``KEY=<key>`` line or a JSON document is found too, and a
base64 string (a Secret's ``data``, or any value that decodes to text) is searched as the
text it encodes. The walk reads the SDK's proxies' raw targets, never their values one by
one, so an unknown value cannot raise and nothing is read twice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

from .keybook import Key, KeyBook

MIN_MATERIAL: Final = 12
"""Shorter strings are not compared: no exchange issues keys that short."""
MAX_DEPTH: Final = 100
_SEPARATORS: Final = re.compile(r"[\s\"'`,;:{}\[\]()<>|&]+")
_BASE64: Final = re.compile(r"[A-Za-z0-9+/_-]{14,}={0,2}")

How = Literal["material", "path"]


@dataclass(frozen=True)
class Hit:
    """A key found in a resource: a copy of its material, or its Vault path."""

    key: Key
    how: How
    where: str
    """The field it was found in, as a dotted path (``data.api_key``, ``spec.template...env[0].value``)."""


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def decode_base64(text: str) -> str | None:
    """The text a base64 string encodes, or None when it is not base64 of UTF-8 text."""
    if len(text) % 4 or not _BASE64.fullmatch(text):
        return None
    try:
        raw = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
        return raw.decode("utf-8")
    except (binascii.Error, ValueError):
        return None


def raw_children(value: object) -> list[tuple[object, object]] | None:
    """``(key or index, value)`` pairs of a mapping or list, through the SDK's proxies; None for a leaf."""
    if isinstance(value, dict):
        return list(value.items())
    if isinstance(value, list):
        return list(enumerate(value))
    if isinstance(value, Mapping):
        try:
            target = value["__target"]  # the SDK's proxies hand their raw target over under this key
            if isinstance(target, dict):
                return list(target.items())
        except Exception:  # a foreign mapping: read it key by key below
            pass
        out: list[tuple[object, object]] = []
        try:
            for key in list(value):
                try:
                    out.append((key, value[key]))
                except Exception:  # unknown during preview: nothing to find in it
                    continue
        except Exception:  # an unreadable mapping holds nothing the scan can use
            return []
        return out
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray)):
        try:
            target = value["__target"]  # type: ignore[call-overload]
            if isinstance(target, list):
                return list(enumerate(target))
        except Exception:  # a plain sequence
            pass
        try:
            return list(enumerate(list(value)))
        except Exception:  # an unreadable sequence
            return []
    return None


class Scanner:
    """Finds known keys in resources; one instance per stack, sharing the key book."""

    def __init__(self, book: KeyBook, skip_fields: frozenset[str]) -> None:
        self.book = book
        self.skip_fields = skip_fields
        """Field names whose values name a key on purpose (keyfence's own annotations): not searched."""
        self.truncated = False

    def material(self, text: str) -> Key | None:
        """The key whose material ``text`` is, or holds as a token."""
        digests = self.book.by_digest
        if not digests or len(text) < MIN_MATERIAL:
            return None
        found = digests.get(digest(text))
        if found is not None:
            return found
        parts = _SEPARATORS.split(text)
        if len(parts) == 1 and "=" not in text:
            return None
        for part in parts:
            candidates = [part]
            cut = part.find("=")
            while 0 <= cut < len(part) - 1 and part[cut + 1] == "=":
                cut = part.find("=", cut + 2)
            if 0 <= cut < len(part) - 1:
                candidates.append(part[cut + 1 :])
            for candidate in candidates:
                if len(candidate) >= MIN_MATERIAL:
                    found = digests.get(digest(candidate))
                    if found is not None:
                        return found
        return None

    def _text(self, text: str, where: list[object], out: list[Hit], *, paths: bool, encoded: bool) -> None:
        key = self.material(text)
        if key is not None:
            out.append(Hit(key, "material", _join(where)))
        if paths and "/" in text and self.book.has_paths:
            out.extend(Hit(k, "path", _join(where)) for k in self.book.paths_in(text))
        if encoded or len(text) >= 16:
            decoded = decode_base64(text)
            if decoded is not None:
                self._text(decoded, where, out, paths=paths, encoded=False)

    def scan(self, props: object, *, skip: frozenset[str] = frozenset(), encoded: str | None = None) -> list[Hit]:
        """Every key found in ``props``; top-level fields in ``skip`` are left out (already read).

        ``encoded`` names a top-level field whose values are base64 (a Secret's ``data``).
        """
        out: list[Hit] = []
        self._walk(props, [], out, 0, skip, encoded, paths=True, b64=False)
        return out

    def _walk(
        self,
        value: object,
        where: list[object],
        out: list[Hit],
        depth: int,
        skip: frozenset[str],
        encoded: str | None,
        *,
        paths: bool,
        b64: bool,
    ) -> None:
        if isinstance(value, str):
            self._text(value, where, out, paths=paths, encoded=b64)
            return
        children = raw_children(value)
        if not children:
            return
        if depth >= MAX_DEPTH:
            self.truncated = True
            return
        for name, child in children:
            if depth == 0 and name in skip:
                continue
            where.append(name)
            if isinstance(name, str) and len(name) >= MIN_MATERIAL:
                key = self.material(name)
                if key is not None:
                    out.append(Hit(key, "material", _join(where)))
            self._walk(
                child,
                where,
                out,
                depth + 1,
                skip,
                encoded,
                paths=paths and not (isinstance(name, str) and name in self.skip_fields),
                b64=b64 or (depth == 0 and name == encoded),
            )
            where.pop()


def _join(where: list[object]) -> str:
    out = ""
    for part in where:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
