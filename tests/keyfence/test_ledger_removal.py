"""Removing a ledger record while another writer claims it, interleaved step by step on a real OpenBao.

KV v2 has no check-and-set delete: a remover that reads an unclaimed record and then deletes it
would erase a claim written between the two. Removal is a tombstone written with check-and-set
over the version read, so the claim wins and the removal is refused.
"""

from __future__ import annotations

import pytest

from keyfence.keystore.claims import all_records, claim_key, retire_if_moved
from keyfence.vault import KV2Client, Ledger, LedgerRecord
from keyfence.vault.ledger import LedgerRaceLostError
from tests.keyfence.test_listing import new_material

pytestmark = pytest.mark.vault

OTHER = "organization/desk/staging"
STACK = "organization/desk/prod"
GONE = "kraken/momentum/gone"
"""A path that holds no key: the record naming it is stale, and removable while unclaimed."""


class ClaimedBetween(Ledger):
    """A ledger whose first read is followed, before the caller acts on it, by ``OTHER``'s claim."""

    def read(self, fingerprint: str) -> LedgerRecord | None:
        found = super().read(fingerprint)
        if not getattr(self, "claimed", False):
            self.claimed = True
            claim_key(Ledger(self.client, self.mount), fingerprint, GONE, OTHER, "momentum/gone")
        return found


def test_a_claim_made_between_the_read_and_the_removal_survives(root: KV2Client, mount: str) -> None:
    fingerprint = new_material().fingerprint
    Ledger(root, mount).create(LedgerRecord(fingerprint, GONE))
    assert not retire_if_moved(root, ClaimedBetween(root, mount), fingerprint, GONE)
    held = Ledger(root, mount).read(fingerprint)
    assert held is not None and held.stack == OTHER


def test_removing_a_record_read_before_a_claim_is_refused(root: KV2Client, mount: str) -> None:
    ledger = Ledger(root, mount)
    fingerprint = new_material().fingerprint
    stale = ledger.create(LedgerRecord(fingerprint, GONE))
    claim_key(ledger, fingerprint, GONE, OTHER, "momentum/gone")
    with pytest.raises(LedgerRaceLostError, match="nothing was removed"):
        ledger.remove(stale)
    held = ledger.read(fingerprint)
    assert held is not None and held.stack == OTHER


def test_a_removed_record_reads_as_none_and_can_be_claimed_again(root: KV2Client, mount: str) -> None:
    ledger = Ledger(root, mount)
    fingerprint = new_material().fingerprint
    first = ledger.create(LedgerRecord(fingerprint, GONE))
    ledger.remove(first)
    assert ledger.read(fingerprint) is None
    assert ledger.snapshot().read(fingerprint) is None
    assert fingerprint not in {r.fingerprint for r in all_records(root, ledger)}
    again = claim_key(ledger, fingerprint, GONE, STACK, "momentum/gone")
    assert again.version == first.version + 2 and ledger.read(fingerprint) == again
    # A stale remover, or a creator that read "no record" before the claim, loses to it.
    with pytest.raises(LedgerRaceLostError):
        ledger.remove(first)
    with pytest.raises(LedgerRaceLostError):
        ledger.create(LedgerRecord(fingerprint, GONE))
    assert ledger.read(fingerprint) == again
