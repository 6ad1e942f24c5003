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
    METADATA_FINGERPRINT_VERSION,
    METADATA_PERMISSIONS,
    METADATA_SUBACCOUNT,
    METADATA_VENUE,
    fingerprint_bound,
)
from ..spec import DNS_LABEL, FleetSpec, ProcessEntry
from ..vault import KeyMetadata, KV2Client, Ledger, LedgerRaceLostError, LedgerRecord
from .claims import all_records
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
    holder: str | None = None
    """Who holds the key in the ledger: ``stack (process) since T``, ``nobody``, or None (no record)."""

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
            "holder": self.holder,
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


@dataclass(frozen=True)
class KeyProblem:
    """Something about a key or a ledger record that breaks 'one key, one holder'."""

    path: str
    problem: str

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "problem": self.problem}


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
    problems: list[KeyProblem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    ledger: str = ""

    @property
    def clean(self) -> bool:
        """No duplicate, missing key or identity problem; unused keys are worth a look but break nothing."""
        return not (self.duplicates or self.missing or self.problems)

    def to_json(self) -> dict[str, Any]:
        return {
            "mount": self.mount,
            "prefix": self.prefix,
            "spec": self.spec,
            "keys": [k.to_json() for k in self.keys],
            "unused": list(self.unused),
            "missing": [m.to_json() for m in self.missing],
            "duplicates": [d.to_json() for d in self.duplicates],
            "problems": [p.to_json() for p in self.problems],
            "repaired": list(self.repaired),
            "ledger": self.ledger,
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
    repair: bool = False,
) -> Inventory:
    """Every key under the prefix (plus the spec's keys outside it), read concurrently, and the ledger.

    Metadata only, never material. The whole mount is read, so a copy of a key anywhere in
    it is found. A key that cannot be read makes the inventory unreliable, so any such
    error is raised listing every path that failed. ``repair`` creates the missing ledger
    records of keys whose fingerprint is tied to their version (create-only) and removes
    unclaimed records whose path no longer holds their key.
    """
    progress = progress or NoProgress()
    mount = placement.mount
    ledger = Ledger(client, mount, placement.ledger)
    entries = spec.entries() if spec is not None else []
    by_path: dict[str, ProcessEntry] = {e.key_path: e for e in entries}
    everywhere = [p for p in client.list_keys(mount, "") if not ledger.contains(p)]
    head = f"{placement.prefix}/"
    listed = {p for p in everywhere if p.startswith(head)} | set(by_path)
    paths = sorted(set(everywhere) | set(by_path))
    outcomes = tracked(
        client, lambda p: client.read_metadata(mount, p), paths, progress, f"reading {len(paths)} keys"
    )
    found: dict[str, KeyMetadata] = {}
    problems: list[str] = []
    hidden: list[KeyProblem] = []
    for path, outcome in zip(paths, outcomes, strict=True):
        if absent(outcome):
            continue
        if isinstance(outcome, KeyfenceError):
            if path in listed:
                problems.append(vault_problem(mount, path, outcome))
            else:
                # Outside the prefix, but a copy of a key could hide there: never a silent 'clean'.
                hidden.append(
                    KeyProblem(
                        path,
                        f"cannot be read, so a copy of a key could hide there: "
                        f"{vault_problem(mount, path, outcome)}",
                    )
                )
            continue
        found[path] = outcome
    if problems:
        raise VaultError(f"cannot read every key under {mount}/{placement.prefix}", problems=problems)

    result = Inventory(
        mount, placement.prefix, spec.source if spec is not None else None, [], ledger=ledger.root
    )
    mine = sorted(p for p in found if p in listed)
    records = {r.fingerprint: r for r in all_records(client, ledger)}
    result.keys = [
        _with_holder(_inventory_key(found[p], placement.prefix, by_path.get(p)), records) for p in mine
    ]
    every = [_inventory_key(found[p], placement.prefix, None) for p in sorted(found)]
    result.duplicates = [d for d in _duplicates(every) if set(d.paths) & listed]
    result.problems.extend(hidden)
    for path in mine:
        result.problems.extend(_identity_problems(found[path]))
    scope = {p for p in by_path} | {r.path for r in records.values() if r.path.startswith(head)}
    _ledger_findings(result, ledger, found, records, listed | scope, repair)
    if spec is not None:
        result.unused = [k.path for k in result.keys if k.path not in by_path]
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


def _with_holder(key: InventoryKey, records: dict[str, LedgerRecord]) -> InventoryKey:
    record = records.get(key.fingerprint) if key.fingerprint else None
    if record is None or record.path != key.path:
        return key
    return InventoryKey(**{**key.__dict__, "holder": record.holder()})


def _bound(metadata: KeyMetadata) -> bool:
    raw = metadata.custom_metadata.get(METADATA_FINGERPRINT_VERSION)
    return fingerprint_bound(metadata, int(raw) if raw is not None and raw.isdigit() else None)


def _identity_problems(metadata: KeyMetadata) -> list[KeyProblem]:
    if key_status(metadata) == "destroyed":
        return []
    if metadata_fingerprint(metadata) is None:
        return [
            KeyProblem(
                metadata.path,
                "no fingerprint in its custom metadata, so a copy of it elsewhere cannot be found; "
                "register it again with 'keyfence keys register --rotate'",
            )
        ]
    if not _bound(metadata):
        raw = metadata.custom_metadata.get(METADATA_FINGERPRINT_VERSION)
        said = f"describes version {raw}" if raw and raw.isdigit() else "is not tied to a version"
        return [
            KeyProblem(
                metadata.path,
                f"its fingerprint {said} but the current version is {metadata.current_version} (rolled back "
                "or written by hand): which key it holds is unknown; register it again with "
                "'keyfence keys register --rotate'",
            )
        ]
    return []


def _ledger_findings(
    result: Inventory,
    ledger: Ledger,
    found: dict[str, KeyMetadata],
    records: dict[str, LedgerRecord],
    listed: set[str],
    repair: bool,
) -> None:
    """Keys without a record (repaired on request), records at another path, stale records."""
    mount = ledger.mount
    for path in sorted(p for p in found if p in listed):
        metadata = found[path]
        fingerprint = metadata_fingerprint(metadata)
        if fingerprint is None or not _bound(metadata) or key_status(metadata) != "ok":
            continue
        record = records.get(fingerprint)
        if record is None:
            if repair:
                try:
                    records[fingerprint] = ledger.create(LedgerRecord(fingerprint, path))
                    result.repaired.append(f"created the ledger record of {mount}/{path}")
                    continue
                except LedgerRaceLostError:
                    record = ledger.read(fingerprint)
            if record is None:
                continue
        if record.path != path:
            result.problems.append(
                KeyProblem(
                    path,
                    f"the key ledger records this API key at {mount}/{record.path} (held by "
                    f"{record.holder()}): one key under two paths",
                )
            )
    for fingerprint, record in sorted(records.items()):
        if record.path not in listed:
            continue
        there = found.get(record.path)
        holds = (
            there is not None
            and metadata_fingerprint(there) == fingerprint
            and _bound(there)
            and key_status(there) == "ok"
        )
        if holds:
            continue
        if repair and not record.claimed:
            ledger.remove(record)
            result.repaired.append(f"removed the stale ledger record {ledger.ref(fingerprint)}")
            continue
        result.problems.append(
            KeyProblem(
                record.path,
                f"the ledger record {ledger.ref(fingerprint)[: len(mount) + len(ledger.root) + 14]}... says "
                f"this path holds key {fingerprint[:12]} (held by {record.holder()}), but it no longer does; "
                + (
                    "release the claim ('keyfence keys release') then run 'keyfence keys list --repair'"
                    if record.claimed
                    else "run 'keyfence keys list --repair' to remove the record"
                ),
            )
        )


def _duplicates(keys: Iterable[InventoryKey]) -> list[DuplicateKey]:
    holders: dict[str, list[str]] = defaultdict(list)
    for key in keys:
        if key.fingerprint is not None and key.status != "destroyed":
            holders[key.fingerprint].append(key.path)
    return [DuplicateKey(fp, tuple(sorted(paths))) for fp, paths in sorted(holders.items()) if len(paths) > 1]
