"""Strings prepared before the key book exists find exactly what a plain recursive search finds.

The pack lists each resource's searchable strings as the resource arrives (``scan.prepare``,
before the stack's key book is known) and searches those lists once the whole stack is known
(``Scanner.scan_prepared``). Both are compared with a recursive reference search written here
from the rules alone, on properties built to exercise every branch: material as a whole
string, as a token and inside base64, Vault paths, keyfence's own annotations (not searched for
paths), fields left out at the top level, nesting deeper than the scan goes, and leaves of every
JSON type.
"""

from __future__ import annotations

import base64
import hashlib
import random
from typing import Any

import pytest
from keyfence_policies.config import parse_config
from keyfence_policies.keybook import KeyBook
from keyfence_policies.scan import _SEEN, MAX_DEPTH, Hit, Scanner, prepare

API_KEY = "kf-test-api-key-0123456789abcdef"
API_SECRET = "kf-test-api-secret-fedcba9876543210"
OTHER = "kf-test-other-key-material-000111"
SKIP_FIELDS = frozenset({"keyfence.io/key-path", "keyfence.io/vault-mount"})


def _book() -> KeyBook:
    facts = {
        "knownKeys": [
            {
                "mount": "secret",
                "path": "kraken/alpha/executor",
                "fingerprint": hashlib.sha256(API_KEY.encode()).hexdigest(),
                "secretFingerprint": hashlib.sha256(API_SECRET.encode()).hexdigest(),
                "process": "alpha/executor",
            },
            {
                "mount": "secret",
                "path": "kraken/beta/hedger",
                "fingerprint": hashlib.sha256(OTHER.encode()).hexdigest(),
            },
        ],
        "keyPrefixes": ["secret/kraken"],
    }
    parsed = parse_config(facts)
    assert not parsed.errors
    return KeyBook(parsed.config)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


LEAVES: list[Any] = [
    API_KEY,
    API_SECRET,
    OTHER,
    f"--api-key={API_KEY}",
    f"KEY={API_SECRET}\nOTHER=1",
    _b64(API_KEY),
    _b64(f"export SECRET={API_SECRET}"),
    _b64(_b64(OTHER)),
    "secret/data/kraken/alpha/executor",
    "vault read secret/kraken/beta/hedger",
    "secret/kraken/gamma/unknown",
    "kraken/alpha/executor",
    "short",
    "a-string-that-is-long-but-holds-nothing",
    "",
    0,
    3.5,
    True,
    None,
]
NAMES = ["data", "stringData", "spec", "env", "value", "args", *SKIP_FIELDS, "metadata", "annotations"]


def _random_props(rng: random.Random, depth: int = 0) -> Any:
    if depth > 4 or rng.random() < 0.3:
        return rng.choice(LEAVES)
    if rng.random() < 0.5:
        return [_random_props(rng, depth + 1) for _ in range(rng.randint(0, 4))]
    return {rng.choice(NAMES): _random_props(rng, depth + 1) for _ in range(rng.randint(0, 5))}


def _deep(levels: int, leaf: Any) -> Any:
    node = leaf
    for level in range(levels):
        node = {"nested": node} if level % 2 else [node]
    return node


def _reference(props: Any, skip: frozenset[str]) -> tuple[list[Hit], bool]:
    """The rules, recursively: every string below a searched field, in order; paths not below SKIP_FIELDS."""
    scanner, out, cut = Scanner(_book(), SKIP_FIELDS), [], [False]

    def where_of(parts: list[Any]) -> str:
        text = ""
        for part in parts:
            text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
        return text

    def visit(value: Any, parts: list[Any]) -> None:
        pairs = value.items() if isinstance(value, dict) else enumerate(value)
        for name, child in pairs:
            if not parts and name in skip:
                continue
            here = [*parts, name]
            if isinstance(child, str):
                paths = not SKIP_FIELDS.intersection(p for p in here if isinstance(p, str))
                found: list[Hit] = []
                scanner._text(child, here, found, paths=paths)
                out.extend(h if h.how == "path" else Hit(h.key, h.how, where_of(here)) for h in found)
            elif isinstance(child, (dict, list)) and child:
                if len(here) >= MAX_DEPTH:
                    cut[0] = True
                    continue
                visit(child, here)

    visit(props, [])
    return out, cut[0]


def _both_ways(props: Any, skip: frozenset[str]) -> None:
    _SEEN.clear()
    strings = prepare(props)  # before any book exists, as at Analyze time
    assert strings is not None
    scanner = Scanner(_book(), SKIP_FIELDS)
    found = scanner.scan_prepared(strings, skip=skip)
    expected, truncated = _reference(props, skip)
    assert _shown(found) == _shown(expected)
    assert scanner.truncated == truncated
    again = Scanner(_book(), SKIP_FIELDS)
    assert _shown(again.scan(props, skip=skip)) == _shown(expected) and again.truncated == truncated


def _shown(hits: list[Hit]) -> list[tuple[str | None, str, str]]:
    return [(h.key.path, h.how, h.where) for h in hits]


@pytest.mark.parametrize("seed", range(300))
def test_prepared_strings_find_what_the_walk_finds(seed: int) -> None:
    rng = random.Random(seed)
    props = {rng.choice(NAMES): _random_props(rng) for _ in range(rng.randint(1, 6))}
    for skip in (frozenset(), frozenset({"data", "stringData"}), frozenset({"spec"})):
        _both_ways(props, skip)


def test_nesting_deeper_than_the_scan_goes_is_reported_only_where_searched() -> None:
    too_deep = _deep(MAX_DEPTH + 5, API_KEY)
    props = {"data": too_deep, "spec": {"value": API_SECRET}}
    _both_ways(props, frozenset())
    _both_ways(props, frozenset({"data"}))
    scanner = Scanner(_book(), SKIP_FIELDS)
    scanner.scan(props, skip=frozenset({"data"}))
    assert not scanner.truncated, "a skipped field is not searched, so it cannot be cut short"
    scanner.scan(props)
    assert scanner.truncated
    for levels in range(MAX_DEPTH - 3, MAX_DEPTH + 2):  # the boundary, level by level
        _both_ways({"spec": _deep(levels, API_KEY)}, frozenset())


def test_annotations_that_name_a_key_on_purpose_are_not_searched_for_paths() -> None:
    props = {
        "metadata": {
            "annotations": {
                "keyfence.io/key-path": "kraken/alpha/executor",
                "other": "secret/data/kraken/beta/hedger",
                "keyfence.io/vault-mount": _b64("secret/kraken/alpha/executor"),
            }
        },
        "spec": [{"keyfence.io/key-path": {"below": "secret/kraken/beta/hedger", "m": API_KEY}}],
    }
    _both_ways(props, frozenset())
    hits = Scanner(_book(), SKIP_FIELDS).scan_prepared(prepare(props) or pytest.fail("nothing prepared"))
    assert {(h.how, h.where) for h in hits} == {
        ("path", "metadata.annotations.other"),
        ("material", "spec[0].keyfence.io/key-path.m"),
    }


def test_a_bare_string_or_a_leaf_is_not_prepared() -> None:
    assert prepare(API_KEY) is None
    assert prepare(7) is None
    assert prepare({}) is not None
