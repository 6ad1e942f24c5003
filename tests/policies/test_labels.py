"""A Vault key path has one canonical form, however many slashes surround its segments."""

from __future__ import annotations

import itertools

from keyfence_policies.labels import canonical_key_path, key_identity


def test_every_arrangement_of_slashes_gives_the_segments_joined_once() -> None:
    pieces = ["", "/", "//", "a", "Kraken", "b-1"]
    for parts in itertools.product(pieces, repeat=4):
        path = "".join(parts)
        assert canonical_key_path(path) == "/".join(s for s in path.split("/") if s), repr(path)


def test_case_is_kept_and_the_identity_joins_mount_and_path() -> None:
    assert canonical_key_path("Kraken/x") != canonical_key_path("kraken/x")
    assert key_identity("/secret/", "//kraken//alpha/executor/") == "secret/kraken/alpha/executor"
