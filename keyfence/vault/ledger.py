"""The key ledger: one KV v2 record per key identity, written only with check-and-set.

A record lives at ``<mount>/<ledger>/<fingerprint>`` (``<mount>/keyfence/ledger/<fingerprint>``
by default) with the string fields ``path`` (the canonical path holding the material),
``stack`` and ``process`` (the holder, empty when unclaimed) and ``claimed_at``. Creation
uses ``cas=0`` and every update the version it read, so of two writers racing on one key
exactly one wins, whatever paths or stacks they come from. This module only reads and
writes records; what a claim means is decided in :mod:`keyfence.keystore.claims`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from typing import Final

from keyfence_policies.labels import canonical_key_path

from ..errors import RefusedError
from .errors import KeyAccessDeniedError, VaultRequestError, VaultUnavailableError
from .kv import KV2Client

DEFAULT_LEDGER: Final = "keyfence/ledger"
FIELD_PATH: Final = "path"
FIELD_STACK: Final = "stack"
FIELD_PROCESS: Final = "process"
FIELD_CLAIMED_AT: Final = "claimed_at"
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
        """The record of ``fingerprint``; ``None`` when the key has none yet."""
        try:
            found = self.client.read_record(self.mount, self.path_of(fingerprint))
        except KeyAccessDeniedError as exc:
            raise self._denied(exc, "read", '"read"', "docs/vault-policies/ci-metadata.hcl") from None
        if found is None:
            return None
        data, version = found
        path = canonical_key_path(data.get(FIELD_PATH, ""))
        if not _SHOWABLE.match(path):
            raise VaultRequestError(
                self.client.addr,
                self.ref(fingerprint),
                "the ledger record has no usable 'path'; remove it with 'keyfence keys list --repair' "
                "(it is recreated from the key's metadata)",
            )
        return LedgerRecord(
            fingerprint=fingerprint,
            path=path,
            stack=data.get(FIELD_STACK, ""),
            process=data.get(FIELD_PROCESS, ""),
            claimed_at=data.get(FIELD_CLAIMED_AT, ""),
            version=version,
        )

    def create(self, record: LedgerRecord) -> LedgerRecord:
        """Create the record (``cas=0``); LedgerRaceLostError when one already exists."""
        return self._write(record, 0)

    def update(self, read: LedgerRecord, wanted: LedgerRecord) -> LedgerRecord:
        """Replace ``read`` by ``wanted`` only if the record is still at the version ``read`` has."""
        if read.version < 1:
            raise ValueError("update needs a record read from Vault")
        return self._write(wanted, read.version)

    def _write(self, record: LedgerRecord, cas: int) -> LedgerRecord:
        try:
            version = self.client.write_record(
                self.mount, self.path_of(record.fingerprint), record.fields(), cas
            )
        except KeyAccessDeniedError as exc:
            caps = '"create", "read", "update"'
            see = "docs/vault-policies/deploy.hcl to claim keys, key-admin.hcl to register them"
            raise self._denied(exc, "write", caps, see) from None
        except RefusedError:
            # A retried write whose first attempt landed also ends here: if the record now is
            # exactly what we wrote, the write is ours.
            now = self.read(record.fingerprint)
            if now is not None and now.same_fields(record) and now.version == cas + 1:
                return now
            raise LedgerRaceLostError(
                f"{self.ref(record.fingerprint)}: the ledger record changed concurrently (check-and-set "
                f"expected {'no record' if cas == 0 else f'version {cas}'}); now: "
                f"{describe(now, self.mount)}; nothing was written"
            ) from None
        return replace(record, version=version)

    def remove(self, fingerprint: str) -> None:
        """Delete the record and its history (metadata delete: not check-and-set, use after a read)."""
        try:
            self.client.destroy_all_versions(self.mount, self.path_of(fingerprint))
        except KeyAccessDeniedError as exc:
            raise LedgerAccessError(
                f"Vault at {self.client.addr} refused to let the token delete the ledger record "
                f"{self.ref(fingerprint)} ({exc.reason}); add to its policy: path "
                f'"{self.mount}/metadata/{self.root}/*" {{ capabilities = ["delete"] }} '
                "(see docs/vault-policies/key-admin.hcl)"
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
