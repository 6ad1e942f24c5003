"""OpenBao's detailed-metadata listing under faults: a refusal falls back, a dead Vault aborts.

A listing the server or the token refuses (403, 404, 405: HashiCorp Vault has no such
endpoint) is asked once and the keys are read one by one, with today's results. A Vault
that cannot serve at all (5xx past the budget, unreachable) aborts with the message the
per-key read would give, and no per-key read is tried against it.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import Fleet, Surface
from tests.faults.proxy import Fault, FaultProxy, forward_all, matching
from tests.openbao import OpenBao

pytestmark = pytest.mark.vault

LISTING = "/v1/secret/detailed-metadata/"


@pytest.mark.parametrize("status", [403, 404, 405])
def test_a_refused_listing_falls_back_at_once(
    surface: Surface, status: int, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    with FaultProxy(openbao.addr, matching(LISTING, Fault("status", status))) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        surface.passes(fleet.spec)
    listings = {path: n for path, n in proxy.counts.items() if path.startswith(LISTING)}
    # Not retried: the check lists each folder once, and the program it runs once more.
    assert listings and max(listings.values()) == (2 if surface.mode == "check" else 1), listings
    per_key = proxy.outcomes(f"/v1/secret/metadata/{fleet.prefix}/")
    assert per_key and set(per_key) == {"forwarded"}, "the keys were read one by one instead"


def test_a_failing_listing_aborts_as_the_per_key_read_would(
    surface: Surface, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    with FaultProxy(openbao.addr, matching(LISTING, Fault("status", 503))) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        surface.fails(
            fleet.spec,
            f"Vault at {proxy.addr} failed while trying to read the metadata of {fleet.ref('executor')}",
            "(3 attempts)",
            "check Vault's health and logs",
        )
    # keyfence check asks for the pack's facts while the program resolves its keys: two readers.
    readers = 2 if surface.mode == "check" else 1
    assert proxy.outcomes(LISTING) == ["status"] * 3 * readers, "the listing got the budget, no more"
    assert proxy.outcomes("/v1/secret/metadata/") == [], "no silent fallback to per-key reads"


def test_the_check_lists_each_folder_once(
    fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    """Resolving the fleet's keys and the facts of every key under the prefix share the listings."""
    with FaultProxy(openbao.addr, forward_all) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        Surface("cli").passes(fleet.spec)
    folder = f"{LISTING}{fleet.prefix}/momentum?"
    prefix = f"{LISTING}{fleet.prefix}?"
    counts = {path: n for path, n in proxy.counts.items() if path.startswith(LISTING)}
    # The check's own run lists each folder once; the program it runs resolves its keys again.
    assert [n for path, n in counts.items() if path.startswith(folder)] == [2], counts
    assert [n for path, n in counts.items() if path.startswith(prefix)] == [1], counts
