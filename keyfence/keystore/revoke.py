"""Revocation: destroy every version and the metadata of one key."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from keyfence_policies import permissions as perms

from ..keys import (
    METADATA_PERMISSIONS,
    METADATA_SUBACCOUNT,
    METADATA_VENUE,
)
from ..spec import DNS_LABEL, FleetSpec
from ..vault import KeyMetadata, KV2Client, Ledger, VaultRequestError
from .facts import known_permissions, metadata_fingerprint, shown

# --------------------------------------------------------------------------- revoke


@dataclass(frozen=True)
class Revoked:
    """What ``revoke_key`` destroyed."""

    mount: str
    path: str
    versions: int
    fingerprint: str | None

    @property
    def ref(self) -> str:
        return f"{self.mount}/{self.path}"


def describe_key(client: KV2Client, mount: str, path: str) -> KeyMetadata:
    """The key's metadata, so a confirmation can say what is about to go (KeyNotFoundError if none)."""
    return client.read_metadata(mount, path)


def revoke_refusal(ledger: Ledger, metadata: KeyMetadata, spec: FleetSpec | None) -> str | None:
    """Why revoking this key would break a running fleet: a stack claims it, or the spec uses it."""
    reasons = []
    fingerprint = metadata_fingerprint(metadata)
    try:
        record = ledger.read(fingerprint) if fingerprint is not None else None
    except VaultRequestError as exc:
        # A record that cannot be told may hold a claim: refused as a claim is, so --force still revokes.
        record = None
        reasons.append(f"a stack may claim {metadata.ref}: {exc.ref}: {exc.reason}")
    if record is not None and record.claimed and record.path == metadata.path:
        reasons.append(f"{metadata.ref} is claimed in the key ledger by {record.holder()}")
    if spec is not None:
        users = [e.ref for e in spec.entries() if e.key_path == metadata.path]
        if users:
            reasons.append(f"{spec.source} runs {', '.join(users)} on {metadata.ref}")
    return "; ".join(reasons) or None


def revoke_key(client: KV2Client, metadata: KeyMetadata, ledger: Ledger | None = None) -> Revoked:
    """Destroy every version and the metadata of the key ``metadata`` describes, and its ledger record."""
    client.destroy_all_versions(metadata.mount, metadata.path)
    live = sum(1 for v in metadata.versions.values() if not v.destroyed)
    fingerprint = metadata_fingerprint(metadata)
    if ledger is not None and fingerprint is not None:
        try:
            record = ledger.read(fingerprint)
        except VaultRequestError:
            # The key is gone already; a record that cannot be read is left, with its own way out.
            record = None
        if record is not None and record.path == metadata.path:
            ledger.remove(record)
    return Revoked(metadata.mount, metadata.path, live, fingerprint)


def summarize_metadata(metadata: Mapping[str, str]) -> str:
    """Subaccount, venue and permissions of a key, for confirmations; odd values are left out."""
    parts = []
    if subaccount := shown(metadata.get(METADATA_SUBACCOUNT), DNS_LABEL):
        parts.append(f"subaccount {subaccount}")
    if (venue := metadata.get(METADATA_VENUE)) in perms.VENUES:
        parts.append(f"venue {venue}")
    if ids := known_permissions(metadata.get(METADATA_PERMISSIONS)):
        parts.append(f"permissions {perms.format_permissions(ids)}")
    return ", ".join(parts)
