"""Many keys' metadata from a few folder listings instead of one read per key.

OpenBao answers ``LIST <mount>/detailed-metadata/<folder>/`` with the metadata of every key
in the folder, the same object a per-key metadata read returns: 1000 keys in one request
instead of 1000. HashiCorp Vault has no such endpoint, and a token may lack 'list' on it, so
everything here is an optimisation with a per-key fallback: a key these functions do not
return is read on its own by the caller, which then gives exactly today's result and message.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from keyfence_policies.labels import canonical_key_path

from .kv import KV2Client
from .metadata import FolderMetadata, KeyMetadata

WORTH_LISTING = 2
"""A folder is listed when it holds at least this many of the keys wanted: one listing then
replaces two or more reads."""


def _folder(path: str) -> str:
    return path.rpartition("/")[0]


def folder_metadata(client: KV2Client, mount: str, paths: Iterable[str]) -> dict[str, KeyMetadata]:
    """The metadata of those ``paths`` that folder listings can answer; the others are absent.

    A key missing from its folder's listing is absent too (not "not found"): the caller's own
    read of it then says why, in the usual words.
    """
    wanted = {canonical_key_path(p) for p in paths}
    counts = Counter(_folder(p) for p in wanted)
    folders = sorted(f for f, n in counts.items() if n >= WORTH_LISTING)
    found: dict[str, KeyMetadata] = {}
    for listing in client.read_many(lambda folder: client.list_detailed_metadata(mount, folder), folders):
        if isinstance(listing, FolderMetadata):
            found.update((path, meta) for path, meta in listing.keys.items() if path in wanted)
    return found


def tree_metadata(client: KV2Client, mount: str, prefix: str) -> dict[str, KeyMetadata] | None:
    """Every key under ``prefix`` (recursively) with its metadata; ``None`` if any folder could
    not be listed this way, so that the caller lists and reads as before.

    Each level's folders are listed concurrently. An empty or missing prefix is ``None`` too:
    the endpoint answers it with a 404, which cannot be told from a server without the endpoint.
    """
    found: dict[str, KeyMetadata] = {}
    level = [canonical_key_path(prefix)]
    while level:
        listings = client.read_many(lambda folder: client.list_detailed_metadata(mount, folder), level)
        level = []
        for listing in listings:
            if not isinstance(listing, FolderMetadata):
                return None
            found.update(listing.keys)
            level.extend(listing.folders)
    return found
