"""Vault states in which a detailed-metadata listing or the ledger's mirror once gave a wrong answer.

Each test builds the state on a real OpenBao and asks what a reader concludes: a key another
stack holds must never read as free, and a listing must never make a key disappear. OpenBao
filters listings by policy (``list_scan_response_keys_filter_path``) after a page is cut, so a
page can come back short without being the last; ``LIST_PAGE`` is lowered here so that a few
keys stand for a thousand.
"""

from __future__ import annotations

import pytest

from keyfence.check.facts import vault_facts
from keyfence.errors import KeyVerificationError, VaultError
from keyfence.keys import ResolvedKey, resolve_keys
from keyfence.keystore import plan_registration, register_key
from keyfence.keystore.claims import all_records, claim_key
from keyfence.material import KeyMaterial
from keyfence.vault import KV2Client, Ledger, LedgerAccessError, LedgerRecord, VaultSettings, connect
from keyfence.vault.errors import VaultRequestError
from tests.keyfence.test_listing import new_material, spec_for
from tests.openbao import OpenBao

pytestmark = pytest.mark.vault

STACK = "organization/desk/prod"
OTHER = "organization/desk/staging"
PAGE = 4
"""The page size the tests list with: eight keys in a folder make two pages."""


def register_many(client: KV2Client, mount: str, count: int) -> dict[str, KeyMaterial]:
    """``count`` keys registered under kraken/momentum/, by process name (each gets its ledger record)."""
    keys = {f"p{i}": new_material() for i in range(count)}
    for name, material in keys.items():
        plan = plan_registration(
            f"momentum/{name}", venue="futures", permissions="general-full", mount=mount, prefix="kraken"
        )
        register_key(client, plan, material)
    return keys


def filtered(mount: str, folder: str, by: str) -> str:
    """A policy rule that lists ``folder``'s detailed metadata showing only keys readable at ``by``/."""
    template = f'{{{{ .path | replace \\"{mount}/detailed-metadata/\\" \\"{mount}/{by}/\\" }}}}{{{{ .key }}}}'
    return (
        f'path "{mount}/detailed-metadata/{folder}/*" {{\n  capabilities = ["list"]\n'
        f'  list_scan_response_keys_filter_path = "{template}"\n}}\n'
    )


def ci_rules(mount: str) -> str:
    """What docs/vault-policies/ci-metadata.hcl grants, for this test's mount."""
    return (
        f'path "{mount}/metadata/kraken/*" {{ capabilities = ["read", "list"] }}\n'
        f'path "{mount}/data/keyfence/ledger/*" {{ capabilities = ["read"] }}\n'
    )


@pytest.fixture
def small_pages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("keyfence.vault.kv.LIST_PAGE", PAGE)


def by_fingerprint(keys: dict[str, KeyMaterial]) -> list[str]:
    """Process names in the order of their keys' fingerprints: the order the ledger folder lists."""
    return sorted(keys, key=lambda name: keys[name].fingerprint)


@pytest.mark.usefixtures("small_pages")
def test_a_claim_on_a_page_after_a_filtered_one_is_still_seen(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    """The token may read the claimed record; the listing only leaves it out because a filtered
    record shortened the first page. The claim must still be found."""
    keys = register_many(root, mount, 2 * PAGE)
    order = by_fingerprint(keys)
    hidden, target, mine = order[0], order[-1], order[-2]
    ledger = Ledger(root, mount)
    claim_key(ledger, keys[target].fingerprint, f"kraken/momentum/{target}", OTHER, f"momentum/{target}")
    token = openbao.token(
        ci_rules(mount)
        + filtered(mount, "keyfence/ledger", "data")
        + f'path "{mount}/data/{ledger.path_of(keys[hidden].fingerprint)}" {{ capabilities = ["deny"] }}\n'
    )
    spec = spec_for(mount, target, mine)
    with connect(VaultSettings(addr=openbao.addr, token=token, timeout=10.0)) as ci:
        listing = Ledger(ci, mount).snapshot().listed
        assert listing is not None and keys[target].fingerprint not in listing  # the state under test
        resolved = resolve_keys(spec, ci, "check", STACK)
        assert all(isinstance(k, ResolvedKey) for k in resolved)
        held = {k.entry.ref: k for k in resolved}[f"momentum/{target}"]
        assert held.ledger_record is not None and held.ledger_record.stack == OTHER
        assert held.ledger_conflict is not None and OTHER in held.ledger_conflict


@pytest.mark.usefixtures("small_pages")
def test_a_record_the_listing_hides_is_read_not_taken_as_absent(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    """A record the token may not read, left out of the listing by the filter, is refused as a
    per-record read would refuse it: its claim cannot be proved either way."""
    keys = register_many(root, mount, 3)
    target, mine = sorted(keys)[:2]
    ledger = Ledger(root, mount)
    claim_key(ledger, keys[target].fingerprint, f"kraken/momentum/{target}", OTHER, f"momentum/{target}")
    record = ledger.path_of(keys[target].fingerprint)
    token = openbao.token(
        ci_rules(mount)
        + filtered(mount, "keyfence/ledger", "data")
        + f'path "{mount}/data/{record}" {{ capabilities = ["deny"] }}\n'
    )
    with (
        connect(VaultSettings(addr=openbao.addr, token=token, timeout=10.0)) as ci,
        pytest.raises(LedgerAccessError, match="refused to let the token read the key ledger"),
    ):
        resolve_keys(spec_for(mount, target, mine), ci, "check", STACK)


@pytest.mark.usefixtures("small_pages")
def test_every_key_under_the_prefix_is_known_when_the_listing_is_filtered(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    """The check's known keys (copies of which the pack looks for) are every key under the prefix,
    whatever a filtered listing shows: the same as without the listing."""
    keys = register_many(root, mount, 2 * PAGE)
    listing = openbao.token(ci_rules(mount) + filtered(mount, "kraken", "metadata"))
    plain = openbao.token(ci_rules(mount))
    spec = spec_for(mount, *sorted(keys)[1:3])
    facts = {}
    for name, token in (("listing", listing), ("plain", plain)):
        with connect(VaultSettings(addr=openbao.addr, token=token, timeout=10.0)) as client:
            checked = resolve_keys(spec, client, "check", STACK)
            facts[name] = vault_facts(client, spec, checked)
    paths = {e["path"] for e in facts["listing"].entries}
    assert paths == {f"kraken/momentum/{n}" for n in sorted(keys)}
    assert facts["listing"].config() == facts["plain"].config()


@pytest.mark.usefixtures("small_pages")
def test_a_key_under_the_prefix_the_check_may_not_read_is_an_error(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    """Its fingerprints unknown, a copy of it pasted into the stack would pass: exit 2, naming it
    (it used to be a note beside a pass)."""
    keys = register_many(root, mount, 2 * PAGE)
    hidden = sorted(keys)[0]
    deny = f'path "{mount}/metadata/kraken/momentum/{hidden}" {{ capabilities = ["deny"] }}\n'
    spec = spec_for(mount, *sorted(keys)[1:3])
    for rules in (ci_rules(mount) + filtered(mount, "kraken", "metadata") + deny, ci_rules(mount) + deny):
        token = openbao.token(rules)
        with connect(VaultSettings(addr=openbao.addr, token=token, timeout=10.0)) as client:
            checked = resolve_keys(spec, client, "check", STACK)
            with pytest.raises(VaultError, match="cannot read the metadata of every key under") as caught:
                vault_facts(client, spec, checked)
        [problem] = caught.value.problems
        assert problem.startswith(f"{mount}/kraken/momentum/{hidden}: ")


@pytest.mark.usefixtures("small_pages")
def test_every_record_is_found_when_the_ledger_listing_is_filtered(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    """``keys list``/``release`` see every record, not those of the listing's first page."""
    keys = register_many(root, mount, 2 * PAGE)
    ledger = Ledger(root, mount)
    hidden = ledger.path_of(keys[by_fingerprint(keys)[0]].fingerprint)
    token = openbao.token(
        f'path "{mount}/metadata/keyfence/ledger/*" {{ capabilities = ["read", "list"] }}\n'
        f'path "{mount}/data/keyfence/ledger/*" {{ capabilities = ["read"] }}\n'
        + filtered(mount, "keyfence/ledger", "metadata")
        + f'path "{mount}/metadata/{hidden}" {{ capabilities = ["deny"] }}\n'
    )
    with connect(VaultSettings(addr=openbao.addr, token=token, timeout=10.0)) as admin:
        found = {r.fingerprint for r in all_records(admin, Ledger(admin, mount))}
    assert found == {m.fingerprint for m in keys.values()}


@pytest.mark.parametrize("how", ["delete", "destroy"])
def test_a_claim_whose_record_version_is_gone_is_not_free(
    openbao: OpenBao, root: KV2Client, mount: str, how: str
) -> None:
    """A record whose current version was deleted (by hand, or by delete_version_after) or destroyed
    held a claim nobody can read any more: the check fails closed instead of calling the key free."""
    keys = register_many(root, mount, 2)
    target, mine = sorted(keys)
    ledger = Ledger(root, mount)
    claimed = claim_key(
        ledger, keys[target].fingerprint, f"kraken/momentum/{target}", OTHER, f"momentum/{target}"
    )
    path = ledger.path_of(claimed.fingerprint)
    kv = openbao.client.secrets.kv.v2
    if how == "delete":
        kv.delete_latest_version_of_secret(path=path, mount_point=mount)
    else:
        kv.destroy_secret_versions(path=path, versions=[claimed.version], mount_point=mount)
    for reader in (ledger.read, ledger.snapshot().read, Ledger(root, mount).snapshot(listing=False).read):
        with pytest.raises(VaultRequestError, match=f"current version {claimed.version} is {how}"):
            reader(claimed.fingerprint)
    with pytest.raises(KeyVerificationError, match="ledger record exists but its current version"):
        resolve_keys(spec_for(mount, target, mine), root, "check", STACK)
    with pytest.raises(VaultRequestError, match="cannot be told"):
        claim_key(ledger, claimed.fingerprint, f"kraken/momentum/{target}", STACK, f"momentum/{target}")


def test_a_mirror_of_a_version_due_for_deletion_is_not_believed(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    """Whether a version with a deletion time is gone yet is the server's clock's call: such a
    record is read from data, so a clock behind the server's cannot revive a deleted claim."""
    ledger = Ledger(root, mount)
    fingerprint = next(iter(register_many(root, mount, 1).values())).fingerprint
    assert fingerprint in ledger.snapshot().mirrored
    openbao.client.secrets.kv.v2.update_metadata(
        path=ledger.path_of(fingerprint), delete_version_after="1h", mount_point=mount
    )
    record = ledger.read(fingerprint)
    assert record is not None
    rewritten = ledger.update(record, record)  # a new version, due for deletion in an hour
    snapshot = ledger.snapshot()
    assert fingerprint not in snapshot.mirrored
    assert snapshot.read(fingerprint) == ledger.read(fingerprint) == rewritten


def test_a_mirror_landing_late_on_a_recreated_record_is_not_believed(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    """A mirror write held up in flight (a slow link, a retry) while the record is removed by hand
    ('bao kv metadata delete') and created again lands naming version 1, the new record's version
    too: it must not pass for it."""
    ledger = Ledger(root, mount)
    fingerprint = new_material().fingerprint
    path = ledger.path_of(fingerprint)
    first = ledger.create(LedgerRecord(fingerprint, "kraken/momentum/a", OTHER, "momentum/a"))
    late = dict(root.read_metadata(mount, path).custom_metadata)  # what the held-up request carries
    openbao.client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=mount)
    second = ledger.create(LedgerRecord(fingerprint, "kraken/momentum/a", STACK, "momentum/a"))
    assert second.version == first.version == 1
    openbao.set_custom_metadata(path, late, mount=mount)
    snapshot = ledger.snapshot()
    assert snapshot.read(fingerprint) == ledger.read(fingerprint) == second
