"""Key material is found wherever a string's neighbours or a Pulumi asset would hide it.

The pack knows keys only by their SHA-256 fingerprints, so it must cut every string into the
pieces a key could be: a key inside a URL path or its user info, behind a ``#`` or ``@``, with
escaped quotes or a literal ``\\n`` around it, percent-encoded, or in the text of a Pulumi asset
(an S3 object's ``source``) is still a copy of the key.
"""

from __future__ import annotations

import hashlib
from urllib.parse import quote

import pulumi
import pytest
from keyfence_policies.config import parse_config
from keyfence_policies.keybook import KeyBook
from keyfence_policies.names import POLICY_NAMES
from keyfence_policies.pack import evaluate
from keyfence_policies.scan import Scanner, prepare

from tests.policies.builders import Proc, clean_stack_props, known_keys, material_of, wrap

KEY = "Ab3dEf0123456789XyZqW"
SLASHED = "kf/test+secret/material0123="
"""Base64-alphabet material with slashes, as some exchanges issue secrets."""


def _scanner() -> Scanner:
    facts = {
        "knownKeys": [
            {
                "mount": "secret",
                "path": "kraken/alpha/executor",
                "fingerprint": hashlib.sha256(KEY.encode()).hexdigest(),
                "secretFingerprint": hashlib.sha256(SLASHED.encode()).hexdigest(),
                "process": "alpha/executor",
            }
        ],
    }
    parsed = parse_config(facts)
    assert not parsed.errors
    return Scanner(KeyBook(parsed.config), frozenset())


HIDDEN = [
    "https://hooks.example.com/{}/orders",
    "https://user:{}@api.example.com",
    "postgres://trader:{}@db.internal/x",
    "a.{}.b",
    "{}#fragment",
    "x={}!",
    '\\"{}\\"',
    "api_key={}\\n",
    "/etc/keys/{}",
    "{}.txt",
]


@pytest.mark.parametrize("template", HIDDEN)
@pytest.mark.parametrize("material", [KEY, SLASHED])
def test_material_among_url_path_and_escape_characters_is_found(template: str, material: str) -> None:
    text = template.format(material)
    hits = _scanner().scan({"spec": {"value": text}})
    assert [h.how for h in hits] == ["material"], text


@pytest.mark.parametrize("material", [KEY, SLASHED])
def test_percent_encoded_material_is_found(material: str) -> None:
    for text in (f"key%3D{quote(material, safe='')}", f"https://x.example/?k={quote(material, safe='')}"):
        assert [h.how for h in _scanner().scan({"v": text})] == ["material"], text


def test_strings_that_hold_no_key_stay_clean() -> None:
    for text in ("https://hooks.example.com/a/b/c", "registry.example.com/org/image:1.2.3", "a.b.c.d.e"):
        assert _scanner().scan({"v": text}) == []


def test_the_text_of_a_pulumi_asset_is_searched() -> None:
    props = {
        "bucket": "b",
        "source": pulumi.StringAsset(f"API_KEY={KEY}"),
        "archive": pulumi.AssetArchive({"cfg": pulumi.StringAsset(SLASHED), "f": pulumi.FileAsset("x")}),
    }
    strings = prepare(props)
    assert strings is not None
    hits = _scanner().scan_prepared(strings)
    assert [(h.how, h.where) for h in hits] == [
        ("material", "source.text"),
        ("material", "archive.cfg.text"),
    ]


def test_a_key_in_an_assets_text_fails_the_stack() -> None:
    p = Proc("momentum", "executor")
    stack = [wrap(t, props, n) for t, props, n in clean_stack_props([p])]
    config = known_keys([p])
    assert not [f for found in evaluate(stack, dict.fromkeys(POLICY_NAMES, config)).values() for f in found]
    api_key, _ = material_of(p)
    upload = {"bucket": "b", "key": "cfg", "source": pulumi.StringAsset(f"API_KEY={api_key}")}
    stack.append(wrap("aws:s3/bucketObject:BucketObject", upload, "upload", proxy=False))
    found = evaluate(stack, dict.fromkeys(POLICY_NAMES, config))
    flagged = {name for name, findings in found.items() if any("upload" in f.message for f in findings)}
    assert flagged == {"no-duplicate-key-assignment"}, found
    assert api_key not in repr(found)
