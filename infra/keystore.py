"""Key lifecycle in Vault: register, inventory and revoke exchange keys, one key per process.

This is the logic behind ``keyfence keys``; it knows nothing of terminals or typer. Its
guarantees: a key is never stored under a second path (its fingerprint is compared with
every key already registered), a write never silently replaces another one (check-and-set:
create-only for a new key, the version read for a rotation), and no message, result or
repr ever carries key material.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Final, Protocol, TypeVar

from keyfence_policies import permissions as perms
from keyfence_policies.labels import canonical_key_path

from .errors import KeyfenceError, RefusedError, VaultError
from .keys import (
    FINGERPRINT_PATTERN,
    METADATA_FINGERPRINT,
    METADATA_PERMISSIONS,
    METADATA_SUBACCOUNT,
    METADATA_VENUE,
    KeyMaterial,
    fingerprint_of,
)
from .spec import DNS_LABEL, MAX_PROCESS_NAME, MAX_SUBACCOUNT_NAME, PATH_SEGMENT, FleetSpec, ProcessEntry
from .vault import KeyMetadata, KeyNotFoundError, KV2Client, KVMountError

T = TypeVar("T")
R = TypeVar("R")

METADATA_REGISTERED_AT: Final = "registered_at"
DEFAULT_MOUNT: Final = "secret"
DEFAULT_PREFIX: Final = "kraken"
MAX_MATERIAL_CHARS: Final = 1024
"""Kraken keys are under 100 characters; anything far longer is the wrong thing pasted."""
SHORT_FINGERPRINT: Final = 12
_TIMESTAMP: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


class KeyInputError(KeyfenceError):
    """The command's arguments or standard input cannot be acted on (exit 2)."""


# --------------------------------------------------------------------------- progress


class Progress(Protocol):
    """Where long operations report how far they are; the CLI draws it, tests ignore it."""

    def begin(self, description: str, total: int) -> None: ...

    def step(self) -> None: ...

    def end(self) -> None: ...


class NoProgress:
    """Reports nowhere: the default, and what a pipe gets."""

    def begin(self, description: str, total: int) -> None:
        return None

    def step(self) -> None:
        return None

    def end(self) -> None:
        return None


def _tracked(
    client: KV2Client, fn: Callable[[T], R], items: Sequence[T], progress: Progress, description: str
) -> list[R | KeyfenceError]:
    """``client.read_many`` with one progress step per finished item."""

    def one(item: T) -> R:
        try:
            return fn(item)
        finally:
            progress.step()

    progress.begin(description, len(items))
    try:
        return client.read_many(one, items)
    finally:
        progress.end()


# --------------------------------------------------------------------------- validating input


def parse_process_ref(value: str) -> tuple[str, str]:
    """``SUBACCOUNT/PROCESS`` -> its two names, each a DNS-1123 label like the spec's."""
    parts = value.split("/")
    if len(parts) != 2:
        raise KeyInputError(
            f"{value!r} is not SUBACCOUNT/PROCESS (for example momentum/executor): one '/', two names"
        )
    subaccount, process = parts
    problems = [
        problem
        for kind, name, limit in (
            ("subaccount", subaccount, MAX_SUBACCOUNT_NAME),
            ("process", process, MAX_PROCESS_NAME),
        )
        if (problem := _label_problem(kind, name, limit))
    ]
    if problems:
        raise KeyInputError(f"invalid process name {value!r}", problems=problems)
    return subaccount, process


def _label_problem(kind: str, name: str, limit: int) -> str | None:
    if not name:
        return f"the {kind} name is empty"
    if len(name) > limit:
        return f"{kind} name {name!r} is {len(name)} characters; at most {limit} fit"
    if not DNS_LABEL.match(name):
        return (
            f"{kind} name {name!r} is not a DNS-1123 label: use lowercase letters, digits and '-', "
            "starting and ending with a letter or digit"
        )
    return None


def check_vault_path(value: str, what: str) -> str:
    """A Vault path in canonical form, or KeyInputError saying which segment is wrong."""
    if "%" in value or "\\" in value:
        raise KeyInputError(f"{what} {value!r} contains '%' or '\\': write the path literally, unencoded")
    canonical = canonical_key_path(value)
    if not canonical:
        raise KeyInputError(f"{what} {value!r} is empty once '/' are trimmed")
    for segment in canonical.split("/"):
        if segment in (".", ".."):
            raise KeyInputError(
                f"{what} {value!r} contains {segment!r}: Vault paths cannot climb directories"
            )
        if not PATH_SEGMENT.match(segment):
            raise KeyInputError(
                f"{what} {value!r}: segment {segment!r} may hold only letters, digits, '.', '_' and '-', "
                "starting with a letter or digit"
            )
    return canonical


def validate_material(api_key: str, api_secret: str) -> KeyMaterial:
    """The pair as Kraken needs it, or KeyInputError naming the field and never its value.

    The secret must be strict base64: Kraken signs requests with HMAC over the decoded
    secret, so a secret that does not decode is a truncated or mangled paste.
    """
    problems = []
    for name, value in (("api key", api_key), ("api secret", api_secret)):
        if not value:
            problems.append(f"the {name} is empty")
        elif len(value) > MAX_MATERIAL_CHARS:
            problems.append(f"the {name} is over {MAX_MATERIAL_CHARS} characters; is it the right value?")
        elif any(c.isspace() for c in value):
            problems.append(f"the {name} contains whitespace; paste it exactly, with no blanks in it")
        elif not value.isascii() or not value.isprintable():
            problems.append(f"the {name} contains characters that are not printable ASCII")
    if not problems:
        try:
            decoded = base64.b64decode(api_secret, validate=True)
        except (binascii.Error, ValueError):
            decoded = b""
            problems.append(
                "the api secret is not valid base64 (Kraken signs requests with the base64-decoded "
                "secret); paste it exactly as Kraken showed it, padding '=' included"
            )
        else:
            if not decoded:
                problems.append("the api secret decodes to nothing")
        if api_key == api_secret:
            problems.append("the api key and the api secret are the same value; one of them is misplaced")
    if problems:
        raise KeyInputError("the key read from standard input cannot be registered", problems=problems)
    return KeyMaterial(api_key=api_key, api_secret=api_secret)


def parse_permission_list(value: str, venue: str) -> tuple[str, ...]:
    """``a,b`` -> sorted unique ids, each a permission of ``venue``."""
    ids = perms.parse_permissions(value)
    if not ids:
        raise KeyInputError(
            f"--permissions is empty; list the key's permissions, comma-separated "
            f"({venue}: {', '.join(sorted(perms.PERMISSION_IDS[venue]))})"
        )
    unknown = perms.unknown_ids(venue, ids)
    if unknown:
        raise KeyInputError(
            f"{', '.join(repr(u) for u in unknown)} {'is not a' if len(unknown) == 1 else 'are not'} "
            f"{venue} permission id{'' if len(unknown) == 1 else 's'}; {venue} permissions are "
            f"{', '.join(sorted(perms.PERMISSION_IDS[venue]))}"
        )
    return tuple(sorted(set(ids)))


# --------------------------------------------------------------------------- where keys live


@dataclass(frozen=True)
class Placement:
    """The KV v2 mount and the prefix under which keyfence's keys live."""

    mount: str
    prefix: str

    def default_path(self, subaccount: str, process: str) -> str:
        return canonical_key_path(f"{self.prefix}/{subaccount}/{process}")


def resolve_placement(spec: FleetSpec | None, mount: str | None, prefix: str | None) -> Placement:
    """Options, else the spec's ``vault`` section, else secret/kraken; a contradiction is an error."""
    mount = check_vault_path(mount, "--mount") if mount is not None else None
    prefix = check_vault_path(prefix, "--prefix") if prefix is not None else None
    if spec is not None:
        pairs = (("--mount", mount, spec.vault.mount), ("--prefix", prefix, spec.vault.prefix))
        for option, given, wanted in pairs:
            if given is not None and given != wanted:
                raise KeyInputError(
                    f"{option} {given!r} contradicts the spec {spec.source}, whose vault section says "
                    f"{wanted!r}; drop {option} or fix the spec"
                )
        return Placement(spec.vault.mount, spec.vault.prefix)
    return Placement(mount or DEFAULT_MOUNT, prefix or DEFAULT_PREFIX)


def find_entry(spec: FleetSpec, subaccount: str, process: str) -> ProcessEntry:
    """The spec entry for ``subaccount/process``, or KeyInputError listing what the spec has."""
    entries = spec.entries()
    for entry in entries:
        if entry.subaccount.name == subaccount and entry.process.name == process:
            return entry
    in_subaccount = [e.process.name for e in entries if e.subaccount.name == subaccount]
    if in_subaccount:
        hint = f"subaccount '{subaccount}' runs {', '.join(in_subaccount)}"
    else:
        hint = f"its subaccounts are {', '.join(s.name for s in spec.subaccounts)}"
    raise KeyInputError(
        f"{spec.source}: no process {subaccount}/{process} in the spec ({hint}); "
        "add the process to the spec first, or check the name"
    )


def key_path_for(
    subaccount: str, process: str, placement: Placement, path: str | None, entry: ProcessEntry | None
) -> str:
    """``--path``, else the spec's key path for the process, else ``<prefix>/<subaccount>/<process>``."""
    given = check_vault_path(path, "--path") if path is not None else None
    if entry is not None:
        if given is not None and given != entry.key_path:
            loc = entry.location
            raise KeyInputError(
                f"--path {given!r} is not where the spec keeps the key of {entry.ref}: "
                f"{loc.file}:{loc.line}:{loc.column} says {entry.key_path!r}; drop --path or fix the spec"
            )
        return entry.key_path
    return given or placement.default_path(subaccount, process)


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


def _absent(outcome: object) -> bool:
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


def metadata_fingerprint(metadata: KeyMetadata) -> str | None:
    """The fingerprint recorded in custom metadata, if it has the right form."""
    value = metadata.custom_metadata.get(METADATA_FINGERPRINT)
    return value if value is not None and FINGERPRINT_PATTERN.match(value) else None


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
    outcomes = _tracked(
        client, lambda p: client.read_metadata(mount, p), paths, progress, "looking for this key elsewhere"
    )
    holders: list[str] = []
    unknown: list[str] = []
    problems: list[str] = []
    for path, outcome in zip(paths, outcomes, strict=True):
        if _absent(outcome):
            continue
        if isinstance(outcome, KeyfenceError):
            problems.append(_problem(mount, path, outcome))
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


def _problem(mount: str, path: str, exc: KeyfenceError) -> str:
    reason = getattr(exc, "reason", None)
    return f"{mount}/{path}: {reason}" if isinstance(reason, str) else str(exc)


def _scan_paths(client: KV2Client, registration: Registration) -> list[str]:
    placement = registration.placement
    listed = client.list_keys(placement.mount, placement.prefix)
    return sorted((set(listed) | set(registration.extra_paths)) - {registration.path})


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
    if current is not None and not registration.rotate:
        state = _status(current)
        notes = [f"version {current.current_version}"]
        if state != "ok":
            notes.append(state)
        if metadata_fingerprint(current) == fingerprint:
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
    holders, unknown = _holders_of(client, mount, _scan_paths(client, registration), fingerprint, progress)
    if holders:
        where = ", ".join(f"{mount}/{p}" for p in holders)
        raise RefusedError(
            f"refused: this API key (fingerprint {fingerprint[:SHORT_FINGERPRINT]}) is already registered at "
            f"{where}; two processes on one key interleave nonces. Create a separate key on Kraken for "
            f"{registration.process_ref} and register that one; nothing was written"
        )
    cas = current.current_version if current is not None else 0
    version = client.write_key(mount, path, material, cas=cas)
    custom = {
        METADATA_SUBACCOUNT: registration.subaccount,
        METADATA_VENUE: registration.venue,
        METADATA_PERMISSIONS: perms.format_permissions(registration.permissions),
        METADATA_FINGERPRINT: fingerprint,
        METADATA_REGISTERED_AT: iso_utc(now()),
    }
    try:
        client.write_key_metadata(mount, path, custom, cas_required=True)
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
    return Registered(mount, path, version, fingerprint, replaced, tuple(warnings))


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


def _status(metadata: KeyMetadata) -> str:
    current = metadata.current
    if current is None:
        return "no version"
    if current.destroyed:
        return "destroyed"
    if current.deleted:
        return "deleted"
    return "ok"


def _names_from_path(path: str, prefix: str) -> tuple[str | None, str | None]:
    """``<prefix>/<subaccount>/<process>`` -> the two names; anything else says nothing."""
    head = f"{prefix}/"
    if not path.startswith(head):
        return None, None
    rest = path[len(head) :].split("/")
    return (rest[0], rest[1]) if len(rest) == 2 else (None, None)


def _shown(value: str | None, pattern: re.Pattern[str]) -> str | None:
    """A metadata value fit to print: it must look like what it claims to be.

    Custom metadata is written by hand too; a secret pasted into the wrong field never
    looks like a name or a timestamp, so it is never echoed.
    """
    return value if value is not None and pattern.match(value) else None


def _known_permissions(raw: str | None) -> tuple[str, ...]:
    known = perms.PERMISSION_IDS["spot"] | perms.PERMISSION_IDS["futures"]
    return tuple(sorted({i for i in perms.parse_permissions(raw or "") if i in known}))


def _inventory_key(metadata: KeyMetadata, prefix: str, entry: ProcessEntry | None) -> InventoryKey:
    custom = metadata.custom_metadata
    path_sub, path_proc = _names_from_path(metadata.path, prefix)
    venue = custom.get(METADATA_VENUE)
    return InventoryKey(
        path=metadata.path,
        subaccount=_shown(custom.get(METADATA_SUBACCOUNT), DNS_LABEL)
        or (entry.subaccount.name if entry else path_sub),
        process=entry.process.name if entry else path_proc,
        venue=venue if venue in perms.VENUES else None,
        fingerprint=metadata_fingerprint(metadata),
        version=metadata.current_version,
        permissions=_known_permissions(custom.get(METADATA_PERMISSIONS)),
        registered_at=_shown(custom.get(METADATA_REGISTERED_AT), _TIMESTAMP),
        updated_time=metadata.updated_time,
        status=_status(metadata),
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
    outcomes = _tracked(
        client, lambda p: client.read_metadata(mount, p), paths, progress, f"reading {len(paths)} keys"
    )
    found: dict[str, KeyMetadata] = {}
    problems: list[str] = []
    for path, outcome in zip(paths, outcomes, strict=True):
        if _absent(outcome):
            continue
        if isinstance(outcome, KeyfenceError):
            problems.append(_problem(mount, path, outcome))
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
            elif (status := _status(metadata)) != "ok":
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


def revoke_key(client: KV2Client, metadata: KeyMetadata) -> Revoked:
    """Destroy every version and the metadata of the key ``metadata`` describes."""
    client.destroy_all_versions(metadata.mount, metadata.path)
    live = sum(1 for v in metadata.versions.values() if not v.destroyed)
    return Revoked(metadata.mount, metadata.path, live, metadata_fingerprint(metadata))


def summarize_metadata(metadata: Mapping[str, str]) -> str:
    """Subaccount, venue and permissions of a key, for confirmations; odd values are left out."""
    parts = []
    if subaccount := _shown(metadata.get(METADATA_SUBACCOUNT), DNS_LABEL):
        parts.append(f"subaccount {subaccount}")
    if (venue := metadata.get(METADATA_VENUE)) in perms.VENUES:
        parts.append(f"venue {venue}")
    if ids := _known_permissions(metadata.get(METADATA_PERMISSIONS)):
        parts.append(f"permissions {perms.format_permissions(ids)}")
    return ", ".join(parts)
