"""The key ledger: one KV v2 record per key identity, written only with check-and-set.

A record lives at ``<mount>/<ledger>/<fingerprint>`` (``<mount>/keyfence/ledger/<fingerprint>``
by default) with the string fields ``path`` (the canonical path holding the material),
``stack`` and ``process`` (the holder, empty when unclaimed) and ``claimed_at``. Creation
uses ``cas=0`` and every update the version it read, so of two writers racing on one key
exactly one wins, whatever paths or stacks they come from. Removal too: it writes a tombstone
(``removed: true``) over the version read, never a delete (KV v2 has none with check-and-set, and
a delete after the read would erase a claim written in between); a tombstone reads as no record.
Only exactly that data is a tombstone: a ``removed`` field beside other fields, or with another
value, is an unusable record (an error naming the removal), never "no record".
This module only reads and writes records; what a claim means is decided in
:mod:`keyfence.keystore.claims`.

**The mirror.** The record's data is the authority. After each successful write of data
version V, the writer also copies the fields into the record's ``custom_metadata`` with
``version: V`` and V's ``created_time`` from the write's answer (best effort: a failed copy is
logged and the claim stands). A reader that needs many records lists the ledger folder's
detailed metadata once (OpenBao; see :mod:`keyfence.vault.listing`) and takes a record from its
mirror only if the mirror names exactly the record's ``current_version`` and that version's
``created_time``, the version is not destroyed and has no deletion time (not even a future one:
whether it has passed is the server's clock's call), and every field is present and well formed;
otherwise it reads the data, as without a mirror. That is safe because check-and-set lets exactly
one writer make data version V, and only that writer writes a mirror naming V at its creation
time. Whatever else changes the data -- ``bao kv rollback``, a hand-written ``bao kv put``, a soft
delete or destroy of the current version -- makes a new current version or changes its state, so
an older mirror stops matching and is not used. A record removed and created again restarts at
version 1, but not at the same time, so a mirror write held up in flight across that does not
match either. A mirror that names an older version (stale, or forged) is not used. Records
written before the mirror existed have no mirror and are read from data. Custom metadata refuses
empty values, so each field is stored as ``=`` followed by its value.

A listing proves only what it shows: a fingerprint it lacks is read too (OpenBao leaves out of
a listing what a policy's list filter hides). A record whose current version is deleted or
destroyed is an error, never "no record": the claim it held can no longer be told.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Final

from keyfence_policies.labels import canonical_key_path

from ..errors import KeyfenceError, RefusedError
from .errors import KeyAccessDeniedError, KeyVersionGoneError, VaultRequestError, VaultUnavailableError
from .kv import KV2Client
from .metadata import FolderMetadata, KeyMetadata, parse_time

log = logging.getLogger("keyfence.vault")

DEFAULT_LEDGER: Final = "keyfence/ledger"
FIELD_PATH: Final = "path"
FIELD_STACK: Final = "stack"
FIELD_PROCESS: Final = "process"
FIELD_CLAIMED_AT: Final = "claimed_at"
FIELDS: Final = (FIELD_PATH, FIELD_STACK, FIELD_PROCESS, FIELD_CLAIMED_AT)
FIELD_REMOVED: Final = "removed"
TOMBSTONE: Final = {FIELD_REMOVED: "true"}
"""The data of a removed record: written with check-and-set over the version read, read as no record."""
MIRROR_VERSION: Final = "version"
"""The custom metadata key naming the data version the mirror copies."""
MIRROR_CREATED: Final = "created_time"
"""The custom metadata key holding that version's ``created_time``: the version number is reused
when a record is removed and created again, the time is not."""
MIRROR_MARK: Final = "="
_FINGERPRINT = re.compile(r"^[0-9a-f]{64}\Z")
_SHOWABLE = re.compile(r"^[A-Za-z0-9._/:-]{1,200}\Z")
"""Record fields echoed in messages must look like paths, names or times: anything else is hidden."""


class LedgerAccessError(VaultUnavailableError):
    """The token may not use the ledger path: a policy lacks a rule; no key can be judged (exit 2)."""


class LedgerRaceLostError(RefusedError):
    """Another writer changed the record between our read and our write (exit 1)."""


@dataclass(frozen=True)
class LedgerRecord:
    """One key identity and its holder; ``version`` is the record's KV version, for check-and-set."""

    fingerprint: str
    path: str
    stack: str = ""
    process: str = ""
    claimed_at: str = ""
    version: int = 0

    @property
    def claimed(self) -> bool:
        return bool(self.stack)

    def holder(self) -> str:
        """``stack (SUBACCOUNT/PROCESS) since T`` for messages; odd values are not echoed."""
        if not self.claimed:
            return "nobody"
        since = f" since {_shown(self.claimed_at)}" if self.claimed_at else ""
        return f"stack {_shown(self.stack)} (process {_shown(self.process)}){since}"

    def fields(self) -> dict[str, str]:
        return {
            FIELD_PATH: self.path,
            FIELD_STACK: self.stack,
            FIELD_PROCESS: self.process,
            FIELD_CLAIMED_AT: self.claimed_at,
        }

    def same_fields(self, other: LedgerRecord) -> bool:
        return self.fields() == other.fields()


def _shown(value: str) -> str:
    return value if _SHOWABLE.match(value) else "<a value that is not a name>"


def policy_hint(mount: str, ledger: str, capabilities: str, see: str) -> str:
    return (
        f'add to the token\'s policy: path "{mount}/data/{ledger}/*" {{ capabilities = [{capabilities}] }} '
        f"(see {see})"
    )


class Ledger:
    """Records under ``<mount>/<root>/`` through one client; safe to share between threads."""

    def __init__(self, client: KV2Client, mount: str, root: str = DEFAULT_LEDGER) -> None:
        self.client = client
        self.mount = canonical_key_path(mount)
        self.root = canonical_key_path(root)
        if not self.mount or not self.root:
            raise ValueError("the ledger needs a mount and a path")

    def path_of(self, fingerprint: str) -> str:
        if not _FINGERPRINT.match(fingerprint):
            raise ValueError("a ledger fingerprint is 64 lowercase hex digits")
        return f"{self.root}/{fingerprint}"

    def ref(self, fingerprint: str) -> str:
        return f"{self.mount}/{self.path_of(fingerprint)}"

    def contains(self, path: str) -> bool:
        """Whether a path of the mount is a ledger record rather than a key."""
        return canonical_key_path(path).startswith(self.root + "/")

    def _denied(self, exc: KeyAccessDeniedError, doing: str, caps: str, see: str) -> LedgerAccessError:
        return LedgerAccessError(
            f"Vault at {self.client.addr} refused to let the token {doing} the key ledger "
            f"({exc.ref}: {exc.reason}); {policy_hint(self.mount, self.root, caps, see)}"
        )

    def read(self, fingerprint: str) -> LedgerRecord | None:
        """The record of ``fingerprint``; ``None`` when the key has none yet (or it was removed)."""
        return self._current(fingerprint)[0]

    def _current(self, fingerprint: str) -> tuple[LedgerRecord | None, int]:
        """The record and the version of the data read: 0 when nothing is stored, the tombstone's
        version when the record was removed (the next create writes over it with check-and-set)."""
        try:
            found = self.client.read_record(self.mount, self.path_of(fingerprint))
        except KeyAccessDeniedError as exc:
            raise self._denied(exc, "read", '"read"', "docs/vault-policies/ci-metadata.hcl") from None
        except KeyVersionGoneError as exc:
            # Not "no record": whoever it named may still hold the key, and nobody can tell.
            raise VaultRequestError(
                self.client.addr,
                self.ref(fingerprint),
                f"the ledger record exists but {exc.reason}, so whether another stack holds this key cannot "
                f"be told; {self._way_out(fingerprint, exc)}",
            ) from None
        if found is None:
            return None, 0
        data, version = found
        if data == TOMBSTONE:
            return None, version
        if FIELD_REMOVED in data:
            # Removed, but spelled otherwise or still naming a key or holder ('bao kv patch removed=true'
            # over a claim keeps the claim): whether the holder is gone cannot be told.
            raise self._unusable(
                fingerprint,
                version,
                f"has a '{FIELD_REMOVED}' field but is not a tombstone (exactly {FIELD_REMOVED}=true and no "
                "other field), so whether it still holds a claim cannot be told",
            )
        path = canonical_key_path(data.get(FIELD_PATH, ""))
        if not _SHOWABLE.match(path):
            raise self._unusable(fingerprint, version, "has no usable 'path'")
        record = LedgerRecord(
            fingerprint=fingerprint,
            path=path,
            stack=data.get(FIELD_STACK, ""),
            process=data.get(FIELD_PROCESS, ""),
            claimed_at=data.get(FIELD_CLAIMED_AT, ""),
            version=version,
        )
        return record, version

    def _way_out(self, fingerprint: str, gone: KeyVersionGoneError) -> str:
        """Undelete a deleted version (naming it when Vault did); a destroyed one can only be removed."""
        if gone.state == "destroyed":
            return f"its data is gone for good: {self._removal(fingerprint, gone.version)}"
        versions = str(gone.version) if gone.version else "N"
        which = "" if gone.version else ", N from 'bao kv metadata get'"
        return (
            f"undelete it ('bao kv undelete -mount={self.mount} -versions={versions} "
            f"{self.path_of(fingerprint)}'{which}; if a delete_version_after expired it -- 'bao kv metadata "
            f"get' shows the record's, 'bao read {self.mount}/config' the mount's -- set that to 0s first, "
            f"or it deletes the next claim too), or {self._removal(fingerprint, gone.version)}"
        )

    def _unusable(self, fingerprint: str, version: int, why: str) -> VaultRequestError:
        """A record whose data keyfence cannot read as a record: ``why``, and how to remove it."""
        return VaultRequestError(
            self.client.addr,
            self.ref(fingerprint),
            f"the ledger record {why}; {self._removal(fingerprint, version)}",
        )

    def _removal(self, fingerprint: str, version: int | None) -> str:
        """How to remove a record keyfence cannot use; 'keys list --repair' stops at such a record.

        The way given is keyfence's own: a tombstone written with check-and-set over the record's
        current version, which the key-admin policy allows (it grants no delete on the ledger).
        """
        path = self.path_of(fingerprint)
        cas = str(version) if version else "N"
        which = ""
        if not version:
            which = f", N the record's current_version ('bao kv metadata get -mount={self.mount} {path}')"
        return (
            f"once you know no stack runs this key, remove the record: 'bao kv put -mount={self.mount} "
            f"-cas={cas} {path} {FIELD_REMOVED}=true'{which} writes a tombstone, which keyfence reads as no "
            "record; the key's next claim, or 'keyfence keys list --repair', writes a new one"
        )

    def create(self, record: LedgerRecord) -> LedgerRecord:
        """Create the record (``cas=0``, or over a removed record's tombstone at the version read);
        LedgerRaceLostError when one already exists."""
        return self._write(record, 0)

    def update(self, read: LedgerRecord, wanted: LedgerRecord) -> LedgerRecord:
        """Replace ``read`` by ``wanted`` only if the record is still at the version ``read`` has."""
        if read.version < 1:
            raise ValueError("update needs a record read from Vault")
        return self._write(wanted, read.version)

    def _write(self, record: LedgerRecord, cas: int) -> LedgerRecord:
        try:
            version, created = self.client.write_record(
                self.mount, self.path_of(record.fingerprint), record.fields(), cas
            )
        except KeyAccessDeniedError as exc:
            caps = '"create", "read", "update"'
            see = "docs/vault-policies/deploy.hcl to claim keys, key-admin.hcl to register them"
            raise self._denied(exc, "write", caps, see) from None
        except RefusedError:
            # A retried write whose first attempt landed also ends here: if the record now is
            # exactly what we wrote, the write is ours.
            # Not mirrored: the version's created_time is not at hand, and readers read its data.
            now, version = self._current(record.fingerprint)
            if now is not None and now.same_fields(record) and now.version == cas + 1:
                return now
            if now is None and version > cas == 0:
                # A removed record: create over its tombstone, still check-and-set on what was read.
                return self._write(record, version)
            raise LedgerRaceLostError(
                f"{self.ref(record.fingerprint)}: the ledger record changed concurrently (check-and-set "
                f"expected {'no record' if cas == 0 else f'version {cas}'}); now: "
                f"{describe(now, self.mount)}; nothing was written"
            ) from None
        written = replace(record, version=version)
        self._mirror(written, created)
        return written

    def _mirror(self, written: LedgerRecord, created: str) -> None:
        """Copy the record just written into its custom metadata, naming its version (best effort)."""
        try:
            self.client.update_custom_metadata(
                self.mount, self.path_of(written.fingerprint), mirror_of(written, created)
            )
        except KeyfenceError as exc:
            log.warning(
                "could not mirror version %d of the ledger record %s into its metadata (%s); readers "
                "read its data instead, the record itself is written",
                written.version,
                self.ref(written.fingerprint),
                exc.cause,
            )

    def snapshot(self, *, listing: bool = True) -> LedgerSnapshot:
        """The whole ledger from one listing of its folder's detailed metadata, when Vault has it.

        Records whose mirror cannot be trusted are read from data when asked for; without the
        listing (HashiCorp Vault, a token that may not list it, or ``listing=False`` when too few
        records are wanted for it to pay) every record is. A listing proves what it shows, never
        what it leaves out: OpenBao drops from a listing the keys a policy's
        ``list_scan_response_keys_filter_path`` hides, and a page it shortens that way cannot be
        told from the last one. So a fingerprint the listing lacks is read, never taken as "no record".
        """
        if not listing:
            return LedgerSnapshot(self, {}, None)
        folder = self.client.list_detailed_metadata(self.mount, self.root)
        if not isinstance(folder, FolderMetadata):
            return LedgerSnapshot(self, {}, None)
        names = {path[len(self.root) + 1 :]: meta for path, meta in folder.keys.items()}
        listed = frozenset(n for n in names if _FINGERPRINT.match(n))
        trusted = {fp: r for fp in listed if (r := _mirrored(fp, names[fp])) is not None}
        return LedgerSnapshot(self, trusted, listed)

    def read_all(self, fingerprints: Iterable[str]) -> list[LedgerRecord | KeyfenceError | None]:
        """The records of ``fingerprints`` in order, from one snapshot; errors per record, as read_many."""
        return self.snapshot().read_many(list(fingerprints))

    def remove(self, read: LedgerRecord) -> None:
        """Remove the record ``read`` only if it is still at the version read: a tombstone written
        with check-and-set, never a delete (KV v2 has no check-and-set delete, so a delete after a
        read could erase a claim written in between). LedgerRaceLostError when it changed."""
        if read.version < 1:
            raise ValueError("remove needs a record read from Vault")
        fingerprint = read.fingerprint
        try:
            self.client.write_record(self.mount, self.path_of(fingerprint), TOMBSTONE, read.version)
        except KeyAccessDeniedError as exc:
            raise self._denied(exc, "write", '"update"', "docs/vault-policies/key-admin.hcl") from None
        except RefusedError:
            now, version = self._current(fingerprint)
            if now is None and version == read.version + 1:
                return  # a retried write whose first attempt landed: our tombstone
            raise LedgerRaceLostError(
                f"{self.ref(fingerprint)}: the ledger record changed since it was read (check-and-set "
                f"expected version {read.version}); now: {describe(now, self.mount)}; nothing was removed"
            ) from None

    def fingerprints(self) -> list[str]:
        """Every fingerprint with a record (one LIST); records with odd names are left out."""
        try:
            paths = self.client.list_keys(self.mount, self.root)
        except KeyAccessDeniedError as exc:
            raise LedgerAccessError(
                f"Vault at {self.client.addr} refused to let the token list the key ledger "
                f'({exc.reason}); add to its policy: path "{self.mount}/metadata/{self.root}/*" '
                '{ capabilities = ["list"] } (see docs/vault-policies/key-admin.hcl)'
            ) from None
        names = (p[len(self.root) + 1 :] for p in paths)
        return [n for n in names if _FINGERPRINT.match(n)]


def mirror_of(written: LedgerRecord, created: str) -> dict[str, str]:
    """The custom metadata mirroring ``written``: its ``version`` is the data version written,
    ``created`` that version's ``created_time`` as the write's answer gave it."""
    mirror = {name: MIRROR_MARK + value for name, value in written.fields().items()}
    mirror[MIRROR_VERSION] = str(written.version)
    mirror[MIRROR_CREATED] = created
    return mirror


def _mirrored(fingerprint: str, metadata: KeyMetadata) -> LedgerRecord | None:
    """The record as its mirror tells it, if the mirror describes the current, readable version."""
    current = metadata.current
    custom = metadata.custom_metadata
    # A version with any deletion time (even one still to come, from delete_version_after) is read
    # from data: whether it is gone yet is the server's clock's call, not this machine's.
    if current is None or current.destroyed or current.deletion_time is not None:
        return None
    if custom.get(MIRROR_VERSION) != str(metadata.current_version):
        return None
    # The version number alone does not name a version for good: a record removed and created
    # again starts over at 1, and a mirror write held up in flight may land on the new one.
    created = parse_time(custom.get(MIRROR_CREATED))
    if created is None or created != current.created_time:
        return None
    fields: dict[str, str] = {}
    for name in FIELDS:
        value = custom.get(name)
        if value is None or not value.startswith(MIRROR_MARK):
            return None
        fields[name] = value[len(MIRROR_MARK) :]
    path = fields[FIELD_PATH]
    if path != canonical_key_path(path) or not _SHOWABLE.match(path):
        return None
    return LedgerRecord(
        fingerprint=fingerprint,
        path=path,
        stack=fields[FIELD_STACK],
        process=fields[FIELD_PROCESS],
        claimed_at=fields[FIELD_CLAIMED_AT],
        version=metadata.current_version,
    )


@dataclass(frozen=True)
class LedgerSnapshot:
    """The ledger as one listing saw it: trusted mirrors, and the fingerprints it showed.

    ``listed`` is None when the listing was not available. Either way a record without a
    trusted mirror is read from data, and ``listed`` only adds to what a plain LIST finds.
    """

    ledger: Ledger
    mirrored: Mapping[str, LedgerRecord]
    listed: frozenset[str] | None

    def read(self, fingerprint: str) -> LedgerRecord | None:
        """As :meth:`Ledger.read`, from the mirror when it can be trusted."""
        self.ledger.path_of(fingerprint)  # the same ValueError for a malformed fingerprint
        found = self.mirrored.get(fingerprint)
        return found if found is not None else self.ledger.read(fingerprint)

    def fingerprints(self) -> list[str]:
        """Every fingerprint with a record: a plain (unpaginated) LIST's, and the listing's."""
        return sorted(set(self.ledger.fingerprints()) | (self.listed or frozenset()))

    def read_many(self, fingerprints: list[str]) -> list[LedgerRecord | KeyfenceError | None]:
        """Each record in order; only those the snapshot cannot answer are read, concurrently."""
        pending = [fp for fp in fingerprints if fp not in self.mirrored]
        outcomes = dict(zip(pending, self.ledger.client.read_many(self.ledger.read, pending), strict=True))
        return [outcomes[fp] if fp in outcomes else self.read(fp) for fp in fingerprints]


def describe(record: LedgerRecord | None, mount: str) -> str:
    if record is None:
        return "no record"
    return f"the key at {mount}/{_shown(record.path)}, held by {record.holder()}"


def conflict(record: LedgerRecord | None, mount: str, path: str, stack: str | None) -> str | None:
    """Why ``stack`` may not run the key at ``path`` that ``record`` describes; ``None`` if it may.

    Another path means one key stored twice; another stack's claim means two stacks would
    sign with it. A claim by the same stack (another process of it) is not a conflict here:
    within a stack the pre-flight compares fingerprints itself, and a renamed process takes
    its key over before the old claim is released.
    """
    if record is None:
        return None
    if record.path != canonical_key_path(path):
        return (
            f"the key ledger records this API key as the key at {mount}/{_shown(record.path)} "
            f"(held by {record.holder()}); one key under two paths would let two processes sign with it: "
            "create a separate key on Kraken for this process, or remove the copy; if that path no longer "
            "holds this key, 'keyfence keys list --repair' removes the stale record"
        )
    if record.claimed and stack is not None and record.stack != stack:
        return (
            f"the key is claimed in the key ledger by {record.holder()}; two stacks would sign with one "
            f"key. Release it there ('pulumi destroy' of {_shown(record.stack)}, or, if that stack is gone, "
            f"'keyfence keys release {_shown(record.process)} --stack {_shown(record.stack)}'), "
            "or give this stack its own key"
        )
    return None
