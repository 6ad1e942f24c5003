"""The pack's policy configuration: JSON schema, defaults, and tolerant parsing.

Every policy accepts the same shared properties so that one
``--policy-pack-config`` file can rename a label once for the whole pack. The
Pulumi CLI fills schema defaults before handing config over, but the Python SDK
does not, and a unit test or another engine may pass anything: absent properties
fall back to the defaults here, and malformed values are turned into error
sentences (reported as violations by the pack) while the default is used, so a
typo can neither crash a mandatory policy nor silently relax it.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from . import labels as keys
from .facts import KEY_PREFIXES, KNOWN_KEYS, VAULT_VERIFIED, KeyFact, parse_facts, parse_prefixes
from .facts import schema as facts_schema
from .kinds import DEFAULT_KEY_BEARING_KINDS, WORKLOAD_KINDS
from .permissions import PERMISSION_IDS, ROLE_ALLOWANCES, VENUES

LABELS: Final = "labels"
ANNOTATIONS: Final = "annotations"
ROLE_ALLOWANCES_PROPERTY: Final = "roleAllowances"
KEY_BEARING_KINDS: Final = "keyBearingKinds"
REQUIRE_FINGERPRINT: Final = "requireFingerprint"
REQUIRE_PERMISSIONS: Final = "requirePermissions"
REQUIRE_STATEFULSET: Final = "requireStatefulSet"

FLAG_DESCRIPTIONS: Final[Mapping[str, str]] = {
    REQUIRE_FINGERPRINT: "Report key-bearing workloads whose key has no fingerprint annotation. Set false "
    "only for offline checks that cannot see Vault.",
    REQUIRE_PERMISSIONS: "Report key-bearing workloads whose key declares no permissions. Set false only "
    "for offline checks that cannot see Vault metadata.",
    REQUIRE_STATEFULSET: "Require every key-bearing workload to be a StatefulSet (replicas <= 1): unlike a "
    "Deployment, it never starts a replacement pod while a deleted, evicted or drained one is still "
    "terminating.",
}
"""Boolean options that single policies declare on top of the shared properties."""

FLAG_DEFAULTS: Final[Mapping[str, bool]] = {
    REQUIRE_FINGERPRINT: True,
    REQUIRE_PERMISSIONS: True,
    REQUIRE_STATEFULSET: False,
}

SHARED_PROPERTIES: Final[tuple[str, ...]] = (
    LABELS,
    ANNOTATIONS,
    ROLE_ALLOWANCES_PROPERTY,
    KEY_BEARING_KINDS,
    KNOWN_KEYS,
    VAULT_VERIFIED,
    KEY_PREFIXES,
)
"""Properties every keyfence policy accepts."""

_RESERVED: Final = frozenset({"enforcementLevel"})
_CUSTOM_KIND: Final = re.compile(r"^[a-z0-9]([a-z0-9.-]*[a-z0-9])?/[A-Z][A-Za-z0-9]*$")


@dataclass(frozen=True)
class LabelKeys:
    """The label keys the pack reads; each overridable under config ``labels.<name>``."""

    subaccount: str = keys.SUBACCOUNT
    process: str = keys.PROCESS
    role: str = keys.ROLE
    venue: str = keys.VENUE
    master: str = keys.MASTER
    exchange_key: str = keys.EXCHANGE_KEY
    fingerprint: str = keys.FINGERPRINT_LABEL


@dataclass(frozen=True)
class AnnotationKeys:
    """The annotation keys the pack reads; each overridable under config ``annotations.<name>``."""

    key_path: str = keys.KEY_PATH
    vault_mount: str = keys.VAULT_MOUNT
    fingerprint: str = keys.FINGERPRINT
    key_version: str = keys.KEY_VERSION
    permissions: str = keys.PERMISSIONS
    allow_withdrawals: str = keys.ALLOW_WITHDRAWALS


# Config names are the camelCase names of labels.DEFAULT_LABELS / DEFAULT_ANNOTATIONS.
_LABEL_FIELDS: Final[dict[str, str]] = {
    "subaccount": "subaccount",
    "process": "process",
    "role": "role",
    "venue": "venue",
    "master": "master",
    "exchangeKey": "exchange_key",
    "fingerprint": "fingerprint",
}
_ANNOTATION_FIELDS: Final[dict[str, str]] = {
    "keyPath": "key_path",
    "vaultMount": "vault_mount",
    "fingerprint": "fingerprint",
    "keyVersion": "key_version",
    "permissions": "permissions",
    "allowWithdrawals": "allow_withdrawals",
}


def _default_allowances() -> dict[str, dict[str, frozenset[str]]]:
    return {
        role: {venue: frozenset(ids) for venue, ids in by_venue.items()}
        for role, by_venue in ROLE_ALLOWANCES.items()
    }


@dataclass(frozen=True)
class PackConfig:
    """One policy's effective configuration, defaults applied."""

    labels: LabelKeys = field(default_factory=LabelKeys)
    annotations: AnnotationKeys = field(default_factory=AnnotationKeys)
    role_allowances: Mapping[str, Mapping[str, frozenset[str]]] = field(default_factory=_default_allowances)
    key_bearing_kinds: frozenset[str] = frozenset(DEFAULT_KEY_BEARING_KINDS)
    """Known kinds by name, and custom kinds as ``<group>/<Kind>``, that may hold a key."""
    require_fingerprint: bool = True
    require_permissions: bool = True
    require_statefulset: bool = False
    known_keys: tuple[KeyFact, ...] = ()
    vault_verified: bool = False
    key_prefixes: tuple[str, ...] = ()


@dataclass(frozen=True)
class ParsedConfig:
    """The effective config and one sentence per malformed property (empty when all is well)."""

    config: PackConfig
    errors: tuple[str, ...] = ()


def _string_map_schema(names: Mapping[str, str], defaults: Mapping[str, str], what: str) -> dict[str, Any]:
    return {
        "type": "object",
        "description": f"{what} keys the pack reads, by name; names left out keep their default.",
        "properties": {name: {"type": "string", "minLength": 1} for name in names},
        "additionalProperties": False,
        "default": dict(defaults),
    }


def schema_properties(*, flags: Collection[str] = ()) -> dict[str, dict[str, Any]]:
    """JSON-schema properties for a policy's ``PolicyConfigSchema`` (plain dicts and lists only)."""
    id_lists = {
        venue: {
            "type": "array",
            "items": {"type": "string", "enum": sorted(PERMISSION_IDS[venue])},
            "uniqueItems": True,
        }
        for venue in VENUES
    }
    properties: dict[str, dict[str, Any]] = {
        LABELS: _string_map_schema(_LABEL_FIELDS, keys.DEFAULT_LABELS, "Label"),
        ANNOTATIONS: _string_map_schema(_ANNOTATION_FIELDS, keys.DEFAULT_ANNOTATIONS, "Annotation"),
        ROLE_ALLOWANCES_PROPERTY: {
            "type": "object",
            "description": "Permission ids each role's key may hold, per venue; roles and venues left out "
            "keep their default. Withdrawal rights stay limited to the master's treasury regardless.",
            "additionalProperties": {"type": "object", "properties": id_lists, "additionalProperties": False},
            "default": {
                role: {venue: sorted(ids) for venue, ids in by_venue.items()}
                for role, by_venue in ROLE_ALLOWANCES.items()
            },
        },
        KEY_BEARING_KINDS: {
            "type": "array",
            "description": "Workload kinds that may hold an exchange key. DaemonSet, Job, CronJob, "
            "Rollout and ScaledJob are left out by default because they run several pods (per node, per "
            "run, per rollout) on one key. A custom kind the pack does not know is named <group>/<Kind> "
            "and listed only if it never runs two pods at once.",
            "items": {
                "type": "string",
                "anyOf": [{"enum": list(WORKLOAD_KINDS)}, {"pattern": _CUSTOM_KIND.pattern}],
            },
            "uniqueItems": True,
            "default": list(DEFAULT_KEY_BEARING_KINDS),
        },
        **facts_schema(),
    }
    for flag in flags:
        properties[flag] = {
            "type": "boolean",
            "description": FLAG_DESCRIPTIONS[flag],
            "default": FLAG_DEFAULTS[flag],
        }
    return properties


def _describe(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _parse_keys(raw: object, prop: str, names: Mapping[str, str], errors: list[str]) -> dict[str, str]:
    """Overrides of label/annotation keys, as ``{dataclass field: key}``."""
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        errors.append(f"{prop} must be an object of name -> key, not {_describe(raw)}; using the defaults")
        return {}
    out: dict[str, str] = {}
    for name, value in raw.items():
        if name not in names:
            errors.append(f"{prop}.{name} is not a known name (known: {', '.join(names)}); ignored")
        elif not isinstance(value, str) or not value.strip():
            errors.append(
                f"{prop}.{name} must be a non-empty string, not {_describe(value)}; using the default"
            )
        else:
            out[names[name]] = value.strip()
    return out


def _parse_allowances(raw: object, errors: list[str]) -> dict[str, dict[str, frozenset[str]]]:
    merged = _default_allowances()
    if raw is None:
        return merged
    prop = ROLE_ALLOWANCES_PROPERTY
    if not isinstance(raw, Mapping):
        errors.append(
            f"{prop} must be an object of role -> {{spot: [...], futures: [...]}}, not {_describe(raw)}; "
            "using the defaults"
        )
        return merged
    for role, by_venue in raw.items():
        if not isinstance(role, str) or not role:
            errors.append(f"{prop} has a role name that is not a string: {_describe(role)}; ignored")
            continue
        if not isinstance(by_venue, Mapping):
            errors.append(
                f"{prop}.{role} must be an object of venue -> list of permission ids, not "
                f"{_describe(by_venue)}; ignored"
            )
            continue
        entry = dict(merged.get(role, {}))
        for venue, ids in by_venue.items():
            if venue not in PERMISSION_IDS:
                errors.append(f"{prop}.{role}.{venue}: unknown venue (known: {', '.join(VENUES)}); ignored")
                continue
            if isinstance(ids, (str, bytes)) or not isinstance(ids, Iterable):
                errors.append(
                    f"{prop}.{role}.{venue} must be a list of permission ids, not {_describe(ids)}; ignored"
                )
                continue
            known = PERMISSION_IDS[venue]
            good = {i for i in ids if isinstance(i, str) and i in known}
            bad = [i for i in ids if not (isinstance(i, str) and i in known)]
            if bad:
                errors.append(
                    f"{prop}.{role}.{venue} lists unknown permission ids {', '.join(map(_describe, bad))} "
                    f"(known: {', '.join(sorted(known))}); they are not allowed"
                )
            entry[venue] = frozenset(good)
        merged[role] = entry
    return merged


def _parse_kinds(raw: object, errors: list[str]) -> frozenset[str]:
    if raw is None:
        return frozenset(DEFAULT_KEY_BEARING_KINDS)
    if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable) or isinstance(raw, Mapping):
        errors.append(
            f"{KEY_BEARING_KINDS} must be a list of kinds, not {_describe(raw)}; using the defaults"
        )
        return frozenset(DEFAULT_KEY_BEARING_KINDS)
    kinds = list(raw)
    good = [k for k in kinds if isinstance(k, str) and (k in WORKLOAD_KINDS or _CUSTOM_KIND.match(k))]
    bad = [k for k in kinds if k not in good]
    if bad:
        errors.append(
            f"{KEY_BEARING_KINDS} lists unknown kinds {', '.join(map(_describe, bad))} (known: "
            f"{', '.join(WORKLOAD_KINDS)}, or <group>/<Kind> for a custom kind); they are ignored"
        )
    return frozenset(good)


def _parse_flag(raw: object, prop: str, default: bool, errors: list[str]) -> bool:
    if raw is None:
        return default
    if isinstance(raw, bool):
        return raw
    errors.append(f"{prop} must be true or false, not {_describe(raw)}; using {str(default).lower()}")
    return default


def parse_config(raw: object, accepted: Collection[str] = SHARED_PROPERTIES) -> ParsedConfig:
    """Apply defaults to a policy's config dict and explain whatever is malformed.

    ``accepted`` names the properties the calling policy declares; anything else
    (a typo such as ``requireFingerprints``) is an error rather than silently ignored.
    """
    errors: list[str] = []
    if raw is None:
        return ParsedConfig(PackConfig())
    if not isinstance(raw, Mapping):
        return ParsedConfig(
            PackConfig(), (f"config must be an object, not {_describe(raw)}; using the defaults",)
        )
    try:
        given = dict(raw)
    except Exception as exc:  # a foreign mapping may raise anything
        return ParsedConfig(
            PackConfig(), (f"config cannot be read ({type(exc).__name__}); using the defaults",)
        )
    for name in given:
        if name not in accepted and name not in _RESERVED:
            errors.append(
                f"unknown config property {_describe(name)} (known: {', '.join(accepted)}); ignored"
            )
    label_keys = LabelKeys(**_parse_keys(given.get(LABELS), LABELS, _LABEL_FIELDS, errors))
    annotation_keys = AnnotationKeys(
        **_parse_keys(given.get(ANNOTATIONS), ANNOTATIONS, _ANNOTATION_FIELDS, errors)
    )
    allowances = _parse_allowances(given.get(ROLE_ALLOWANCES_PROPERTY), errors)
    kinds = _parse_kinds(given.get(KEY_BEARING_KINDS), errors)
    flags = {
        flag: _parse_flag(given.get(flag), flag, FLAG_DEFAULTS[flag], errors)
        if flag in accepted
        else FLAG_DEFAULTS[flag]
        for flag in FLAG_DESCRIPTIONS
    }
    known_keys = parse_facts(given.get(KNOWN_KEYS), errors)
    vault_verified = _parse_flag(given.get(VAULT_VERIFIED), VAULT_VERIFIED, False, errors)
    key_prefixes = parse_prefixes(given.get(KEY_PREFIXES), errors)
    config = PackConfig(
        labels=label_keys,
        annotations=annotation_keys,
        role_allowances=allowances,
        key_bearing_kinds=kinds,
        require_fingerprint=flags[REQUIRE_FINGERPRINT],
        require_permissions=flags[REQUIRE_PERMISSIONS],
        require_statefulset=flags[REQUIRE_STATEFULSET],
        known_keys=known_keys,
        vault_verified=vault_verified,
        key_prefixes=key_prefixes,
    )
    return ParsedConfig(config, tuple(errors))
