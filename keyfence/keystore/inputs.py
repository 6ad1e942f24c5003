"""What an operator gives ``keyfence keys``: process references, Vault paths, key material, permissions.

Also where keys live: the mount and prefix from the spec or the command line."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from keyfence_policies import permissions as perms
from keyfence_policies.labels import canonical_key_path

from ..errors import KeyfenceError
from ..material import KeyMaterial, material_problems
from ..spec import DNS_LABEL, MAX_PROCESS_NAME, MAX_SUBACCOUNT_NAME, PATH_SEGMENT, FleetSpec, ProcessEntry

METADATA_REGISTERED_AT: Final = "registered_at"
DEFAULT_MOUNT: Final = "secret"
DEFAULT_PREFIX: Final = "kraken"
SHORT_FINGERPRINT: Final = 12
TIMESTAMP: Final = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$")


class KeyInputError(KeyfenceError):
    """The command's arguments or standard input cannot be acted on (exit 2)."""


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
    """The pair as Kraken needs it, or KeyInputError naming the field and never its value."""
    problems = material_problems(api_key, api_secret)
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
            f"{venue} permission id{'' if len(unknown) == 1 else 's'}; {perms.unknown_advice(venue, unknown)}"
        )
    return tuple(sorted(set(ids)))


# --------------------------------------------------------------------------- where keys live


@dataclass(frozen=True)
class Placement:
    """The KV v2 mount and the prefix under which keyfence's keys live."""

    mount: str
    prefix: str
    ledger: str = "keyfence/ledger"
    """Where the key ledger lives in the mount (the spec's ``vault.ledger``)."""

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
        return Placement(spec.vault.mount, spec.vault.prefix, spec.vault.ledger)
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
