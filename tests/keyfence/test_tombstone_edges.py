"""Hand-made and half-made tombstones in the key ledger, on a real OpenBao.

Only keyfence's own tombstone (exactly ``removed=true``, nothing else) reads as "no record".
Data that says removed and also names a key or a holder (``bao kv patch removed=true`` over a
claim keeps the claim's fields), or a ``removed`` field with another value, is ambiguous: what
it meant cannot be told, so it is an unusable record whose message names the removal, never
"no record" that the next claim writes over.
"""

from __future__ import annotations

import pytest

from keyfence.errors import KeyfenceError
from keyfence.keystore.claims import all_records, claim_key
from keyfence.vault import KV2Client, Ledger, LedgerRecord
from keyfence.vault.errors import VaultRequestError
from tests.keyfence.test_listing import new_material

pytestmark = pytest.mark.vault

STACK = "organization/desk/prod"
OTHER = "organization/desk/staging"
PATH = "kraken/momentum/alpha"


def _put(root: KV2Client, ledger: Ledger, fingerprint: str, data: dict[str, str], cas: int) -> None:
    root.write_record(ledger.mount, ledger.path_of(fingerprint), data, cas)


def _refused_as_unusable(ledger: Ledger, fingerprint: str, version: int) -> None:
    with pytest.raises(VaultRequestError) as caught:
        ledger.read(fingerprint)
    told = f"bao kv put -mount={ledger.mount} -cas={version} {ledger.path_of(fingerprint)} removed=true"
    assert told in str(caught.value)
    with pytest.raises(KeyfenceError):
        claim_key(ledger, fingerprint, PATH, STACK, "momentum/alpha")


@pytest.mark.parametrize("value", ["True", "1", "yes", "", "false", "true "])
def test_removed_with_another_value_is_no_tombstone(root: KV2Client, mount: str, value: str) -> None:
    ledger = Ledger(root, mount)
    fingerprint = new_material().fingerprint
    _put(root, ledger, fingerprint, {"removed": value}, 0)
    _refused_as_unusable(ledger, fingerprint, 1)


def test_a_patched_claim_marked_removed_is_not_read_as_no_record(root: KV2Client, mount: str) -> None:
    """'bao kv patch removed=true' over another stack's claim: the claim's fields stay, so whether
    that stack still signs with the key cannot be told; the next claim must not write over it."""
    ledger = Ledger(root, mount)
    fingerprint = new_material().fingerprint
    held = claim_key(ledger, fingerprint, PATH, OTHER, "momentum/alpha")
    _put(root, ledger, fingerprint, {**held.fields(), "removed": "true"}, held.version)
    _refused_as_unusable(ledger, fingerprint, held.version + 1)
    assert ledger.snapshot().read_many([fingerprint])[0] is not None
    with pytest.raises(KeyfenceError):
        all_records(root, ledger)


@pytest.mark.parametrize("extra", [{"path": PATH}, {"stack": OTHER}, {"note": "x"}])
def test_a_tombstone_with_any_other_field_is_unusable(
    root: KV2Client, mount: str, extra: dict[str, str]
) -> None:
    ledger = Ledger(root, mount)
    fingerprint = new_material().fingerprint
    _put(root, ledger, fingerprint, {"removed": "true", **extra}, 0)
    _refused_as_unusable(ledger, fingerprint, 1)


def test_a_record_with_a_removed_field_and_a_path_is_unusable(root: KV2Client, mount: str) -> None:
    """A removal someone meant but spelled differently must not read as an unclaimed record either."""
    ledger = Ledger(root, mount)
    fingerprint = new_material().fingerprint
    _put(root, ledger, fingerprint, {**LedgerRecord(fingerprint, PATH).fields(), "removed": "yes"}, 0)
    _refused_as_unusable(ledger, fingerprint, 1)

