"""keyfence.keys.resolve_keys against a real OpenBao: every mode, every failure, no material leaked."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from keyfence.errors import KeyVerificationError, VaultError
from keyfence.keys import (
    METADATA_FINGERPRINT,
    METADATA_PERMISSIONS,
    METADATA_SUBACCOUNT,
    METADATA_VENUE,
    ResolvedKey,
    resolve_keys,
)
from keyfence.material import KeyMaterial
from keyfence.spec import FleetSpec, ProcessEntry, load_spec_text
from keyfence.vault import KV2Client, VaultSettings, VaultUnavailableError, connect
from tests.openbao import FlakyProxy, OpenBao, free_port

SOURCE = "fleet.yaml"


# --------------------------------------------------------------------------- helpers


def proc(name: str, role: str = "trader", **extra: Any) -> dict[str, Any]:
    return {"name": name, "role": role, "image": f"ghcr.io/acme/{name}:1.0.0", **extra}


def fleet(prefix: str, *subaccounts: dict[str, Any], mount: str = "secret") -> FleetSpec:
    data = {"version": 1, "vault": {"mount": mount, "prefix": prefix}, "subaccounts": list(subaccounts)}
    return load_spec_text(yaml.safe_dump(data, sort_keys=False), SOURCE)


def futures(name: str, *processes: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "venue": "futures", "processes": list(processes)}


LEDGER_READ = 'path "secret/data/keyfence/ledger/*" { capabilities = ["read"] }'
"""What every resolving token needs beside its keys: reading the key ledger."""


def canary(prefix: str, name: str) -> KeyMaterial:
    # The secret is valid base64, as the deploy pre-flight demands of every stored version.
    secret = base64.b64encode(f"CANARYSECRET-{prefix}-{name}".encode()).decode()
    return KeyMaterial(api_key=f"CANARYKEY-{prefix}-{name}", api_secret=secret)


def by_name(spec: FleetSpec) -> dict[str, ProcessEntry]:
    return {e.process.name: e for e in spec.entries()}


def register(openbao: OpenBao, entry: ProcessEntry, material: KeyMaterial, **meta: str | None) -> None:
    """Store the key with correct custom metadata; ``meta`` overrides fields (None removes one)."""
    custom = {
        METADATA_FINGERPRINT: material.fingerprint,
        METADATA_SUBACCOUNT: entry.subaccount.name,
        METADATA_VENUE: entry.subaccount.venue,
    }
    if entry.process.permissions:
        custom[METADATA_PERMISSIONS] = ",".join(entry.process.permissions)
    for name, value in meta.items():
        if value is None:
            custom.pop(name, None)
        else:
            custom[name] = value
    openbao.put_key(entry.key_path, material.api_key, material.api_secret, custom_metadata=custom)


def prefix_of(entry: ProcessEntry, mount: str = "secret") -> str:
    loc = entry.location
    return f"{loc.file}:{loc.line}:{loc.column} ({entry.ref}) {mount}/{entry.key_path}: "


def lines_for(error: KeyVerificationError, entry: ProcessEntry) -> list[str]:
    return [p[len(prefix_of(entry)) :] for p in error.problems if p.startswith(prefix_of(entry))]


def assert_no_canary(*texts: str) -> None:
    for text in texts:
        assert "CANARYKEY" not in text and "CANARYSECRET" not in text, text


@pytest.fixture
def root(openbao: OpenBao) -> Iterator[KV2Client]:
    with connect(VaultSettings(addr=openbao.addr, token=openbao.root_token, timeout=5)) as client:
        yield client


# --------------------------------------------------------------------------- offline / arguments


def example_fleet(prefix: str) -> FleetSpec:
    return fleet(
        prefix,
        {
            "name": "main",
            "master": True,
            "venue": "spot",
            "processes": [
                proc(
                    "treasury",
                    "treasury",
                    allow_withdrawals=True,
                    permissions=["query-funds", "deposit-funds", "withdraw-funds"],
                ),
                proc("books", "accounting"),
            ],
        },
        futures("momentum", proc("executor", permissions=["general-full"]), proc("feed", "market-data")),
    )


def test_offline_reads_nothing() -> None:
    spec = example_fleet("kraken")
    keys = resolve_keys(spec, None, "offline")
    assert [k.entry.ref for k in keys] == [e.ref for e in spec.entries()]
    for key in keys:
        assert (key.version, key.fingerprint, key.identity_source, key.material) == (
            None,
            None,
            "offline",
            None,
        )
        assert key.mount == "secret" and key.path == key.entry.key_path
    assert keys[0].permissions == ("deposit-funds", "query-funds", "withdraw-funds")
    assert keys[1].permissions is None


@pytest.mark.parametrize("mode", ["check", "deploy"])
def test_vault_modes_need_a_client(mode: Any) -> None:
    with pytest.raises(ValueError, match="pass a client"):
        resolve_keys(example_fleet("kraken"), None, mode)


# --------------------------------------------------------------------------- deploy: success


@pytest.mark.vault
def test_deploy_by_token_from_env(openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str) -> None:
    spec = example_fleet(vault_prefix)
    materials = {e.ref: canary(vault_prefix, e.process.name + e.subaccount.name) for e in spec.entries()}
    for entry in spec.entries():
        register(openbao, entry, materials[entry.ref])
    with connect(VaultSettings.from_env()) as client:
        keys = resolve_keys(spec, client, "deploy")
    assert [k.entry.ref for k in keys] == [e.ref for e in spec.entries()]
    for key in keys:
        assert key.material == materials[key.entry.ref]
        assert key.fingerprint == materials[key.entry.ref].fingerprint
        assert (key.identity_source, key.version) == ("material", 1)
        assert key.metadata_subaccount == key.entry.subaccount.name
        assert key.metadata_venue == key.entry.subaccount.venue
        assert_no_canary(repr(key))
    assert keys[0].permissions == ("deposit-funds", "query-funds", "withdraw-funds")


@pytest.mark.vault
def test_deploy_by_approle(openbao: OpenBao, vault_prefix: str) -> None:
    spec = example_fleet(vault_prefix)
    for entry in spec.entries():
        register(openbao, entry, canary(vault_prefix, entry.ref))
    role_id, secret_id = openbao.approle(
        f'path "secret/data/{vault_prefix}/*" {{ capabilities = ["read"] }}\n'
        f'path "secret/metadata/{vault_prefix}/*" {{ capabilities = ["read"] }}\n'
        + LEDGER_READ
    )
    settings = VaultSettings(addr=openbao.addr, auth="approle", role_id=role_id, secret_id=secret_id)
    with connect(settings) as client:
        keys = resolve_keys(spec, client, "deploy")
    assert [k.material for k in keys] == [canary(vault_prefix, e.ref) for e in spec.entries()]


@pytest.mark.vault
def test_deploy_reads_the_current_version(openbao: OpenBao, root: KV2Client, vault_prefix: str) -> None:
    spec = fleet(vault_prefix, futures("momentum", proc("executor")))
    entry = spec.entries()[0]
    register(openbao, entry, canary(vault_prefix, "old"))
    register(openbao, entry, canary(vault_prefix, "new"))
    (key,) = resolve_keys(spec, root, "deploy")
    assert (key.version, key.material) == (2, canary(vault_prefix, "new"))


@pytest.mark.vault
def test_permissions_fall_back_to_the_spec(openbao: OpenBao, root: KV2Client, vault_prefix: str) -> None:
    spec = fleet(vault_prefix, futures("momentum", proc("executor", permissions=["general-full"])))
    entry = spec.entries()[0]
    register(openbao, entry, canary(vault_prefix, "x"), permissions=None)
    (key,) = resolve_keys(spec, root, "deploy")
    assert key.permissions == ("general-full",)


# --------------------------------------------------------------------------- failures


def failure_fleet(prefix: str) -> FleetSpec:
    return fleet(
        prefix,
        futures(
            "momentum",
            proc("ok", permissions=["general-full"]),
            proc("missing"),
            proc("deleted"),
            proc("destroyed"),
            proc("nofield"),
            proc("wrongsub"),
            proc("wrongvenue"),
            proc("excess", "market-data"),
            proc("fpmismatch"),
            proc("malformed"),
            proc("dupa"),
            proc("dupb"),
        ),
        {
            "name": "arb",
            "venue": "spot",
            "institutional": True,
            "processes": [proc("permsdiffer", permissions=["cancel-orders", "modify-orders", "query-funds"])],
        },
    )


def store_failures(openbao: OpenBao, spec: FleetSpec, prefix: str) -> list[str]:
    """Store every failure case; returns every secret string stored."""
    e = by_name(spec)
    kv = openbao.client.secrets.kv.v2
    stored: list[KeyMaterial] = []

    def put(name: str, **meta: str | None) -> KeyMaterial:
        material = canary(prefix, name)
        stored.append(material)
        register(openbao, e[name], material, **meta)
        return material

    put("ok")
    put("deleted")
    kv.delete_latest_version_of_secret(e["deleted"].key_path)
    put("destroyed")
    kv.destroy_secret_versions(e["destroyed"].key_path, [1])
    nofield = canary(prefix, "nofield")
    stored.append(nofield)
    openbao.put_data(e["nofield"].key_path, {"api_key": nofield.api_key})
    openbao.set_custom_metadata(e["nofield"].key_path, {METADATA_FINGERPRINT: nofield.fingerprint})
    put("wrongsub", subaccount="basis")
    put("wrongvenue", venue="spot")
    put("excess", permissions="general-full")
    put("fpmismatch", fingerprint=hashlib.sha256(b"another key").hexdigest())
    put("malformed", fingerprint=canary(prefix, "pasted").api_key, permissions="general-full,bogus-perm")
    shared = put("dupa")
    stored.append(shared)
    register(openbao, e["dupb"], shared)
    put("permsdiffer", permissions="modify-orders,query-funds")
    return [s for m in stored for s in (m.api_key, m.api_secret)] + [canary(prefix, "pasted").api_key]


@pytest.mark.vault
def test_deploy_reports_every_failure_at_once(openbao: OpenBao, root: KV2Client, vault_prefix: str) -> None:
    spec = failure_fleet(vault_prefix)
    secrets = store_failures(openbao, spec, vault_prefix)
    with pytest.raises(KeyVerificationError) as info:
        resolve_keys(spec, root, "deploy")
    error = info.value
    e = by_name(spec)
    assert error.headline == "11 key(s) failed verification; nothing was declared"
    assert len(error.problems) == 12
    expected = {
        "missing": ["no key is stored here"],
        "deleted": ["the current version 1 is deleted", "vault kv undelete"],
        "destroyed": ["the current version 1 is destroyed"],
        "nofield": ["field 'api_secret' is missing"],
        "wrongsub": ["belongs to subaccount 'basis'", "runs it in 'momentum'"],
        "wrongvenue": ["is a spot key", "trades futures"],
        "excess": ["exceed what role market-data may hold", "general-full"],
        "fpmismatch": ["metadata fingerprint does not match the key stored; re-register it"],
        "malformed": ["is not 64 lowercase hex digits", "'bogus-perm'"],
        "permsdiffer": [
            "the spec lists permissions cancel-orders,modify-orders,query-funds",
            "modify-orders,query-funds",
        ],
        "dupb": ["holds the same API key", "momentum/dupa", f"secret/{e['dupa'].key_path}"],
    }
    for name, phrases in expected.items():
        text = " | ".join(lines_for(error, e[name]))
        for phrase in phrases:
            assert phrase in text, f"{name}: {phrase!r} not in {text!r}"
    assert lines_for(error, e["ok"]) == [] and lines_for(error, e["dupa"]) == []
    assert len(lines_for(error, e["malformed"])) == 2
    for problem in error.problems:
        assert problem.startswith(f"{SOURCE}:")
    message = str(error)
    for secret in secrets:
        assert secret not in message
    assert "CANARY" not in message


@pytest.mark.vault
def test_check_reports_only_what_it_can_see_as_fatal(
    openbao: OpenBao, root: KV2Client, vault_prefix: str
) -> None:
    spec = failure_fleet(vault_prefix)
    store_failures(openbao, spec, vault_prefix)
    with pytest.raises(KeyVerificationError) as info:
        resolve_keys(spec, root, "check")
    error = info.value
    e = by_name(spec)
    failing = {name for name in e if lines_for(error, e[name])}
    assert failing == {"missing", "deleted", "destroyed", "malformed"}
    assert error.headline.startswith("4 key(s) failed verification")
    assert_no_canary(str(error))


def facts_fleet(prefix: str) -> FleetSpec:
    return fleet(
        prefix,
        futures(
            "momentum",
            proc("ok", permissions=["general-full"]),
            proc("wrongsub"),
            proc("wrongvenue"),
            proc("excess", "market-data"),
            proc("dupa"),
            proc("dupb"),
            proc("nofp"),
        ),
        {
            "name": "arb",
            "venue": "spot",
            "institutional": True,
            "processes": [proc("permsdiffer", permissions=["cancel-orders", "modify-orders", "query-funds"])],
        },
    )


def store_facts(openbao: OpenBao, spec: FleetSpec, prefix: str) -> KeyMaterial:
    e = by_name(spec)
    for name in ("ok", "wrongsub", "wrongvenue", "excess", "permsdiffer"):
        meta = {
            "wrongsub": {"subaccount": "basis"},
            "wrongvenue": {"venue": "spot"},
            "excess": {"permissions": "general-full"},
            "permsdiffer": {"permissions": "modify-orders,query-funds"},
        }.get(name, {})
        register(openbao, e[name], canary(prefix, name), **meta)
    shared = canary(prefix, "shared")
    register(openbao, e["dupa"], shared)
    register(openbao, e["dupb"], shared)
    register(openbao, e["nofp"], canary(prefix, "nofp"), fingerprint=None)
    return shared


@pytest.mark.vault
def test_check_declares_judged_problems_as_facts(
    openbao: OpenBao, root: KV2Client, vault_prefix: str
) -> None:
    spec = facts_fleet(vault_prefix)
    shared = store_facts(openbao, spec, vault_prefix)
    keys = {k.entry.process.name: k for k in resolve_keys(spec, root, "check")}
    assert all(k.material is None for k in keys.values())
    assert keys["wrongsub"].metadata_subaccount == "basis" and keys["wrongsub"].subaccount == "basis"
    assert keys["wrongvenue"].metadata_venue == "spot" and keys["wrongvenue"].venue == "spot"
    assert keys["excess"].permissions == ("general-full",)
    assert keys["permsdiffer"].permissions == ("modify-orders", "query-funds")
    assert keys["dupa"].fingerprint == keys["dupb"].fingerprint == shared.fingerprint
    assert keys["dupa"].identity_source == keys["dupb"].identity_source == "metadata"
    assert keys["nofp"].identity_source == "material"
    assert keys["nofp"].fingerprint == canary(vault_prefix, "nofp").fingerprint
    assert keys["nofp"].material is None


@pytest.mark.vault
def test_same_key_under_two_paths_is_fatal_to_deploy(
    openbao: OpenBao, root: KV2Client, vault_prefix: str
) -> None:
    spec = fleet(
        vault_prefix, futures("momentum", proc("a")), futures("basis", proc("b", key=f"{vault_prefix}/x/y"))
    )
    a, b = spec.entries()
    shared = canary(vault_prefix, "shared")
    register(openbao, a, shared)
    register(openbao, b, shared)
    with pytest.raises(KeyVerificationError) as info:
        resolve_keys(spec, root, "deploy")
    (line,) = info.value.problems
    assert line.startswith(prefix_of(b))
    assert "momentum/a" in line and f"secret/{a.key_path}" in line and f"secret/{vault_prefix}/x/y" in line
    assert_no_canary(str(info.value))
    keys = resolve_keys(spec, root, "check")
    assert keys[0].fingerprint == keys[1].fingerprint == shared.fingerprint


@pytest.mark.vault
def test_check_never_reads_material_when_metadata_has_the_fingerprint(
    openbao: OpenBao, vault_prefix: str
) -> None:
    """A token that may read only metadata resolves every key; the proxy sees no data request."""
    spec = fleet(vault_prefix, futures("momentum", proc("a"), proc("b"), proc("nofp")))
    e = by_name(spec)
    register(openbao, e["a"], canary(vault_prefix, "a"))
    register(openbao, e["b"], canary(vault_prefix, "b"))
    register(openbao, e["nofp"], canary(vault_prefix, "nofp"), fingerprint=None)
    token = openbao.token(
        f'path "secret/metadata/{vault_prefix}/*" {{ capabilities = ["read"] }}\n' + LEDGER_READ
    )
    with FlakyProxy(openbao.addr) as proxy, connect(VaultSettings(addr=proxy.addr, token=token)) as client:
        keys = {k.entry.process.name: k for k in resolve_keys(spec, client, "check")}
    assert keys["a"].identity_source == keys["b"].identity_source == "metadata"
    assert keys["a"].fingerprint == canary(vault_prefix, "a").fingerprint
    assert (keys["nofp"].identity_source, keys["nofp"].fingerprint) == ("unverifiable", None)
    assert proxy.hits(f"/v1/secret/data/{vault_prefix}/momentum/a") == 0
    assert proxy.hits(f"/v1/secret/data/{vault_prefix}/momentum/b") == 0
    assert proxy.hits(f"/v1/secret/data/{vault_prefix}/momentum/nofp") == 1
    # The same token cannot deploy: it may not read the material.
    with (
        connect(VaultSettings(addr=openbao.addr, token=token)) as client,
        pytest.raises(KeyVerificationError) as info,
    ):
        resolve_keys(spec, client, "deploy")
    assert len(info.value.problems) == 3
    assert all(
        f"'read' capability on 'secret/data/{vault_prefix}/momentum/" in p for p in info.value.problems
    )


@pytest.mark.vault
def test_metadata_forbidden_is_a_per_key_problem(openbao: OpenBao, vault_prefix: str) -> None:
    spec = fleet(vault_prefix, futures("momentum", proc("allowed"), proc("hidden")))
    e = by_name(spec)
    register(openbao, e["allowed"], canary(vault_prefix, "allowed"))
    register(openbao, e["hidden"], canary(vault_prefix, "hidden"))
    token = openbao.token(
        f'path "secret/+/{vault_prefix}/momentum/allowed" {{ capabilities = ["read"] }}\n' + LEDGER_READ
    )
    with (
        connect(VaultSettings(addr=openbao.addr, token=token)) as client,
        pytest.raises(KeyVerificationError) as info,
    ):
        resolve_keys(spec, client, "deploy")
    (line,) = info.value.problems
    assert line.startswith(prefix_of(e["hidden"]))
    assert f"the 'read' capability on 'secret/metadata/{e['hidden'].key_path}'" in line


# --------------------------------------------------------------------------- Vault-wide failures


@pytest.mark.vault
def test_unreachable_vault_aborts_with_one_error(vault_prefix: str) -> None:
    spec = example_fleet(vault_prefix)
    addr = f"http://127.0.0.1:{free_port()}"
    with (
        connect(VaultSettings(addr=addr, token="t", retries=2)) as client,
        pytest.raises(VaultUnavailableError) as info,
    ):
        resolve_keys(spec, client, "deploy")
    assert not isinstance(info.value, KeyVerificationError)
    assert f"cannot reach Vault at {addr}" in str(info.value)


@pytest.mark.vault
def test_sealed_vault_aborts(openbao: OpenBao, root: KV2Client, vault_prefix: str) -> None:
    spec = example_fleet(vault_prefix)
    with openbao.sealed(), pytest.raises(VaultUnavailableError, match=f"Vault at {openbao.addr} is sealed"):
        resolve_keys(spec, root, "check")


@pytest.mark.vault
def test_revoked_token_aborts(openbao: OpenBao, vault_prefix: str) -> None:
    spec = example_fleet(vault_prefix)
    token = openbao.token('path "secret/*" { capabilities = ["read"] }')
    openbao.revoke(token)
    with (
        connect(VaultSettings(addr=openbao.addr, token=token)) as client,
        pytest.raises(VaultError, match="rejected the token") as info,
    ):
        resolve_keys(spec, client, "deploy")
    assert not isinstance(info.value, KeyVerificationError)


@pytest.mark.vault
def test_kv_version_1_mount(openbao: OpenBao, root: KV2Client, vault_prefix: str) -> None:
    mount = openbao.enable_secrets("kv", f"v1{vault_prefix}", {"version": "1"})
    spec = fleet(vault_prefix, futures("momentum", proc("a")), mount=mount)
    with pytest.raises(KeyVerificationError) as info:
        resolve_keys(spec, root, "check")
    (line,) = info.value.problems
    assert line.startswith(prefix_of(spec.entries()[0], mount))
    assert "KV version 1 mount; keyfence needs KV version 2" in line


# --------------------------------------------------------------------------- scale


@pytest.mark.vault
def test_fifty_keys_concurrently_over_one_session(openbao: OpenBao, vault_prefix: str) -> None:
    names = [f"p{i:02d}" for i in range(50)]
    spec = fleet(vault_prefix, futures("momentum", *(proc(n) for n in names)))
    for entry in spec.entries():
        register(openbao, entry, canary(vault_prefix, entry.process.name))
    settings = VaultSettings(addr=openbao.addr, token=openbao.root_token, concurrency=8)
    with connect(settings) as client:
        keys: list[ResolvedKey] = resolve_keys(spec, client, "deploy")
        assert client.hvac_client.adapter.session is client.session
        pools = client.session.get_adapter(openbao.addr).poolmanager.pools
        assert len(pools) == 1
        pool = pools[next(iter(pools.keys()))]
        assert 1 <= pool.num_connections <= settings.concurrency
    assert [k.entry.process.name for k in keys] == names
    assert len({k.fingerprint for k in keys}) == 50
    assert all(k.material == canary(vault_prefix, k.entry.process.name) for k in keys)


def test_fingerprint_with_a_trailing_newline_is_malformed() -> None:
    from keyfence.keys import FINGERPRINT_PATTERN

    assert FINGERPRINT_PATTERN.match("a" * 64)
    assert not FINGERPRINT_PATTERN.match("a" * 64 + "\n")
