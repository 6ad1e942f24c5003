"""The ledger's lifecycle: claim a key for a stack's process, release it, find claims.

A deployment claims each key before its Secret and Deployment exist and releases it when
the process leaves the spec or the stack is destroyed (``keyfence.claims`` wraps these in a
Pulumi resource). Every write is check-and-set against the record just read; a lost race
is read again and decided again, so two stacks claiming one key end with exactly one
holder and the other refused by name.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Final

from ..errors import KeyfenceError, RefusedError, VaultError
from ..keys import METADATA_FINGERPRINT
from ..vault import KeyNotFoundError, KV2Client, Ledger, LedgerRaceLostError, LedgerRecord, conflict
from ..vault.ledger import describe
from .facts import metadata_fingerprint

ATTEMPTS: Final = 5
"""Reads and writes per claim: each lost race means someone else wrote, so a few always settle it."""


class ClaimRefusedError(RefusedError):
    """The ledger forbids the claim: the key is held by another stack or recorded at another path."""


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def _stamp(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def claim_key(
    ledger: Ledger,
    fingerprint: str,
    path: str,
    stack: str,
    process: str,
    *,
    now: Callable[[], datetime] = _utc_now,
) -> LedgerRecord:
    """Make ``stack``'s ``process`` the holder of the key; the record as written.

    A key without a record (registered before the ledger existed) gets one here, created
    with ``cas=0``. Claiming a key this process already holds writes nothing.
    """
    for _ in range(ATTEMPTS):
        record = ledger.read(fingerprint)
        problem = conflict(record, ledger.mount, path, stack)
        if problem is not None:
            raise ClaimRefusedError(
                f"{ledger.ref(fingerprint)}: cannot claim the key for {process}: {problem}"
            )
        if record is not None and record.stack == stack and record.process == process:
            return record
        wanted = LedgerRecord(fingerprint, path, stack, process, _stamp(now()))
        try:
            return ledger.create(wanted) if record is None else ledger.update(record, wanted)
        except LedgerRaceLostError:
            continue
    raise LedgerRaceLostError(
        f"{ledger.ref(fingerprint)}: the ledger record kept changing while claiming it for {process} "
        f"({ATTEMPTS} attempts); run again"
    )


@dataclass(frozen=True)
class Released:
    """A claim that was freed: whose it was, on which key."""

    fingerprint: str
    path: str
    stack: str
    process: str
    claimed_at: str


def release_claim(
    ledger: Ledger,
    fingerprint: str,
    stack: str,
    process: str,
    *,
    force: bool = False,
) -> Released | None:
    """Free the claim ``stack``'s ``process`` holds on the key; ``None`` if it holds none.

    A claim held by someone else is left alone (another process of the same stack may have
    taken the key over), unless ``force``: then it is freed too, whoever holds it.
    """
    for _ in range(ATTEMPTS):
        record = ledger.read(fingerprint)
        if record is None or not record.claimed:
            return None
        if (record.stack, record.process) != (stack, process) and not force:
            return None
        freed = replace(record, stack="", process="", claimed_at="")
        try:
            ledger.update(record, freed)
        except LedgerRaceLostError:
            continue
        return Released(fingerprint, record.path, record.stack, record.process, record.claimed_at)
    raise LedgerRaceLostError(
        f"{ledger.ref(fingerprint)}: the ledger record kept changing while releasing it "
        f"({ATTEMPTS} attempts); run again"
    )


def _read_records(ledger: Ledger) -> tuple[list[LedgerRecord], dict[str, KeyfenceError]]:
    """Every record of the ledger from one snapshot, and the error of each that cannot be read."""
    snapshot = ledger.snapshot()
    fingerprints = snapshot.fingerprints()
    outcomes = snapshot.read_many(fingerprints)
    failed = {fp: o for fp, o in zip(fingerprints, outcomes, strict=True) if isinstance(o, KeyfenceError)}
    return [o for o in outcomes if isinstance(o, LedgerRecord)], failed


def _unreadable(ledger: Ledger, failed: Mapping[str, KeyfenceError]) -> VaultError:
    return VaultError(
        f"cannot read every record of the key ledger {ledger.mount}/{ledger.root}",
        problems=[
            f"{ledger.ref(fp)}: {e.cause}" for fp, e in failed.items()
        ],
    )


def all_records(client: KV2Client, ledger: Ledger) -> list[LedgerRecord]:
    """Every record of the ledger, from one snapshot (mirrors it can trust, the rest read
    concurrently); a record that cannot be read is an error."""
    records, failed = _read_records(ledger)
    if failed:
        raise _unreadable(ledger, failed)
    return records


def release_process(
    client: KV2Client,
    ledger: Ledger,
    process: str,
    key_path: str,
    stack: str,
    *,
    force: bool = False,
) -> list[Released]:
    """``keyfence keys release``: free the claims of ``process`` (or on its key path) held by ``stack``.

    A claim on that key held by another stack is refused (ClaimRefusedError) unless ``force``.
    A record that cannot be read is an error when it may be that key's (its fingerprint is the
    key's, or the key's is unknown); another key's is left to 'keyfence keys list', which names
    it, so that one broken record does not hold every release hostage.
    """
    records, failed = _read_records(ledger)
    if failed:
        here = _fingerprint_at(client, ledger.mount, key_path)
        if here is None or here in failed:
            raise _unreadable(ledger, {fp: e for fp, e in failed.items() if here in (None, fp)})
    found = [r for r in records if r.claimed and (r.process == process or r.path == key_path)]
    others = [r for r in found if r.stack != stack]
    if others and not force:
        shown = "; ".join(describe(r, ledger.mount) for r in others)
        raise ClaimRefusedError(
            f"refused: {process}'s key is claimed by another stack than {stack}: {shown}; nothing was freed. "
            "Release it from that stack ('pulumi destroy', or this command with its --stack), "
            "or pass --force if that stack is gone for good"
        )
    freed = []
    for record in found:
        done = release_claim(ledger, record.fingerprint, record.stack, record.process, force=True)
        if done is not None:
            freed.append(done)
    return freed


def _fingerprint_at(client: KV2Client, mount: str, path: str) -> str | None:
    """The fingerprint the key at ``path`` records in its metadata; ``None`` if none, malformed or no key."""
    try:
        metadata = client.read_metadata(mount, path)
    except KeyNotFoundError:
        return None
    return metadata_fingerprint(metadata)


def retire_if_moved(client: KV2Client, ledger: Ledger, fingerprint: str, path: str) -> bool:
    """Remove an unclaimed record whose path no longer holds its key (rotated, revoked, rolled back).

    Best effort: a record that stays is reported by ``keyfence keys list`` and removed by
    ``--repair``. Returns whether it was removed.
    """
    try:
        record = ledger.read(fingerprint)
        if record is None or record.claimed or record.path != path:
            return False
        try:
            metadata = client.read_metadata(ledger.mount, path)
            holds = metadata.custom_metadata.get(METADATA_FINGERPRINT) == fingerprint and metadata.current
        except KeyNotFoundError:
            holds = None
        if holds:
            return False
        ledger.remove(record)
    except KeyfenceError:
        return False
    return True
