"""One pass over every string of a resource, looking for exchange keys.

Each string is hashed once (SHA-256, compared with the known keys' fingerprints) and
searched once for a known key's Vault path. A string is also split into tokens, so a key
inside ``--api-key=<key>``, a ``KEY=<key>`` line, a JSON document, a URL (its path, query or
user info) or a file path is found too, and a base64 or percent-encoded string (a Secret's
``data``, or any value that decodes to text) is searched as the text it encodes. A Pulumi
asset or archive is searched through its text, path or URI.

It is done in two steps: :func:`prepare` walks a resource's properties and lists the
strings that could hold a key, which depends on nothing but the properties (so the pack's
SDK adapter does it while the program still registers), and :class:`Scanner` searches those
lists against the key book once the whole stack is known.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal
from urllib.parse import unquote

import pulumi

from .keybook import Key, KeyBook, path_tokens
from .props import _DictProxy, _ListProxy, open_proxy

MIN_MATERIAL: Final = 12
"""Shorter strings are not compared: no exchange issues keys that short."""
MAX_DEPTH: Final = 100
_SEPARATORS: Final = re.compile(r"[\s\"'`,;:{}\[\]()<>|&]+")
_FINE: Final = re.compile(r"[\s\"'`,;:{}\[\]()<>|&@#!?\\%*^$.]+")
"""Also characters no exchange puts in a key: a URL's ``@``, ``#`` and dots, escapes, punctuation."""
_FINER: Final = re.compile(r"[@#!?\\%*^$.]")
MAX_SPAN: Final = 8
"""Segments (between slashes) a key may span inside a longer path or URL (base64 keys hold ``/``)."""
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
    value = open_proxy(value)
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
    if isinstance(value, (pulumi.Asset, pulumi.Archive)):
        return _asset_children(value)
    return None


def _asset_children(value: pulumi.Asset | pulumi.Archive) -> list[tuple[object, object]]:
    """What a Pulumi asset or archive carries: an asset's text, path or URI; an archive's assets."""
    assets = getattr(value, "assets", None)
    if isinstance(assets, Mapping):
        return list(assets.items())
    carried = ((name, getattr(value, name, None)) for name in ("text", "path", "uri"))
    return [(name, found) for name, found in carried if found is not None]


@dataclass(frozen=True)
class _Seen:
    """What a string can hold, computed once per process for each distinct string."""

    digests: tuple[str, ...]
    """SHA-256 of the string and of each of its tokens long enough to be key material."""
    paths: tuple[tuple[str, ...], ...]
    decoded: str | None


_SEEN: dict[str, _Seen] = {}
_SEEN_LIMIT: Final = 1 << 18
"""Distinct strings remembered across the pack's policies (each policy reads the same stack)."""


def _candidates(text: str) -> list[str]:
    """The pieces of ``text`` a key could be: tokens, values after ``=``, runs of path segments."""
    parts = _SEPARATORS.split(text)
    fine = _FINE.split(text) if _FINER.search(text) else parts
    if len(fine) == 1 and "=" not in text and "/" not in text:
        return [text]
    out = [text]
    for part in parts if fine is parts else (*parts, *fine):
        out.append(part)
        cut = part.find("=")
        while 0 <= cut < len(part) - 1 and part[cut + 1] == "=":
            cut = part.find("=", cut + 2)
        if 0 <= cut < len(part) - 1:
            out.append(part[cut + 1 :])
    for part in fine:
        if "/" in part and len(part) > MIN_MATERIAL:
            out.extend(_spans(part))
    return list(dict.fromkeys(c for c in out if len(c) >= MIN_MATERIAL))


def _spans(part: str) -> Iterator[str]:
    """Every run of up to :data:`MAX_SPAN` segments of ``part`` between slashes, but ``part`` itself."""
    cuts = [at for at, char in enumerate(part) if char == "/"]
    starts, ends = [0, *(c + 1 for c in cuts)], [*cuts, len(part)]
    for first, start in enumerate(starts):
        for end in ends[first : first + MAX_SPAN]:
            if end - start >= MIN_MATERIAL and end - start < len(part):
                yield part[start:end]


def seen(text: str) -> _Seen:
    """The digests, path tokens and base64 content of a string: each string is hashed once."""
    found = _SEEN.get(text)
    if found is None:
        digests: tuple[str, ...] = ()
        if len(text) >= MIN_MATERIAL:
            digests = tuple(digest(c) for c in _candidates(text))
        paths = path_tokens(text) if "/" in text else ()
        decoded = decode_base64(text) if len(text) >= 16 else None
        if decoded is None and "%" in text and (unquoted := unquote(text)) != text:
            decoded = unquoted
        found = _Seen(digests, paths, decoded)
        if len(_SEEN) >= _SEEN_LIMIT:
            _SEEN.clear()
        _SEEN[text] = found
    return found


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
        for candidate in seen(text).digests:
            found = digests.get(candidate)
            if found is not None:
                return found
        return None

    def _text(
        self, text: str, where: Sequence[object], out: list[Hit], *, paths: bool, depth: int = 0
    ) -> None:
        self._string(seen(text), where, out, paths=paths, depth=depth)

    def _string(
        self, info: _Seen, where: Sequence[object], out: list[Hit], *, paths: bool, depth: int
    ) -> None:
        """The keys one string holds: as material, by Vault path (if ``paths``), in what it encodes."""
        digests = self.book.by_digest
        if digests:
            for candidate in info.digests:
                key = digests.get(candidate)
                if key is not None:
                    out.append(Hit(key, "material", _join(where)))
                    break
        if paths and info.paths and self.book.has_paths:
            here = _join(where)
            for segments in info.paths:
                out.extend(Hit(k, "path", here) for k in self.book.match(segments))
        if info.decoded is not None and depth < 2:
            self._text(info.decoded, where, out, paths=paths, depth=depth + 1)

    def scan(self, props: object, *, skip: frozenset[str] = frozenset()) -> list[Hit]:
        """Every key found in ``props``; top-level fields in ``skip`` are left out (already read)."""
        strings = prepare(props)
        if strings is not None:
            return self.scan_prepared(strings, skip=skip)
        out: list[Hit] = []
        if isinstance(props, str):
            self._text(props, [], out, paths=True)
        return out

    def scan_prepared(self, strings: Strings, *, skip: frozenset[str] = frozenset()) -> list[Hit]:
        """Every key found in the properties ``strings`` was prepared from, in field order.

        Sets :attr:`truncated` when a field that is searched nests deeper than the scan goes.
        """
        out: list[Hit] = []
        skip_fields = self.skip_fields
        self.truncated = not skip.issuperset(strings.truncated_under)
        for parts, info in strings.entries:
            if parts[0] in skip:
                continue
            # No path search at or below a field that names a key on purpose (keyfence's annotations).
            paths = bool(info.paths or info.decoded is not None) and skip_fields.isdisjoint(parts)
            self._string(info, parts, out, paths=paths, depth=0)
        return out


@dataclass(frozen=True)
class Strings:
    """Every string of one resource's properties that could hold a key, with where it sits.

    Built by :func:`prepare` from the properties alone (no key book, no config), so the pack
    can do it as each resource arrives; :meth:`Scanner.scan_prepared` then finds what
    :meth:`Scanner.scan` would find in those properties without walking them again.
    """

    entries: tuple[tuple[tuple[object, ...], _Seen], ...]
    """``(field path, what the string can hold)`` in the walk's order; strings that can hold nothing
    (too short for material, no ``/``, not base64) are left out."""
    truncated_under: frozenset[object]
    """Top-level fields below which the properties nest deeper than the scan searches."""


def prepare(props: object) -> Strings | None:
    """The searchable strings of ``props``, depth first without recursion: the pack's hot loop.

    None for a bare string or a leaf. Reads the SDK's proxies' raw targets, never their values
    one by one, so an unknown value cannot raise and nothing is read twice.
    """
    root = _items(props)
    if isinstance(props, str) or root is None:
        return None
    entries: list[tuple[tuple[object, ...], _Seen]] = []
    truncated: set[object] = set()
    cache = _SEEN
    where: list[object] = []
    frames: list[Iterator[tuple[object, object]]] = [iter(root)]
    while frames:
        for name, child in frames[-1]:
            kind = type(child)
            if kind is str:
                info = cache.get(child) or seen(child)  # type: ignore[call-overload,arg-type]
                if info.digests or info.paths or info.decoded is not None:
                    entries.append(((*where, name), info))
            elif child is None or kind is bool or kind is float or kind is int:
                continue
            else:
                below = _items(child)
                if not below:
                    continue
                if len(frames) >= MAX_DEPTH:
                    truncated.add(where[0] if where else name)
                    continue
                where.append(name)
                frames.append(iter(below))
                break
        else:
            frames.pop()
            if where:
                where.pop()
    return Strings(tuple(entries), frozenset(truncated))


def _items(value: object) -> Iterable[tuple[object, object]] | None:
    """The ``(key or index, value)`` pairs of a container (through the SDK's proxies); None for a leaf."""
    kind = type(value)
    if kind is _DictProxy or kind is _ListProxy:
        value = open_proxy(value)
        kind = type(value)
    if kind is dict:
        return value.items()  # type: ignore[attr-defined, no-any-return]
    if kind is list:
        return enumerate(value)  # type: ignore[arg-type]
    return raw_children(value)


def _join(where: Sequence[object]) -> str:
    out = ""
    for part in where:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
