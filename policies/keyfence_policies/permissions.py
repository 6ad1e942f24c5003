"""Kraken API key permission vocabulary and what each role may hold.

One module for the spec validator, the Vault key verifier, ``keyfence keys`` and the
policy pack, so the four can never disagree. Ids follow Kraken's API key settings
(https://docs.kraken.com/exchange/guides/rest/api-keys.md): spot keys carry
fine-grained rights, futures keys ``general-read``/``general-full``/``withdrawal``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final, Literal

Venue = Literal["spot", "futures"]
Role = Literal["market-data", "trader", "risk", "accounting", "treasury"]

VENUES: Final[tuple[Venue, ...]] = ("spot", "futures")
ROLES: Final[tuple[Role, ...]] = ("market-data", "trader", "risk", "accounting", "treasury")

PERMISSION_IDS: Final[Mapping[str, frozenset[str]]] = {
    "spot": frozenset(
        {
            "query-funds",
            "deposit-funds",
            "withdraw-funds",
            "query-open-orders",
            "query-closed-orders",
            "modify-orders",
            "cancel-orders",
            "query-ledger",
            "export-data",
            "websocket",
        }
    ),
    "futures": frozenset({"general-read", "general-full", "withdrawal"}),
}

# Rights that move funds off the exchange. Kraken blocks withdrawals from subaccounts,
# so only the treasury process of the master account may hold one, and only when the
# spec says so explicitly.
WITHDRAWAL_IDS: Final = frozenset({"withdraw-funds", "withdrawal"})

ROLE_ALLOWANCES: Final[Mapping[str, Mapping[str, frozenset[str]]]] = {
    "market-data": {
        "spot": frozenset({"websocket", "query-open-orders"}),
        "futures": frozenset({"general-read"}),
    },
    "trader": {
        "spot": frozenset(
            {"query-funds", "query-open-orders", "modify-orders", "cancel-orders", "websocket"}
        ),
        "futures": frozenset({"general-full"}),
    },
    "risk": {
        "spot": frozenset(
            {
                "query-funds",
                "query-open-orders",
                "query-closed-orders",
                "query-ledger",
                "cancel-orders",
                "websocket",
            }
        ),
        "futures": frozenset({"general-full"}),
    },
    "accounting": {
        "spot": frozenset({"query-funds", "query-closed-orders", "query-ledger", "export-data"}),
        "futures": frozenset({"general-read"}),
    },
    "treasury": {
        "spot": frozenset({"query-funds", "deposit-funds", "withdraw-funds"}),
        "futures": frozenset({"general-read", "withdrawal"}),
    },
}


def parse_permissions(value: str) -> list[str]:
    """Split a comma-separated permission list (as stored in Vault custom metadata)."""
    return [part.strip() for part in value.split(",") if part.strip()]


def format_permissions(ids: Iterable[str]) -> str:
    """The canonical comma-separated form: sorted, no spaces, no duplicates."""
    return ",".join(sorted(set(ids)))


def unknown_ids(venue: str, ids: Iterable[str]) -> list[str]:
    """Ids that are not permissions of the venue (typos, or spot ids on a futures key)."""
    vocabulary = PERMISSION_IDS.get(venue, frozenset())
    return sorted({i for i in ids if i not in vocabulary})


def venue_of(ids: Iterable[str]) -> str | None:
    """The one venue whose vocabulary holds every id, if exactly one does: a key of the wrong
    venue (futures ids on a spot process) is not a typo and needs another key, not an edit."""
    wanted = set(ids)
    venues = [v for v, vocabulary in PERMISSION_IDS.items() if wanted and wanted <= vocabulary]
    return venues[0] if len(venues) == 1 else None


def unknown_advice(venue: str, unknown: Iterable[str]) -> str:
    """What to do about ids that are not permissions of ``venue``: the real cause, then the fix."""
    other = venue_of(unknown)
    if other is not None and other != venue:
        return (
            f"they are {other} permissions: this is a {other} key on a {venue} process. Create a {venue} "
            f"key for it on Kraken and register it (keyfence keys register --rotate), or move the "
            f"process to a {other} subaccount"
        )
    return (
        f"{venue} permissions are {', '.join(sorted(PERMISSION_IDS.get(venue, frozenset())))}; "
        "correct the misspelt ids (unknown rights cannot be bounded)"
    )


def allowance(
    role: str,
    venue: str,
    *,
    master: bool,
    allow_withdrawals: bool,
    allowances: Mapping[str, Mapping[str, Iterable[str]]] = ROLE_ALLOWANCES,
) -> frozenset[str]:
    """What a key of this role may carry, after the withdrawal rule is applied."""
    allowed = frozenset(allowances.get(role, {}).get(venue, ()))
    if not (role == "treasury" and master and allow_withdrawals):
        allowed = allowed - WITHDRAWAL_IDS
    return allowed


def excess(
    role: str,
    venue: str,
    ids: Iterable[str],
    *,
    master: bool,
    allow_withdrawals: bool,
    allowances: Mapping[str, Mapping[str, Iterable[str]]] = ROLE_ALLOWANCES,
) -> list[str]:
    """Permissions beyond what the role may hold (empty when the key is least-privilege)."""
    allowed = allowance(
        role, venue, master=master, allow_withdrawals=allow_withdrawals, allowances=allowances
    )
    return sorted(set(ids) - allowed)


def explain_excess(
    role: str,
    venue: str,
    extra: Iterable[str],
    *,
    master: bool,
    allowances: Mapping[str, Mapping[str, Iterable[str]]] = ROLE_ALLOWANCES,
) -> str:
    """A sentence an on-call trader can act on: which rights to remove and why.

    ``allowances`` must be the table the excess was computed against (the policy
    pack's may be overridden by config), or the sentence would quote the wrong limits.
    """
    extra = sorted(extra)
    withdrawal = [i for i in extra if i in WITHDRAWAL_IDS]
    reasons = []
    if withdrawal:
        if not master:
            reasons.append(
                f"{', '.join(withdrawal)}: Kraken blocks withdrawals from subaccounts; "
                "withdraw from the master's treasury process"
            )
        else:
            reasons.append(
                f"{', '.join(withdrawal)}: only the master's treasury process with allow_withdrawals: true"
            )
    others = [i for i in extra if i not in WITHDRAWAL_IDS]
    if others:
        allowed = ", ".join(sorted(allowances.get(role, {}).get(venue, ()))) or "nothing"
        reasons.append(f"{', '.join(others)}: role {role} on {venue} may hold only {allowed}")
    return "; ".join(reasons)
