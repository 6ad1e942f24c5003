"""Facts about exchange keys that the stack itself cannot be trusted to state.

Labels and annotations are written by whoever writes the stack, and a transformation can
strip or rewrite them. What a key *is* — its Vault path, the fingerprints of its api key
and api secret, its subaccount, venue and permissions, the fleet process it belongs to —
comes from Vault and the fleet spec. ``keyfence check`` reads them and hands them to the
pack as config (``knownKeys``); anyone running the pack elsewhere can do the same with
``--policy-pack-config``. Parsing is tolerant: a malformed entry becomes an error
sentence (reported as a violation) and is skipped, never a crash.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from .labels import canonical_key_path

KNOWN_KEYS: Final = "knownKeys"
VAULT_VERIFIED: Final = "vaultVerified"
KEY_PREFIXES: Final = "keyPrefixes"

_HEX64: Final = re.compile(r"^[0-9a-f]{64}\Z")
_FIELDS: Final = (
    "mount",
    "path",
    "fingerprint",
    "secretFingerprint",
    "subaccount",
    "venue",
    "permissions",
    "process",
    "namespace",
    "master",
)


@dataclass(frozen=True)
class KeyFact:
    """One key as Vault (or, offline, the fleet spec) describes it."""

    mount: str
    path: str
    fingerprints: tuple[str, ...] = ()
    """Hex SHA-256 of the api key, then of the api secret, when known."""
    subaccount: str | None = None
    venue: str | None = None
    permissions: tuple[str, ...] | None = None
    process: str | None = None
    """``<subaccount>/<process>`` of the fleet process the key belongs to; None for other keys."""
    namespace: str | None = None
    """The namespace the fleet runs that process in."""
    master: bool | None = None

    @property
    def vault(self) -> str:
        return f"{self.mount}/{self.path}"


def schema() -> dict[str, dict[str, Any]]:
    """JSON-schema properties of the facts (kept loose: the pack explains what is wrong itself)."""
    return {
        KNOWN_KEYS: {
            "type": "array",
            "description": "Keys as Vault and the fleet spec describe them: mount, path, fingerprint "
            "(hex SHA-256 of the api key), secretFingerprint (of the api secret), subaccount, venue, "
            "permissions, process (<subaccount>/<process>), namespace, master. keyfence check fills it.",
            "items": {"type": "object"},
            "default": [],
        },
        VAULT_VERIFIED: {
            "type": "boolean",
            "description": "knownKeys lists every key under keyPrefixes as Vault holds it: a key Secret "
            "whose path or fingerprint is not among them is unverifiable.",
            "default": False,
        },
        KEY_PREFIXES: {
            "type": "array",
            "description": "Vault locations (<mount>/<prefix>) that hold exchange keys: a reference to a "
            "path below one of them that is not a known key is reported.",
            "items": {"type": "string"},
            "default": [],
        },
    }


def _text(entry: Mapping[object, object], name: str) -> str | None:
    value = entry.get(name)
    return value.strip() if isinstance(value, str) and value.strip() else None


def _fact(entry: object, position: int, errors: list[str]) -> KeyFact | None:
    where = f"{KNOWN_KEYS}[{position}]"
    if not isinstance(entry, Mapping):
        errors.append(f"{where} must be an object with mount and path; ignored")
        return None
    unknown = sorted(str(k) for k in entry if k not in _FIELDS)
    if unknown:
        errors.append(f"{where} has unknown fields {', '.join(unknown)}; they are ignored")
    mount = canonical_key_path(_text(entry, "mount") or "")
    path = canonical_key_path(_text(entry, "path") or "")
    if not mount or not path:
        errors.append(f"{where} needs a mount and a path; ignored")
        return None
    fingerprints: list[str] = []
    for name in ("fingerprint", "secretFingerprint"):
        value = entry.get(name)
        if value is None:
            continue
        digest = value.strip().lower() if isinstance(value, str) else ""
        if _HEX64.match(digest):
            fingerprints.append(digest)
        else:
            errors.append(f"{where}.{name} is not 64 hex digits; ignored")
    raw_permissions = entry.get("permissions")
    permissions: tuple[str, ...] | None = None
    if isinstance(raw_permissions, str):
        permissions = tuple(p.strip() for p in raw_permissions.split(",") if p.strip())
    elif isinstance(raw_permissions, Iterable) and not isinstance(raw_permissions, (bytes, Mapping)):
        permissions = tuple(p.strip() for p in raw_permissions if isinstance(p, str) and p.strip())
    elif raw_permissions is not None:
        errors.append(f"{where}.permissions must be a list of permission ids; ignored")
    master = entry.get("master")
    return KeyFact(
        mount=mount,
        path=path,
        fingerprints=tuple(fingerprints),
        subaccount=_text(entry, "subaccount"),
        venue=_text(entry, "venue"),
        permissions=permissions,
        process=_text(entry, "process"),
        namespace=_text(entry, "namespace"),
        master=master if isinstance(master, bool) else None,
    )


def parse_facts(raw: object, errors: list[str]) -> tuple[KeyFact, ...]:
    """The ``knownKeys`` list; malformed entries are explained in ``errors`` and skipped."""
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Iterable):
        errors.append(f"{KNOWN_KEYS} must be a list of objects; ignored")
        return ()
    facts = []
    for position, entry in enumerate(raw):
        fact = _fact(entry, position, errors)
        if fact is not None:
            facts.append(fact)
    return tuple(facts)


def parse_prefixes(raw: object, errors: list[str]) -> tuple[str, ...]:
    """``keyPrefixes``: canonical ``<mount>/<prefix>`` strings."""
    if raw is None:
        return ()
    if isinstance(raw, (str, bytes, Mapping)) or not isinstance(raw, Iterable):
        errors.append(f"{KEY_PREFIXES} must be a list of <mount>/<prefix> strings; ignored")
        return ()
    out = []
    for value in raw:
        canonical = canonical_key_path(value) if isinstance(value, str) else ""
        if "/" not in canonical:
            errors.append(f"{KEY_PREFIXES} entry {value!r} is not <mount>/<prefix>; ignored")
            continue
        out.append(canonical)
    return tuple(out)
