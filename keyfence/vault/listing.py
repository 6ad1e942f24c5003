"""Many keys' metadata from a few folder listings instead of one read per key.

OpenBao answers ``LIST <mount>/detailed-metadata/<folder>/`` with the metadata of every key
in the folder, the same object a per-key metadata read returns: 1000 keys in one request
instead of 1000. HashiCorp Vault has no such endpoint, and a token may lack 'list' on it, so
everything here is an optimisation with a per-key fallback: a key these functions do not
return is read on its own by the caller, which then gives exactly today's result and message.
A listing proves what it shows, never what it leaves out: OpenBao drops the keys a policy's
``list_scan_response_keys_filter_path`` hides from each page after the page is cut, so a short
page need not be the last. Which keys exist is a plain LIST's word (:meth:`KV2Client.list_keys`).
A Vault that cannot serve at all is not a reason to fall back: that error is raised (see
:meth:`KV2Client.list_detailed_metadata`).

One run (a check: resolving the fleet's keys, then the facts of every key under the prefix)
shares one :class:`FolderListings`, so each folder is listed once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping

from keyfence_policies.labels import canonical_key_path

from ..errors import KeyfenceError
from .kv import KV2Client
from .metadata import FolderMetadata, KeyMetadata

WORTH_LISTING = 2
"""A folder is listed when it holds at least this many of the keys wanted: one listing then
replaces two or more reads."""


def _folder(path: str) -> str:
    return path.rpartition("/")[0]


class FolderListings:
    """The detailed-metadata listings of one mount for one run: each folder is asked once, and
    what it answered (a listing, or ``None``: read per key) is kept for the next caller."""

    def __init__(self, client: KV2Client, mount: str) -> None:
        self.client = client
        self.mount = canonical_key_path(mount)
        self._seen: dict[str, FolderMetadata | None] = {}

    def get(self, folders: Mapping[str, str | None]) -> dict[str, FolderMetadata | None]:
        """Each folder's listing, those not asked before listed concurrently.

        ``folders`` maps a folder to the first key it stands in for (``None``: the folder
        itself), which names the request in a fatal error as that key's own read would.
        """
        todo = [folder for folder in folders if folder not in self._seen]
        client = self.client
        outcomes = client.read_many(
            lambda folder: client.list_detailed_metadata(self.mount, folder, for_key=folders[folder]), todo
        )
        for folder, outcome in zip(todo, outcomes, strict=True):
            # Any other refusal of the listing (KeyfenceError) is for the per-key reads to word.
            self._seen[folder] = None if isinstance(outcome, KeyfenceError) else outcome
        return {folder: self._seen[folder] for folder in folders}


def folder_metadata(listings: FolderListings, paths: Iterable[str]) -> dict[str, KeyMetadata]:
    """The metadata of those ``paths`` that folder listings can answer; the others are absent.

    A key missing from its folder's listing is absent too (not "not found"): the caller's own
    read of it then says why, in the usual words.
    """
    wanted = sorted({canonical_key_path(p) for p in paths})
    counts = Counter(_folder(path) for path in wanted)
    first: dict[str, str] = {}
    for path in wanted:
        first.setdefault(_folder(path), path)
    folders = {folder: path for folder, path in first.items() if counts[folder] >= WORTH_LISTING}
    found: dict[str, KeyMetadata] = {}
    chosen = set(wanted)
    for listing in listings.get(folders).values():
        if listing is not None:
            found.update((path, meta) for path, meta in listing.keys.items() if path in chosen)
    return found


def tree_metadata(listings: FolderListings, prefix: str) -> dict[str, KeyMetadata] | None:
    """Keys under ``prefix`` (recursively) with their metadata; ``None`` if any folder could not
    be listed this way, so that the caller reads each key as before. Not every key: a filtered
    page may end a folder's listing early (see above), so the caller lists the keys itself.

    Each level's folders are listed concurrently. An empty or missing prefix is ``None`` too:
    the endpoint answers it with a 404, which cannot be told from a server without the endpoint.
    """
    found: dict[str, KeyMetadata] = {}
    level = [canonical_key_path(prefix)]
    while level:
        listings_of_level = listings.get(dict.fromkeys(level))
        level = []
        for listing in listings_of_level.values():
            if listing is None:
                return None
            found.update(listing.keys)
            level.extend(listing.folders)
    return found
