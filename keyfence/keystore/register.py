"""Registration: one key, written once with check-and-set, never under a second path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Final

from keyfence_policies import permissions as perms

from ..errors import KeyfenceError, RefusedError, VaultError
from ..keys import (
    METADATA_FINGERPRINT,
    METADATA_FINGERPRINT_VERSION,
    METADATA_PERMISSIONS,
    METADATA_SECRET_FINGERPRINT,
    METADATA_SUBACCOUNT,
    METADATA_VENUE,
)
from ..material import KeyMaterial, fingerprint_of
from ..spec import FleetSpec, ProcessEntry
from ..vault import (
    KeyAccessDeniedError,
    KeyMetadata,
    KeyNotFoundError,
    KV2Client,
    KVMountError,
    Ledger,
    LedgerRaceLostError,
    LedgerRecord,
)
from ..vault.ledger import describe
from .facts import key_status, metadata_fingerprint
from .inputs import (
    METADATA_REGISTERED_AT,
    SHORT_FINGERPRINT,
    KeyInputError,
    Placement,
    find_entry,
    key_path_for,
    parse_permission_list,
    parse_process_ref,
    resolve_placement,
)
from .progress import NoProgress, Progress, tracked

KEYFENCE_METADATA: tuple[str, ...] = (
    METADATA_SUBACCOUNT,
    METADATA_VENUE,
    METADATA_PERMISSIONS,
    METADATA_FINGERPRINT,
    METADATA_SECRET_FINGERPRINT,
    METADATA_FINGERPRINT_VERSION,
    METADATA_REGISTERED_AT,
)
"""The custom metadata keys keyfence owns; every other key (an operator's owner, ticket) is kept."""


def merged_metadata(existing: dict[str, str], ours: dict[str, str]) -> dict[str, str]:
    """The operator's entries as they are, keyfence's replaced: a rotation never erases a ticket."""
    kept = {k: v for k, v in existing.items() if k not in KEYFENCE_METADATA}
    return {**kept, **ours}


# --------------------------------------------------------------------------- register


@dataclass(frozen=True)
class Registration:
    """A validated request to register a key, with no material in it."""

    subaccount: str
    process: str
    venue: str
    permissions: tuple[str, ...]
    placement: Placement
    path: str
    rotate: bool
    extra_paths: tuple[str, ...] = ()
    """Key paths outside the prefix (the spec's explicit ``key:``) also searched for the same key."""

    @property
    def ref(self) -> str:
        return f"{self.placement.mount}/{self.path}"

    @property
    def process_ref(self) -> str:
        return f"{self.subaccount}/{self.process}"


def plan_registration(
    name: str,
    *,
    venue: str | None,
    permissions: str | None,
    path: str | None = None,
    mount: str | None = None,
    prefix: str | None = None,
    rotate: bool = False,
    spec: FleetSpec | None = None,
) -> Registration:
    """Check everything that needs no Vault; the spec, when given, supplies and bounds the rest.

    Mistakes in the command (names, ids, a process or venue the spec does not have) raise
    KeyInputError (exit 2). A key the spec's role may not hold, or permissions other than
    the exact set the spec states, raise RefusedError (exit 1): deploying it would break
    least privilege, and ``keyfence check`` would block it.
    """
    subaccount, process = parse_process_ref(name)
    placement = resolve_placement(spec, mount, prefix)
    entry = find_entry(spec, subaccount, process) if spec is not None else None
    if entry is not None and venue is not None and venue != entry.subaccount.venue:
        raise KeyInputError(
            f"--venue {venue} contradicts the spec: subaccount '{subaccount}' trades "
            f"{entry.subaccount.venue}; register a {entry.subaccount.venue} key created in that subaccount"
        )
    venue = venue or (entry.subaccount.venue if entry is not None else None)
    if venue is None:
        raise KeyInputError("--venue is required (spot or futures) unless --spec names the process")
    if venue not in perms.VENUES:
        raise KeyInputError(f"--venue {venue!r} is not one of {', '.join(perms.VENUES)}")
    spec_ids = tuple(entry.process.permissions or ()) if entry is not None else ()
    if permissions is None:
        if not spec_ids:
            raise KeyInputError(
                "--permissions is required (comma-separated ids) unless the spec lists the process's "
                f"permissions; {venue} permissions are {', '.join(sorted(perms.PERMISSION_IDS[venue]))}"
            )
        ids = tuple(sorted(spec_ids))
    else:
        ids = parse_permission_list(permissions, venue)
    key_path = key_path_for(subaccount, process, placement, path, entry)
    extra: tuple[str, ...] = ()
    if entry is not None and spec is not None:
        _check_fit(entry, ids)
        extra = tuple(sorted({e.key_path for e in spec.entries()} - {key_path}))
    return Registration(subaccount, process, venue, ids, placement, key_path, rotate, extra)


def _check_fit(entry: ProcessEntry, ids: tuple[str, ...]) -> None:
    sub, proc = entry.subaccount, entry.process
    extra = perms.excess(
        proc.role, sub.venue, ids, master=sub.master, allow_withdrawals=proc.allow_withdrawals
    )
    if extra:
        raise RefusedError(
            f"refused: {entry.ref} is a {proc.role} process and its key may not hold "
            f"{perms.explain_excess(proc.role, sub.venue, extra, master=sub.master)}; "
            "create the key on Kraken without them and register it again"
        )
    if proc.permissions and set(proc.permissions) != set(ids):
        loc = entry.location
        raise RefusedError(
            f"refused: the spec ({loc.file}:{loc.line}:{loc.column}) states that the key of {entry.ref} "
            f"holds exactly {perms.format_permissions(proc.permissions)}, "
            f"not {perms.format_permissions(ids)}; make the key and the spec agree"
        )


@dataclass(frozen=True)
class Registered:
    """What ``register_key`` wrote: where, which version, whose fingerprint."""

    mount: str
    path: str
    version: int
    fingerprint: str
    replaced_version: int | None
    warnings: tuple[str, ...] = ()

    @property
    def ref(self) -> str:
        return f"{self.mount}/{self.path}"


def _utc_now() -> datetime:
    return datetime.now(timezone.utc)


def iso_utc(moment: datetime) -> str:
    """UTC ISO-8601 to the second, 'Z'-suffixed, as stored in ``registered_at``."""
    return moment.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def absent(outcome: object) -> bool:
    """Whether a read found no key at the path; a mount that cannot hold keys is an error instead.

    A KV version 1 mount answers 'not found' to every KV v2 read and then accepts the write
    at a path of its own, so 'not found' there must never mean 'free to register'.
    """
    return isinstance(outcome, KeyNotFoundError) and not isinstance(outcome, KVMountError)


def _existing(client: KV2Client, mount: str, path: str) -> KeyMetadata | None:
    try:
        metadata = client.read_metadata(mount, path)
    except KVMountError:
        raise
    except KeyNotFoundError:
        return None
    return metadata if metadata.current_version else None


def _holders_of(
    client: KV2Client,
    mount: str,
    paths: Sequence[str],
    fingerprint: str,
    progress: Progress,
) -> tuple[list[str], list[str]]:
    """Among ``paths``, those holding ``fingerprint``, and those whose identity is unknown.

    Every path is read; a path that cannot be read makes the check incomplete, so it is
    an error (a duplicate could hide there) rather than a warning.
    """
    outcomes = tracked(
        client, lambda p: client.read_metadata(mount, p), paths, progress, "looking for this key elsewhere"
    )
    holders: list[str] = []
    unknown: list[str] = []
    problems: list[str] = []
    for path, outcome in zip(paths, outcomes, strict=True):
        if absent(outcome):
            continue
        if isinstance(outcome, KeyfenceError):
            problems.append(vault_problem(mount, path, outcome))
            continue
        current = outcome.current
        if current is None or current.destroyed:
            continue
        found = metadata_fingerprint(outcome)
        if found is None:
            unknown.append(path)
        elif found == fingerprint:
            holders.append(path)
    if problems:
        raise VaultError(
            "cannot tell whether this key is already registered elsewhere; nothing was written",
            problems=problems,
        )
    return holders, unknown


def vault_problem(mount: str, path: str, exc: KeyfenceError) -> str:
    reason = getattr(exc, "reason", None)
    return f"{mount}/{path}: {reason}" if isinstance(reason, str) else str(exc)


def _scan_paths(client: KV2Client, registration: Registration) -> list[str]:
    placement = registration.placement
    listed = client.list_keys(placement.mount, placement.prefix)
    return sorted((set(listed) | set(registration.extra_paths)) - {registration.path})


def preflight(client: KV2Client, registration: Registration) -> KeyMetadata | None:
    """Check the target before anyone types a secret: the mount holds KV v2 keys, the path's
    state fits --rotate, and the prefix can be listed for duplicates. Returns what is there.

    ``register_key`` checks all of it again (and writes check-and-set): this only spares the
    operator pasting a key into a command that was bound to be refused.
    """
    current = _existing(client, registration.placement.mount, registration.path)
    _refuse_target(registration, current, None)
    client.list_keys(registration.placement.mount, registration.placement.prefix)
    _check_capabilities(client, registration, rotating=current is not None)
    return current


_PROBE: Final = "0" * 64
"""A fingerprint-shaped ledger record name: the token's ledger rules are globs over fingerprints."""


def _check_capabilities(client: KV2Client, registration: Registration, *, rotating: bool) -> None:
    """Refuse before the prompt when the token lacks a capability the registration will use."""
    mount, path = registration.placement.mount, registration.path
    ledger = f"{mount}/data/{registration.placement.ledger}/{_PROBE}"
    needed = {
        f"{mount}/data/{path}": ("update",) if rotating else ("create",),
        f"{mount}/metadata/{path}": ("update",),
        # A rotation removes the replaced key's record: a tombstone written over it (update).
        ledger: ("create", "read", "update") if rotating else ("create", "read"),
    }
    granted = client.capabilities(list(needed))
    if granted is None or any("root" in caps for caps in granted.values()):
        return
    lacking = [
        f"the '{capability}' capability on '{api_path}'"
        + (" (any record under the ledger)" if _PROBE in api_path else "")
        for api_path, capabilities in needed.items()
        for capability in capabilities
        if capability not in granted.get(api_path, frozenset()) or "deny" in granted.get(api_path, ())
    ]
    if lacking:
        raise KeyAccessDeniedError(
            client.addr,
            f"{mount}/{path}",
            "permission denied: the token may not register this key; its policy needs "
            + ", ".join(lacking)
            + " (docs/vault-policies/key-admin.hcl is what 'keys register' needs); "
            "nothing was asked for or written",
        )


def _refuse_target(registration: Registration, current: KeyMetadata | None, fingerprint: str | None) -> None:
    if current is not None and not registration.rotate:
        state = key_status(current)
        notes = [f"version {current.current_version}"]
        if state != "ok":
            notes.append(state)
        if fingerprint is not None and metadata_fingerprint(current) == fingerprint:
            notes.append("holding this same key")
        raise RefusedError(
            f"refused: {registration.ref} is already registered ({', '.join(notes)}); "
            "use --rotate to replace it with a new version"
        )
    if current is None and registration.rotate:
        raise RefusedError(
            f"refused: --rotate, but no key is registered at {registration.ref} to rotate; "
            "run without --rotate to register it (check the name and --path first)"
        )


def register_key(
    client: KV2Client,
    registration: Registration,
    material: KeyMaterial,
    *,
    progress: Progress | None = None,
    now: Callable[[], datetime] = _utc_now,
) -> Registered:
    """Store ``material`` at the registration's path, refusing anything that would share a key.

    Order matters: the existing key and every other key are read before the write, and the
    write itself is check-and-set against what was read, so a concurrent registration of
    the same path makes exactly one of them fail (RefusedError) instead of one silently
    overwriting the other.
    """
    progress = progress or NoProgress()
    mount, path = registration.placement.mount, registration.path
    fingerprint = fingerprint_of(material.api_key)
    current = _existing(client, mount, path)
    _refuse_target(registration, current, fingerprint)
    ledger = Ledger(client, mount, registration.placement.ledger)
    if ledger.contains(path):
        raise RefusedError(
            f"refused: {registration.ref} lies inside the key ledger ({mount}/{ledger.root}/); "
            "keys live elsewhere in the mount"
        )
    holders, unknown = _holders_of(client, mount, _scan_paths(client, registration), fingerprint, progress)
    if holders:
        where = ", ".join(f"{mount}/{p}" for p in holders)
        raise RefusedError(
            f"refused: this API key (fingerprint {fingerprint[:SHORT_FINGERPRINT]}) is already registered at "
            f"{where}; two processes on one key interleave nonces. Create a separate key on Kraken for "
            f"{registration.process_ref} and register that one; nothing was written"
        )
    record = ledger.read(fingerprint)
    if record is not None and record.path != path:
        raise RefusedError(
            f"refused: this API key (fingerprint {fingerprint[:SHORT_FINGERPRINT]}) is already registered at "
            f"{mount}/{record.path} (key ledger {ledger.ref(fingerprint)}, held by {record.holder()}); two "
            f"processes on one key interleave nonces. Create a separate key on Kraken for "
            f"{registration.process_ref} and register that one; nothing was written (if that path no "
            "longer holds this key, 'keyfence keys list --repair' removes the stale record)"
        )
    created = False
    if record is None:
        # The ledger record first: of two registrations of one key, whatever their paths, one wins here.
        try:
            record = ledger.create(LedgerRecord(fingerprint, path))
            created = True
        except LedgerRaceLostError:
            raise RefusedError(
                f"refused: this API key (fingerprint {fingerprint[:SHORT_FINGERPRINT]}) was registered "
                f"concurrently: {describe(ledger.read(fingerprint), mount)}; nothing was written"
            ) from None
    cas = current.current_version if current is not None else 0
    try:
        version = client.write_key(mount, path, material, cas=cas)
    except BaseException:
        if created:
            _forget(ledger, record)
        raise
    custom = {
        METADATA_SUBACCOUNT: registration.subaccount,
        METADATA_VENUE: registration.venue,
        METADATA_PERMISSIONS: perms.format_permissions(registration.permissions),
        METADATA_FINGERPRINT: fingerprint,
        # The secret's identity too, so the check recognises a copy of the secret alone without
        # ever reading key material (a CI token may read metadata only).
        METADATA_SECRET_FINGERPRINT: material.secret_fingerprint,
        METADATA_FINGERPRINT_VERSION: str(version),
        METADATA_REGISTERED_AT: iso_utc(now()),
    }
    try:
        existing = dict(client.read_metadata(mount, path).custom_metadata)
        client.write_key_metadata(mount, path, merged_metadata(existing, custom), cas_required=True)
    except KeyfenceError as exc:
        raise VaultError(
            f"{registration.ref}: version {version} of the key was written but its metadata was not "
            f"({exc.headline}); run the same command with --rotate once the cause is fixed"
        ) from None
    warnings: list[str] = []
    if unknown:
        shown = ", ".join(f"{mount}/{p}" for p in unknown[:5]) + (" ..." if len(unknown) > 5 else "")
        warnings.append(
            f"{len(unknown)} other key(s) carry no fingerprint in their metadata, so a copy of this key "
            f"among them cannot be ruled out: {shown}; "
            "re-register them with 'keyfence keys register --rotate'"
        )
    replaced = current.current_version if current is not None else None
    old = metadata_fingerprint(current) if current is not None else None
    if old is not None and old != fingerprint:
        try:
            warnings.extend(_retire(ledger, old, path))
        except KeyfenceError as exc:
            # The new version is written: a record that cannot be retired now is a warning, not a failure.
            warnings.append(
                f"version {version} is written, but the replaced key's ledger record {ledger.ref(old)} was "
                f"not removed: {exc.cause}"
            )
    return Registered(mount, path, version, fingerprint, replaced, tuple(warnings))


def _forget(ledger: Ledger, record: LedgerRecord) -> None:
    """Undo a ledger record whose key was never written; a failure here is left for --repair."""
    try:
        ledger.remove(record)
    except KeyfenceError:
        return


def _retire(ledger: Ledger, fingerprint: str, path: str) -> list[str]:
    """After a rotation, the old key's record goes unless a stack still holds it (then it says so)."""
    record = ledger.read(fingerprint)
    if record is None or record.path != path:
        return []
    if record.claimed:
        return [
            f"the replaced key is still claimed by {record.holder()}; the claim is released, and its "
            "ledger record removed, by that stack's next 'pulumi up'"
        ]
    ledger.remove(record)
    return []
