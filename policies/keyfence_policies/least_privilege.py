"""``least-privilege-key``: a key carries only the rights its process's role needs.

A leaked trader key that can withdraw is a lost treasury; a market-data key that
can trade is a rogue order away from a loss. The declared permissions (annotation on
the workload or its key Secret) must stay within the role's allowance, and
withdrawal rights never sit on a subaccount key (Kraken blocks subaccount
withdrawals anyway, so such a key is both useless and dangerous).
"""

from __future__ import annotations

from collections.abc import Iterator

from .config import REQUIRE_PERMISSIONS, PackConfig
from .identity import describe_key
from .permissions import (
    PERMISSION_IDS,
    WITHDRAWAL_IDS,
    excess,
    explain_excess,
    parse_permissions,
    unknown_advice,
    unknown_ids,
)
from .rule import Finding, Rule, each_key_bearing
from .workloads import StackIndex, Workload

NAME = "least-privilege-key"


def _master(workload: Workload, index: StackIndex, config: PackConfig) -> tuple[bool, list[str]]:
    """Master only if something says so and nothing says otherwise (subaccount is the safe default)."""
    label = config.labels.master
    values = [workload.label(label)]
    values += [s.labels.get(label) for s in workload.key_secrets]
    values += [n.labels.get(label) for n in index.namespaces.get(workload.namespace, ())]
    present = [v.strip().lower() for v in values if v is not None]
    odd = sorted({v for v in present if v not in ("true", "false")})
    return bool(present) and all(v == "true" for v in present), odd


def _venue(workload: Workload, config: PackConfig) -> str | None:
    label = config.labels.venue
    for key in workload.reachable_keys():
        if key.venue:
            return key.venue  # Vault's (or the fleet spec's) word on the key's venue beats any label
    own = workload.label(label)
    if own:
        return own
    for secret in workload.key_secrets:
        theirs = secret.labels.get(label)
        if theirs:
            return theirs
    return None


def _permissions(workload: Workload, config: PackConfig) -> list[str] | None:
    """The union of every declared permission list, or ``None`` when none is declared."""
    key = config.annotations.permissions
    declared = workload.annotation_values(key)
    declared += [s.annotations[key] for s in workload.key_secrets if key in s.annotations]
    # Vault's record of the key's rights counts whatever the stack declares.
    declared += [",".join(k.permissions) for k in workload.reachable_keys() if k.from_vault and k.permissions]
    if not declared:
        return None
    ids: dict[str, None] = {}
    for value in declared:
        for permission in parse_permissions(value):
            ids.setdefault(permission, None)
    return list(ids)


def _vault_disagreements(workload: Workload, config: PackConfig) -> Iterator[Finding]:
    """Declared permissions that differ from what Vault records for the key (check mode)."""
    name = config.annotations.permissions
    sources = [("the workload", v) for v in workload.annotation_values(name)]
    sources += [(s.ref, s.annotations[name]) for s in workload.key_secrets if name in s.annotations]
    for key in workload.reachable_keys():
        if not key.from_vault or key.permissions is None:
            continue
        recorded = set(key.permissions)
        for where, value in sources:
            if set(parse_permissions(value)) != recorded:
                yield Finding(
                    f"{workload.ref}: {where} declares {name} {value!r}, but Vault records "
                    f"{','.join(sorted(recorded)) or 'none'} for {key.vault}: declared rights must be the "
                    "key's rights. Deploy through keyfence (it copies them from Vault), or fix the "
                    "annotation.",
                    workload.urn,
                )


def _workload_findings(workload: Workload, index: StackIndex, config: PackConfig) -> Iterator[Finding]:
    yield from _vault_disagreements(workload, config)
    key = describe_key(workload, config)
    role_label, venue_label = config.labels.role, config.labels.venue
    permissions_key = config.annotations.permissions
    role = workload.label(role_label)
    venue = _venue(workload, config)
    master, odd = _master(workload, index, config)
    if odd:
        yield Finding(
            f"{workload.ref}: label {config.labels.master} is {', '.join(odd)}, expected true or false; the "
            "key is treated as a subaccount key. Fix the label.",
            workload.urn,
        )
    if not role:
        yield Finding(
            f"{workload.ref} holds {key} but has no {role_label} label, so its allowed permissions are "
            f"unknown. Label it with one of: {', '.join(sorted(config.role_allowances))}.",
            workload.urn,
        )
        role = None
    elif role not in config.role_allowances:
        yield Finding(
            f"{workload.ref} holds {key} with unknown role {role!r} ({role_label}); known roles: "
            f"{', '.join(sorted(config.role_allowances))}. Use one of them, or add the role to "
            "roleAllowances.",
            workload.urn,
        )
        role = None
    if not venue:
        yield Finding(
            f"{workload.ref} holds {key} but neither it nor its key Secret has a {venue_label} label, so "
            f"the permission vocabulary is unknown. Label it {venue_label}: spot or futures.",
            workload.urn,
        )
    elif venue not in PERMISSION_IDS:
        yield Finding(
            f"{workload.ref} holds {key} for unknown venue {venue!r} ({venue_label}); expected one of: "
            f"{', '.join(sorted(PERMISSION_IDS))}.",
            workload.urn,
        )
        venue = None
    ids = _permissions(workload, config)
    if ids is None and not config.require_permissions:
        return
    if not ids:
        state = "has no" if ids is None else "has an empty"
        yield Finding(
            f"{workload.ref} holds {key} but {state} {permissions_key} annotation (on itself or its key "
            "Secret), so the key's rights are unknown. Declare the key's exact permissions, "
            "comma-separated (keyfence copies them from the key's Vault metadata).",
            workload.urn,
        )
        return
    unknown: list[str] = []
    if venue is not None:
        unknown = unknown_ids(venue, ids)
        if unknown:
            yield Finding(
                f"{workload.ref}: {permissions_key} lists {', '.join(unknown)}, not permissions of a "
                f"{venue} key: {unknown_advice(venue, unknown)}.",
                workload.urn,
            )
    withdrawals = sorted(WITHDRAWAL_IDS.intersection(ids))
    if role is None or venue is None:
        if withdrawals and not master:
            yield Finding(
                f"{workload.ref} holds {key} with withdrawal rights ({', '.join(withdrawals)}) on a "
                "subaccount key: Kraken blocks withdrawals from subaccounts, so the right only adds risk. "
                "Remove it; withdraw from the master's treasury process.",
                workload.urn,
            )
        return
    allow_withdrawals_values = workload.annotation_values(config.annotations.allow_withdrawals)
    allow_withdrawals = bool(allow_withdrawals_values) and all(
        v.strip().lower() == "true" for v in allow_withdrawals_values
    )
    extra = [
        i
        for i in excess(
            role,
            venue,
            ids,
            master=master,
            allow_withdrawals=allow_withdrawals,
            allowances=config.role_allowances,
        )
        if i not in unknown
    ]
    if extra:
        reasons = explain_excess(role, venue, extra, master=master, allowances=config.role_allowances)
        yield Finding(
            f"{workload.ref} holds {key} with more rights than role {role} needs: {reasons}. Re-issue the "
            "key with only the allowed permissions.",
            workload.urn,
        )


def check(index: StackIndex, config: PackConfig) -> Iterator[Finding]:
    """Report key-bearing workloads whose key's permissions exceed (or hide) what the role allows."""
    yield from each_key_bearing(index, NAME, lambda workload: _workload_findings(workload, index, config))


RULE = Rule(
    name=NAME,
    description="The exchange key of a workload carries only the permissions its role allows; withdrawal "
    "rights only on the master's treasury key with allow-withdrawals.",
    level="mandatory",
    check=check,
    remediation="Re-issue the key with the role's permissions only (see 'keyfence keys'), and label the "
    "workload with its role, venue and master flag.",
    flags=(REQUIRE_PERMISSIONS,),
)
