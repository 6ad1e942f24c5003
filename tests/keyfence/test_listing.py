"""Folder listings of detailed metadata (OpenBao) and the ledger's mirror, against a real OpenBao.

Listings are an optimisation only: every test compares against the per-key reads a token
without the listing capability falls back to, and the mirror of a ledger record must never be
believed once the record's data changed behind keyfence's back.
"""

from __future__ import annotations

import base64
import secrets
import uuid

import pytest

from keyfence.check.facts import vault_facts
from keyfence.errors import KeyVerificationError
from keyfence.keys import (
    METADATA_FINGERPRINT,
    METADATA_FINGERPRINT_VERSION,
    METADATA_SECRET_FINGERPRINT,
    METADATA_SUBACCOUNT,
    METADATA_VENUE,
    ResolvedKey,
    resolve_keys,
)
from keyfence.keystore import plan_registration, register_key
from keyfence.keystore.claims import all_records, claim_key
from keyfence.material import KeyMaterial
from keyfence.spec import FleetSpec, load_spec_text
from keyfence.vault import KV2Client, Ledger, LedgerRecord, VaultSettings, connect
from keyfence.vault.errors import VaultRequestError
from keyfence.vault.ledger import MIRROR_VERSION
from tests.faults.proxy import FaultProxy, forward_all
from tests.openbao import OpenBao

pytestmark = pytest.mark.vault

STACK = "organization/desk/prod"


def new_material() -> KeyMaterial:
    return KeyMaterial(
        api_key=f"LISTKEY{secrets.token_hex(16)}",
        api_secret=base64.b64encode(secrets.token_bytes(47)).decode(),
    )


def fallback_token(openbao: OpenBao, mount: str) -> str:
    """Everything the root token may do for these reads, except listing detailed metadata."""
    return openbao.token(
        f'path "{mount}/data/*" {{ capabilities = ["read"] }}\n'
        f'path "{mount}/metadata/*" {{ capabilities = ["read", "list"] }}\n'
        f'path "{mount}/detailed-metadata/*" {{ capabilities = ["deny"] }}'
    )


def spec_for(mount: str, *processes: str) -> FleetSpec:
    procs = "".join(
        f"      - {{name: {p}, role: trader, image: 'ghcr.io/acme/bot:1.0.0'}}\n" for p in processes
    )
    return load_spec_text(
        f"version: 1\nvault: {{mount: {mount}, prefix: kraken}}\n"
        f"subaccounts:\n  - name: momentum\n    venue: futures\n    processes:\n{procs}",
        "fleet.yaml",
    )


def register(client: KV2Client, mount: str, name: str, material: KeyMaterial) -> None:
    plan = plan_registration(name, venue="futures", permissions="general-full", mount=mount, prefix="kraken")
    register_key(client, plan, material)


def outcome(spec: FleetSpec, client: KV2Client, mode: str) -> list[ResolvedKey] | list[str]:
    try:
        return resolve_keys(spec, client, mode, STACK)  # type: ignore[arg-type]
    except KeyVerificationError as exc:
        return list(exc.problems)


def test_listing_and_per_key_reads_give_the_same_problems(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    names = ("good1", "good2", "missing", "deleted", "destroyed", "copy", "bare")
    spec = spec_for(mount, *names)
    good = new_material()
    register(root, mount, "momentum/good1", good)
    register(root, mount, "momentum/good2", new_material())
    for name in ("deleted", "destroyed"):
        register(root, mount, f"momentum/{name}", new_material())
    openbao.client.secrets.kv.v2.delete_latest_version_of_secret(
        path="kraken/momentum/deleted", mount_point=mount
    )
    openbao.client.secrets.kv.v2.destroy_secret_versions(
        path="kraken/momentum/destroyed", versions=[1], mount_point=mount
    )
    # A copy of good1's material written by hand (no fingerprint), and an unfingerprinted key of its own.
    openbao.put_key("kraken/momentum/copy", good.api_key, good.api_secret, mount=mount)
    bare = new_material()
    openbao.put_key("kraken/momentum/bare", bare.api_key, bare.api_secret, mount=mount)
    with connect(VaultSettings(addr=openbao.addr, token=fallback_token(openbao, mount), timeout=10.0)) as fb:
        assert fb.list_detailed_metadata(mount, "kraken/momentum") is None  # the fallback is really taken
        for mode in ("check", "deploy"):
            listed, read = outcome(spec, root, mode), outcome(spec, fb, mode)
            assert listed == read, mode
            text = " ".join(map(str, listed))
            for name in ("missing", "deleted", "destroyed"):
                assert f"kraken/momentum/{name}:" in text, (mode, name)
    assert root.list_detailed_metadata(mount, "kraken/momentum") is not None


def test_listing_and_per_key_reads_give_the_same_keys_and_facts(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    spec = spec_for(mount, "a", "b", "bare")
    for name in ("momentum/a", "momentum/b", "other/x"):
        register(root, mount, name, new_material())
    deep = new_material()  # a key one folder deeper, fingerprinted by hand
    custom = {METADATA_FINGERPRINT: deep.fingerprint, METADATA_FINGERPRINT_VERSION: "1"}
    openbao.put_key("kraken/other/deep/y", deep.api_key, deep.api_secret, custom_metadata=custom, mount=mount)
    bare, stray = new_material(), new_material()
    openbao.put_key("kraken/momentum/bare", bare.api_key, bare.api_secret, mount=mount)
    openbao.put_key("kraken/other/stray", stray.api_key, stray.api_secret, mount=mount)
    claim_key(Ledger(root, mount), bare.fingerprint, "kraken/momentum/bare", STACK, "momentum/bare")
    with connect(VaultSettings(addr=openbao.addr, token=fallback_token(openbao, mount), timeout=10.0)) as fb:
        for mode in ("check", "deploy"):
            keys, fallback = outcome(spec, root, mode), outcome(spec, fb, mode)
            assert keys == fallback and all(isinstance(k, ResolvedKey) for k in keys), mode
        checked = resolve_keys(spec, root, "check", STACK)
        facts, facts_fb = vault_facts(root, spec, checked), vault_facts(fb, spec, checked)
        assert facts.config() == facts_fb.config() and facts.notes == facts_fb.notes
        assert {e["path"] for e in facts.entries} >= {
            "kraken/other/x",
            "kraken/other/deep/y",
            "kraken/other/stray",
        }
        ledger, ledger_fb = Ledger(root, mount), Ledger(fb, mount)
        assert all_records(root, ledger) == all_records(fb, ledger_fb)
        assert ledger.snapshot().mirrored and ledger_fb.snapshot().listed is None


def test_fifty_keys_resolve_with_a_handful_of_requests(openbao: OpenBao, root: KV2Client, mount: str) -> None:
    names = [f"p{i:02d}" for i in range(50)]
    spec = spec_for(mount, *names)
    ledger = Ledger(root, mount)
    for name in names:
        material = new_material()
        path = f"kraken/momentum/{name}"
        version = openbao.put_key(path, material.api_key, material.api_secret, mount=mount)
        openbao.set_custom_metadata(
            path,
            {
                METADATA_FINGERPRINT: material.fingerprint,
                METADATA_SECRET_FINGERPRINT: material.secret_fingerprint,
                METADATA_FINGERPRINT_VERSION: str(version),
                METADATA_SUBACCOUNT: "momentum",
                METADATA_VENUE: "futures",
            },
            mount=mount,
        )
        ledger.create(
            LedgerRecord(material.fingerprint, path, STACK, f"momentum/{name}", "2026-01-01T00:00:00Z")
        )

    def requests_for(token: str) -> tuple[int, list[ResolvedKey]]:
        with FaultProxy(openbao.addr, forward_all) as proxy:
            with connect(VaultSettings(addr=proxy.addr, token=token, timeout=10.0)) as client:
                keys = resolve_keys(spec, client, "check", STACK)
            asked = [path for _, path, _ in proxy.log if path.startswith(f"/v1/{mount}/")]
        return len(asked), keys

    listed, keys = requests_for(openbao.root_token)
    per_key, fallback_keys = requests_for(fallback_token(openbao, mount))
    assert keys == fallback_keys and all(k.ledger_record is not None for k in keys)
    assert listed <= 4, listed  # one listing of the folder, one (or two pages) of the ledger
    assert per_key >= 100, per_key  # a metadata read and a record read per key


# --------------------------------------------------------------------------- the ledger's mirror


def _record(ledger: Ledger, *, stack: str = STACK) -> LedgerRecord:
    material = new_material()
    return ledger.create(
        LedgerRecord(material.fingerprint, f"kraken/momentum/{uuid.uuid4().hex[:8]}", stack, "m/p")
    )


def _untrusted_and_same_as_data(ledger: Ledger, fingerprint: str) -> LedgerRecord | None:
    snapshot = ledger.snapshot()
    assert fingerprint not in snapshot.mirrored
    read = snapshot.read(fingerprint)
    assert read == ledger.read(fingerprint)
    return read


def test_a_fresh_mirror_is_trusted_and_equals_the_data(root: KV2Client, mount: str) -> None:
    ledger = Ledger(root, mount)
    record = _record(ledger)
    snapshot = ledger.snapshot()
    assert snapshot.mirrored[record.fingerprint] == ledger.read(record.fingerprint) == record
    absent = new_material().fingerprint
    assert snapshot.read(absent) is None and ledger.read(absent) is None


def test_the_mirror_is_not_trusted_after_a_rollback(openbao: OpenBao, root: KV2Client, mount: str) -> None:
    ledger = Ledger(root, mount)
    first = _record(ledger)
    ledger.update(first, LedgerRecord(first.fingerprint, first.path, "organization/desk/staging", "m/q", "t"))
    path = ledger.path_of(first.fingerprint)
    old = openbao.client.secrets.kv.v2.read_secret_version(
        path=path, version=1, mount_point=mount, raise_on_deleted_version=True
    )
    openbao.put_data(path, old["data"]["data"], mount=mount)  # what 'bao kv rollback -version=1' writes
    read = _untrusted_and_same_as_data(ledger, first.fingerprint)
    assert read is not None and read.stack == STACK and read.version == 3


def test_the_mirror_is_not_trusted_after_a_hand_written_put(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    ledger = Ledger(root, mount)
    record = _record(ledger)
    openbao.put_data(ledger.path_of(record.fingerprint), {**record.fields(), "stack": "org/x/y"}, mount=mount)
    read = _untrusted_and_same_as_data(ledger, record.fingerprint)
    assert read is not None and read.stack == "org/x/y"


@pytest.mark.parametrize("how", ["delete", "destroy"])
def test_the_mirror_is_not_trusted_once_the_current_version_is_gone(
    openbao: OpenBao, root: KV2Client, mount: str, how: str
) -> None:
    ledger = Ledger(root, mount)
    record = _record(ledger)
    kv = openbao.client.secrets.kv.v2
    path = ledger.path_of(record.fingerprint)
    if how == "delete":
        kv.delete_latest_version_of_secret(path=path, mount_point=mount)
    else:
        kv.destroy_secret_versions(path=path, versions=[1], mount_point=mount)
    snapshot = ledger.snapshot()
    assert record.fingerprint not in snapshot.mirrored
    # Not "no record": the claim the gone version held can no longer be told (test_listing_holes.py).
    for read in (snapshot.read, ledger.read):
        with pytest.raises(VaultRequestError, match=f"current version 1 is {how}"):
            read(record.fingerprint)


def test_a_mirror_naming_an_older_version_or_incomplete_is_not_trusted(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    ledger = Ledger(root, mount)
    forged, partial = _record(ledger), _record(ledger)
    path = ledger.path_of(forged.fingerprint)
    first = dict(root.read_metadata(mount, path).custom_metadata)
    openbao.put_data(path, {**forged.fields(), "stack": "org/x/y"}, mount=mount)
    # A forged mirror claiming the old holder, naming version 1 while version 2 is current.
    openbao.set_custom_metadata(path, first, mount=mount)
    read = _untrusted_and_same_as_data(ledger, forged.fingerprint)
    assert read is not None and read.stack == "org/x/y"
    mirror = dict(root.read_metadata(mount, ledger.path_of(partial.fingerprint)).custom_metadata)
    incomplete = {k: v for k, v in mirror.items() if k != "process"}
    openbao.set_custom_metadata(ledger.path_of(partial.fingerprint), incomplete, mount=mount)
    assert _untrusted_and_same_as_data(ledger, partial.fingerprint) == partial
    unmarked = {**mirror, "stack": STACK}  # a value without the '=' mark
    openbao.set_custom_metadata(ledger.path_of(partial.fingerprint), unmarked, mount=mount)
    assert _untrusted_and_same_as_data(ledger, partial.fingerprint) == partial


def test_records_written_before_the_mirror_are_read_from_data(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    ledger = Ledger(root, mount)
    fingerprint = new_material().fingerprint
    fields = {"path": "kraken/momentum/old", "stack": STACK, "process": "momentum/old", "claimed_at": "t"}
    openbao.put_data(ledger.path_of(fingerprint), fields, mount=mount)
    read = _untrusted_and_same_as_data(ledger, fingerprint)
    assert read is not None and read.stack == STACK and read.version == 1


def test_a_failed_mirror_write_leaves_the_claim_standing(
    openbao: OpenBao, root: KV2Client, mount: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A token that may write records but not their metadata: the claim stands, a warning says why."""
    token = openbao.token(
        f'path "{mount}/data/keyfence/ledger/*" {{ capabilities = ["create", "read", "update"] }}'
    )
    with connect(VaultSettings(addr=openbao.addr, token=token, timeout=10.0)) as client:
        ledger = Ledger(client, mount)
        with caplog.at_level("WARNING", logger="keyfence.vault"):
            record = _record(ledger)
        assert ledger.read(record.fingerprint) == record
        assert "could not mirror version 1" in caplog.text
    assert MIRROR_VERSION not in root.read_metadata(mount, ledger.path_of(record.fingerprint)).custom_metadata
    assert record.fingerprint not in Ledger(root, mount).snapshot().mirrored
