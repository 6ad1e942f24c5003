"""Resolve and verify one Vault key per process, before any resource is declared.

The program stops here, with one message listing every problem, rather than declare
half a fleet. Modes:

- ``deploy`` (``pulumi up``): reads metadata and the key material; any problem is fatal.
- ``check`` (``keyfence check``): reads metadata only, never material. Problems the
  policy pack judges (another subaccount's key, excess permissions, one key under two
  paths) are declared as facts so the pack reports them; the rest stay fatal.
- ``offline``: no Vault at all; identities by path only.

A process whose key an in-cluster operator delivers (``delivery: vault-secrets-operator``
or ``external-secrets``) is resolved from metadata only in every mode: its material never
enters the program, so it can never reach Pulumi state. Its fingerprint must then come
from Vault's custom metadata.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from keyfence_policies import permissions as perms

from .errors import KeyfenceError, KeyVerificationError
from .material import KeyMaterial, material_problems
from .spec import FleetSpec, ProcessEntry
from .vault import (
    KeyAccessDeniedError,
    KeyMetadata,
    KV2Client,
    Ledger,
    LedgerRecord,
    VaultRequestError,
    conflict,
)
from .vault.ledger import LedgerSnapshot
from .vault.listing import WORTH_LISTING, FolderListings, folder_metadata

Mode = Literal["deploy", "check", "offline"]
IdentitySource = Literal["material", "metadata", "offline", "unverifiable"]


@dataclass(frozen=True)
class ResolvedKey:
    """Everything the program declares about one process's key; material only in deploy mode."""

    entry: ProcessEntry
    mount: str
    path: str
    version: int | None
    fingerprint: str | None
    identity_source: IdentitySource
    permissions: tuple[str, ...] | None
    """The key's permissions: Vault metadata when present, else the spec's ``permissions``."""
    metadata_subaccount: str | None = None
    metadata_venue: str | None = None
    material: KeyMaterial | None = field(default=None, repr=False)
    ledger: str = ""
    """Where the key ledger lives in the mount (the spec's ``vault.ledger``)."""
    ledger_record: LedgerRecord | None = None
    ledger_conflict: str | None = None
    """Check mode: why the ledger forbids this stack the key (a fact the check reports)."""
    secret_fingerprint: str | None = None
    """Hex SHA-256 of the api secret, when known: lets the policy pack recognise a copy of the secret."""
    vault_permissions: tuple[str, ...] | None = None
    """The permissions Vault metadata records (None when it records none)."""

    @property
    def subaccount(self) -> str:
        """The subaccount the key belongs to: Vault's word when it has one, else the spec's."""
        return self.metadata_subaccount or self.entry.subaccount.name

    @property
    def venue(self) -> str:
        return self.metadata_venue or self.entry.subaccount.venue

    @property
    def vault_ref(self) -> str:
        """``<mount>/<path>``, how people and messages name the key."""
        return f"{self.mount}/{self.path}"


# --------------------------------------------------------------------------- resolution

METADATA_FINGERPRINT: Final = "fingerprint"
METADATA_SECRET_FINGERPRINT: Final = "secret_fingerprint"
METADATA_SUBACCOUNT: Final = "subaccount"
METADATA_VENUE: Final = "venue"
METADATA_PERMISSIONS: Final = "permissions"
METADATA_FINGERPRINT_VERSION: Final = "fingerprint_version"
"""The KV version the recorded fingerprint describes: a rollback or a hand-written version breaks the tie."""
"""Custom metadata keys keyfence reads on each key (``keyfence keys register`` writes them)."""

FINGERPRINT_PATTERN: Final = re.compile(r"^[0-9a-f]{64}\Z")
_SHOWABLE = re.compile(r"^[a-z][a-z0-9-]{0,39}\Z")
"""Metadata values echoed in messages must look like names: a pasted secret never does."""


@dataclass(frozen=True)
class _MetadataFacts:
    """What a key's custom metadata claims about it, once checked for form."""

    fingerprint: str | None
    subaccount: str | None
    venue: str | None
    permissions: tuple[str, ...] | None
    fingerprint_version: int | None = None
    secret_fingerprint: str | None = None


@dataclass
class _Inspection:
    """One key's outcome: the key as resolved, and what is wrong with it."""

    key: ResolvedKey
    fatal: list[str]
    judged: list[str]
    """Problems fatal in deploy mode that check mode declares as facts for the policy pack."""


def _spec_permissions(entry: ProcessEntry) -> tuple[str, ...] | None:
    return tuple(entry.process.permissions or ()) or None


def _show(value: str) -> str:
    return repr(value) if _SHOWABLE.match(value) else "a value that is not a name"


def metadata_facts(custom: Mapping[str, str], spec_venue: str) -> tuple[_MetadataFacts, list[str]]:
    """Parse keyfence's custom metadata; malformed values are problems, never echoed if odd."""
    problems = []
    fingerprint = custom.get(METADATA_FINGERPRINT)
    if fingerprint is not None and not FINGERPRINT_PATTERN.match(fingerprint):
        # The value is not shown: a malformed fingerprint may be the api key pasted by mistake.
        problems.append(
            f"custom metadata '{METADATA_FINGERPRINT}' is not 64 lowercase hex digits (the SHA-256 of the "
            "api key); re-register the key with 'keyfence keys register'"
        )
        fingerprint = None
    secret_fingerprint = custom.get(METADATA_SECRET_FINGERPRINT)
    if secret_fingerprint is not None and not FINGERPRINT_PATTERN.match(secret_fingerprint):
        problems.append(
            f"custom metadata '{METADATA_SECRET_FINGERPRINT}' is not 64 lowercase hex digits (the SHA-256 "
            "of the api secret); re-register the key with 'keyfence keys register'"
        )
        secret_fingerprint = None
    subaccount = custom.get(METADATA_SUBACCOUNT)
    if subaccount is not None and not subaccount.strip():
        problems.append(f"custom metadata '{METADATA_SUBACCOUNT}' is empty; set it to the key's subaccount")
        subaccount = None
    venue = custom.get(METADATA_VENUE)
    if venue is not None and venue not in perms.VENUES:
        problems.append(
            f"custom metadata '{METADATA_VENUE}' is {_show(venue)}, not one of {', '.join(perms.VENUES)}; "
            f"set it to the venue the key was created for (this subaccount trades {spec_venue}), "
            "or re-register the key with 'keyfence keys register'"
        )
        venue = None
    permissions: tuple[str, ...] | None = None
    raw = custom.get(METADATA_PERMISSIONS)
    if raw is not None:
        ids = perms.parse_permissions(raw)
        key_venue = venue or spec_venue
        unknown = perms.unknown_ids(key_venue, ids)
        if not ids:
            problems.append(
                f"custom metadata '{METADATA_PERMISSIONS}' is empty; "
                "list the key's permissions, comma-separated"
            )
        elif unknown:
            shown = ", ".join(_show(u) for u in unknown)
            problems.append(
                f"custom metadata '{METADATA_PERMISSIONS}' lists {shown}, not {key_venue} permission ids; "
                f"{perms.unknown_advice(key_venue, unknown)}; then fix the metadata, or re-register the key "
                "with 'keyfence keys register --rotate'"
            )
        else:
            permissions = tuple(sorted(set(ids)))
    raw_version = custom.get(METADATA_FINGERPRINT_VERSION)
    bound = int(raw_version) if raw_version is not None and raw_version.isdigit() else None
    return _MetadataFacts(fingerprint, subaccount, venue, permissions, bound, secret_fingerprint), problems


def fingerprint_bound(metadata: KeyMetadata, recorded_version: int | None) -> bool:
    """Whether the recorded fingerprint describes the current version.

    Registration records the version it fingerprinted. A key registered before that has
    no record, which is trusted only while it has a single version: a rollback or a
    version written by hand always makes a later one.
    """
    if recorded_version is None:
        return metadata.current_version == 1
    return recorded_version == metadata.current_version


def _judge(entry: ProcessEntry, facts: _MetadataFacts) -> list[str]:
    """Where the key disagrees with the spec or the role: fatal to deploy, facts to check."""
    sub, proc = entry.subaccount, entry.process
    problems = []
    if facts.subaccount is not None and facts.subaccount != sub.name:
        problems.append(
            f"Vault metadata says the key belongs to subaccount {_show(facts.subaccount)}, but the spec runs "
            f"it in '{sub.name}'; use a key created in subaccount '{sub.name}' and register it there"
        )
    if facts.venue is not None and facts.venue != sub.venue:
        problems.append(
            f"Vault metadata says the key is a {facts.venue} key, but subaccount '{sub.name}' trades "
            f"{sub.venue}; use a {sub.venue} key"
        )
    spec_ids = _spec_permissions(entry)
    for source, ids in (("Vault metadata", facts.permissions), ("the spec", spec_ids)):
        if ids is None:
            continue
        extra = perms.excess(
            proc.role, sub.venue, ids, master=sub.master, allow_withdrawals=proc.allow_withdrawals
        )
        if extra:
            problems.append(
                f"permissions in {source} exceed what role {proc.role} may hold: "
                f"{perms.explain_excess(proc.role, sub.venue, extra, master=sub.master)}; "
                "remove them from the key on Kraken and register it again"
            )
    if spec_ids is not None and facts.permissions is not None and set(spec_ids) != set(facts.permissions):
        problems.append(
            f"the spec lists permissions {perms.format_permissions(spec_ids)} but Vault metadata says "
            f"the key holds {perms.format_permissions(facts.permissions)}; "
            "make them equal (the spec states the exact set)"
        )
    return problems


def _current_version_problem(metadata: KeyMetadata) -> str | None:
    current = metadata.current
    if current is None:
        return "Vault holds metadata but no version of the key; register it with 'keyfence keys register'"
    if current.destroyed:
        return (
            f"the current version {current.version} is destroyed, its material is gone for good; "
            "register a new key with 'keyfence keys register'"
        )
    if current.deleted:
        return (
            f"the current version {current.version} is deleted; undelete it with 'vault kv undelete "
            f"-mount={metadata.mount} -versions={current.version} {metadata.path}' or register a new key"
        )
    return None


def _unbound_problem(metadata: KeyMetadata, recorded: int | None) -> str:
    said = f"describes version {recorded}" if recorded is not None else "is not tied to a version"
    return (
        f"the fingerprint in custom metadata {said}, but the current version is {metadata.current_version} "
        "(rolled back, or written by hand), so this check cannot tell which key it holds; register it "
        "again with 'keyfence keys register --rotate', or run with a token that may read the key"
    )


def _identity(
    client: KV2Client,
    mount: str,
    entry: ProcessEntry,
    metadata: KeyMetadata,
    facts: _MetadataFacts,
    mode: Mode,
) -> tuple[str | None, IdentitySource, KeyMaterial | None, str | None, list[str]]:
    """The key's fingerprint and its source, the material (deploy mode only), the secret's fingerprint."""
    fatal: list[str] = []
    bound = facts.fingerprint is not None and fingerprint_bound(metadata, facts.fingerprint_version)
    if mode == "check" and bound:
        return facts.fingerprint, "metadata", None, None, fatal
    if entry.operator_delivered:
        # The operator reads the key in the cluster; the program proves its identity from metadata alone.
        if facts.fingerprint is None:
            if mode == "check":
                return None, "unverifiable", None, None, fatal  # the pack reports the unverifiable identity
            return None, "unverifiable", None, None, [
                f"delivery {entry.delivery} reads key metadata only, and this key's custom metadata has no "
                f"'{METADATA_FINGERPRINT}', so a copy of it under another path could not be detected; "
                "register it with 'keyfence keys register' (which records the fingerprint)"
            ]
        if not bound:
            return None, "unverifiable", None, None, [_unbound_problem(metadata, facts.fingerprint_version)]
        return facts.fingerprint, "metadata", None, None, fatal
    try:
        material = client.read_version(mount, entry.key_path, metadata.current_version)
    except KeyAccessDeniedError as exc:
        if mode == "deploy":
            return None, "unverifiable", None, None, [exc.reason]
        if facts.fingerprint is not None:
            return None, "unverifiable", None, None, [_unbound_problem(metadata, facts.fingerprint_version)]
        # Check mode never keeps material; without it and without a fingerprint, the pack decides.
        return None, "unverifiable", None, None, fatal
    except VaultRequestError as exc:
        return None, "unverifiable", None, None, [exc.reason]
    fatal.extend(
        f"version {metadata.current_version}: {problem}"
        for problem in material_problems(material.api_key, material.api_secret)
    )
    fingerprint = material.fingerprint
    if facts.fingerprint is not None and facts.fingerprint != fingerprint:
        said = f"version {facts.fingerprint_version}" if facts.fingerprint_version else "an earlier version"
        fatal.append(
            "metadata fingerprint does not match the key stored; re-register it with 'keyfence keys "
            f"register --rotate' (the fingerprint describes {said}, the current version is "
            f"{metadata.current_version}: rolled back, or written by hand)"
        )
    return fingerprint, "material", material if mode == "deploy" else None, material.secret_fingerprint, fatal


def _inspect(
    client: KV2Client,
    records: LedgerSnapshot,
    entry: ProcessEntry,
    mode: Mode,
    stack: str | None,
    listed: Mapping[str, KeyMetadata],
) -> _Inspection:
    """Read and check one key; per-key Vault errors propagate (read_many collects them).

    Metadata comes from ``listed`` (folder listings) when it holds the key, else from a read.
    """
    ledger = records.ledger
    mount = ledger.mount
    metadata = listed.get(entry.key_path) or client.read_metadata(mount, entry.key_path)
    facts, fatal = metadata_facts(metadata.custom_metadata, entry.subaccount.venue)
    version_problem = _current_version_problem(metadata)
    fingerprint: str | None = None
    secret_fingerprint = facts.secret_fingerprint
    source: IdentitySource = "unverifiable"
    material: KeyMaterial | None = None
    judged = _judge(entry, facts)
    record: LedgerRecord | None = None
    held: str | None = None
    if ledger.contains(entry.key_path):
        fatal.append(f"the key path lies inside the key ledger ({mount}/{ledger.root}/); keep keys elsewhere")
    elif version_problem is not None:
        fatal.insert(0, version_problem)
    else:
        fingerprint, source, material, read_secret, problems = _identity(
            client, mount, entry, metadata, facts, mode
        )
        secret_fingerprint = read_secret or secret_fingerprint
        fatal.extend(problems)
        if fingerprint is not None:
            record = records.read(fingerprint)
            held = conflict(record, mount, entry.key_path, stack)
            if held is not None:
                judged.append(held)
    key = ResolvedKey(
        entry=entry,
        mount=mount,
        path=entry.key_path,
        version=metadata.current_version or None,
        fingerprint=fingerprint,
        identity_source=source,
        permissions=facts.permissions if facts.permissions is not None else _spec_permissions(entry),
        metadata_subaccount=facts.subaccount,
        metadata_venue=facts.venue,
        material=material,
        ledger=ledger.root,
        ledger_record=record,
        ledger_conflict=held,
        secret_fingerprint=secret_fingerprint,
        vault_permissions=facts.permissions,
    )
    return _Inspection(key, fatal, judged)


def _offline(spec: FleetSpec) -> list[ResolvedKey]:
    return [
        ResolvedKey(
            entry=entry,
            mount=spec.vault.mount,
            path=entry.key_path,
            version=None,
            fingerprint=None,
            identity_source="offline",
            permissions=_spec_permissions(entry),
            ledger=spec.vault.ledger,
        )
        for entry in spec.entries()
    ]


def _problem_line(entry: ProcessEntry, mount: str, what: str) -> str:
    loc = entry.location
    return f"{loc.file}:{loc.line}:{loc.column} ({entry.ref}) {mount}/{entry.key_path}: {what}"


def _shared_fingerprints(keys: list[ResolvedKey]) -> dict[int, list[str]]:
    """For each key (by index) holding the same fingerprint as an earlier one, what to say."""
    holders: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        if key.fingerprint is not None:
            holders[key.fingerprint].append(index)
    out: dict[int, list[str]] = defaultdict(list)
    for fingerprint, indices in holders.items():
        first = keys[indices[0]]
        loc = first.entry.location
        for index in indices[1:]:
            out[index].append(
                f"holds the same API key (fingerprint {fingerprint[:12]}) as {first.entry.ref} at "
                f"{first.vault_ref} ({loc.file}:{loc.line}:{loc.column}); two processes on one key "
                "interleave nonces: create a separate key on Kraken for each process and register it"
            )
    return out


def resolve_keys(
    spec: FleetSpec,
    client: KV2Client | None,
    mode: Mode,
    stack: str | None = None,
    listings: FolderListings | None = None,
) -> list[ResolvedKey]:
    """Resolve and verify every process's key, in spec order, or raise listing every problem.

    ``offline`` needs no client. ``check`` reads metadata (and material only to fingerprint
    a key whose metadata lacks one); disagreements with the spec, the role or another key
    are returned as facts for the policy pack. ``deploy`` reads the material at the current
    version and treats all of those as fatal. A Vault that cannot serve at all (unreachable,
    sealed, token rejected, the key ledger refused) aborts at once with a single
    VaultUnavailableError. ``stack`` (``org/project/stack``) is who runs the keys: a key the
    ledger shows claimed by another stack, or recorded at another path, is a problem.
    ``listings`` are the run's folder listings, to share with later readers of the same folders.
    """
    if mode == "offline":
        return _offline(spec)
    if client is None:
        raise ValueError(f"mode {mode!r} reads Vault: pass a client (see keyfence.vault.connect)")
    mount = spec.vault.mount
    ledger = Ledger(client, mount, spec.vault.ledger)
    entries = spec.entries()
    # Folder listings answer most keys' metadata, one snapshot the ledger (OpenBao); the rest is read.
    listings = listings if listings is not None else FolderListings(client, mount)
    listed = folder_metadata(listings, (entry.key_path for entry in entries))
    records = ledger.snapshot(listing=len(entries) >= WORTH_LISTING)
    outcomes = client.read_many(
        lambda entry: _inspect(client, records, entry, mode, stack, listed), entries
    )

    problems: dict[int, list[str]] = defaultdict(list)
    keys: list[ResolvedKey] = []
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, KeyfenceError):
            problems[index].append(outcome.cause)
            continue
        problems[index].extend(outcome.fatal)
        if mode == "deploy":
            problems[index].extend(outcome.judged)
        keys.append(outcome.key)
    if mode == "deploy":
        positions = [i for i, outcome in enumerate(outcomes) if not isinstance(outcome, KeyfenceError)]
        for local, lines in _shared_fingerprints(keys).items():
            problems[positions[local]].extend(lines)

    failing = [i for i in range(len(entries)) if problems.get(i)]
    if failing:
        raise KeyVerificationError(
            f"{len(failing)} key(s) failed verification; nothing was declared",
            problems=[_problem_line(entries[i], mount, what) for i in failing for what in problems[i]],
        )
    return keys
