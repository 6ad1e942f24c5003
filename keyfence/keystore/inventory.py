"""The inventory under a prefix: every key, and against a spec the unused, missing and duplicated ones."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from keyfence_policies import permissions as perms

from ..errors import KeyfenceError, VaultError
from ..keys import (
    METADATA_PERMISSIONS,
    METADATA_SUBACCOUNT,
    METADATA_VENUE,
)
from ..spec import DNS_LABEL, FleetSpec, ProcessEntry
from ..vault import KeyMetadata, KV2Client
from .facts import key_status, known_permissions, metadata_fingerprint, shown
from .inputs import METADATA_REGISTERED_AT, TIMESTAMP, Placement
from .progress import NoProgress, Progress, tracked
from .register import absent, iso_utc, vault_problem

# --------------------------------------------------------------------------- inventory


@dataclass(frozen=True)
class InventoryKey:
    """One stored key as its metadata describes it; never material."""

    path: str
    subaccount: str | None
    process: str | None
    venue: str | None
    fingerprint: str | None
    version: int
    permissions: tuple[str, ...]
    registered_at: str | None
    updated_time: datetime | None
    status: str
    """``ok``, ``deleted``, ``destroyed`` or ``no version``."""
    used_by: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "subaccount": self.subaccount,
            "process": self.process,
            "venue": self.venue,
            "fingerprint": self.fingerprint,
            "version": self.version,
            "permissions": list(self.permissions),
            "registered_at": self.registered_at,
            "updated_time": iso_utc(self.updated_time) if self.updated_time else None,
            "status": self.status,
            "used_by": self.used_by,
        }


@dataclass(frozen=True)
class MissingKey:
    """A spec process with no usable key at its path."""

    process: str
    path: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"process": self.process, "path": self.path, "reason": self.reason}


@dataclass(frozen=True)
class DuplicateKey:
    """One fingerprint stored under several paths: one API key that several processes would share."""

    fingerprint: str
    paths: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"fingerprint": self.fingerprint, "paths": list(self.paths)}


@dataclass
class Inventory:
    """Keys under the prefix, and, with a spec, how they match its processes."""

    mount: str
    prefix: str
    spec: str | None
    keys: list[InventoryKey]
    unused: list[str] = field(default_factory=list)
    missing: list[MissingKey] = field(default_factory=list)
    duplicates: list[DuplicateKey] = field(default_factory=list)

    @property
    def clean(self) -> bool:
        """No duplicate and no missing key; unused keys are worth a look but break nothing."""
        return not (self.duplicates or self.missing)

    def to_json(self) -> dict[str, Any]:
        return {
            "mount": self.mount,
            "prefix": self.prefix,
            "spec": self.spec,
            "keys": [k.to_json() for k in self.keys],
            "unused": list(self.unused),
            "missing": [m.to_json() for m in self.missing],
            "duplicates": [d.to_json() for d in self.duplicates],
        }




def _names_from_path(path: str, prefix: str) -> tuple[str | None, str | None]:
    """``<prefix>/<subaccount>/<process>`` -> the two names; anything else says nothing."""
    head = f"{prefix}/"
    if not path.startswith(head):
        return None, None
    rest = path[len(head) :].split("/")
    return (rest[0], rest[1]) if len(rest) == 2 else (None, None)






def _inventory_key(metadata: KeyMetadata, prefix: str, entry: ProcessEntry | None) -> InventoryKey:
    custom = metadata.custom_metadata
    path_sub, path_proc = _names_from_path(metadata.path, prefix)
    venue = custom.get(METADATA_VENUE)
    return InventoryKey(
        path=metadata.path,
        subaccount=shown(custom.get(METADATA_SUBACCOUNT), DNS_LABEL)
        or (entry.subaccount.name if entry else path_sub),
        process=entry.process.name if entry else path_proc,
        venue=venue if venue in perms.VENUES else None,
        fingerprint=metadata_fingerprint(metadata),
        version=metadata.current_version,
        permissions=known_permissions(custom.get(METADATA_PERMISSIONS)),
        registered_at=shown(custom.get(METADATA_REGISTERED_AT), TIMESTAMP),
        updated_time=metadata.updated_time,
        status=key_status(metadata),
        used_by=entry.ref if entry else None,
    )


def inventory(
    client: KV2Client,
    placement: Placement,
    *,
    spec: FleetSpec | None = None,
    progress: Progress | None = None,
) -> Inventory:
    """Every key under the prefix (plus the spec's keys outside it), read concurrently.

    Metadata only, never material. A key that cannot be read makes the inventory
    unreliable, so any such error is raised listing every path that failed.
    """
    progress = progress or NoProgress()
    mount = placement.mount
    entries = spec.entries() if spec is not None else []
    by_path: dict[str, ProcessEntry] = {e.key_path: e for e in entries}
    listed = client.list_keys(mount, placement.prefix)
    paths = sorted(set(listed) | set(by_path))
    outcomes = tracked(
        client, lambda p: client.read_metadata(mount, p), paths, progress, f"reading {len(paths)} keys"
    )
    found: dict[str, KeyMetadata] = {}
    problems: list[str] = []
    for path, outcome in zip(paths, outcomes, strict=True):
        if absent(outcome):
            continue
        if isinstance(outcome, KeyfenceError):
            problems.append(vault_problem(mount, path, outcome))
            continue
        found[path] = outcome
    if problems:
        raise VaultError(f"cannot read every key under {mount}/{placement.prefix}", problems=problems)

    keys = [_inventory_key(found[p], placement.prefix, by_path.get(p)) for p in sorted(found)]
    result = Inventory(mount, placement.prefix, spec.source if spec is not None else None, keys)
    result.duplicates = _duplicates(keys)
    if spec is not None:
        result.unused = [k.path for k in keys if k.path not in by_path]
        for entry in entries:
            metadata = found.get(entry.key_path)
            if metadata is None:
                reason = "no key is stored at its path"
            elif (status := key_status(metadata)) != "ok":
                reason = "no version is stored" if status == "no version" else f"its version is {status}"
            else:
                continue
            result.missing.append(MissingKey(entry.ref, entry.key_path, reason))
    return result


def _duplicates(keys: Iterable[InventoryKey]) -> list[DuplicateKey]:
    holders: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        if key.fingerprint is not None and key.status != "destroyed":
            holders[key.fingerprint].append(key.path)
    return [DuplicateKey(fp, tuple(sorted(paths))) for fp, paths in sorted(holders.items()) if len(paths) > 1]
