"""keyfence.keystore: input validation (no server) and the key lifecycle against a real OpenBao."""

from __future__ import annotations

import base64
import re
import secrets
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from keyfence.errors import EXIT_INVALID, EXIT_VIOLATION, KeyfenceError, RefusedError, VaultError
from keyfence.keystore import (
    KeyInputError,
    NoProgress,
    Placement,
    Registration,
    check_vault_path,
    inventory,
    parse_permission_list,
    parse_process_ref,
    plan_registration,
    register_key,
    resolve_placement,
    revoke_key,
    validate_material,
)
from keyfence.material import KeyMaterial, fingerprint_of
from keyfence.spec import FleetSpec, load_spec_text
from keyfence.vault import KeyNotFoundError, KV2Client, VaultSettings, connect
from tests.openbao import OpenBao

ISSUED: list[KeyMaterial] = []
"""Every key a test made: none may ever appear in a message."""


def new_material() -> KeyMaterial:
    material = KeyMaterial(
        api_key=f"CANARYKEY{secrets.token_hex(16)}",
        api_secret=base64.b64encode(b"CANARYSECRET" + secrets.token_bytes(48)).decode(),
    )
    ISSUED.append(material)
    return material


def assert_clean(text: str) -> None:
    for material in ISSUED:
        assert material.api_key not in text
        assert material.api_secret not in text


def fleet(prefix: str) -> FleetSpec:
    """A fleet under ``prefix``, with one explicit key path outside it."""
    return load_spec_text(
        f"""
version: 1
vault: {{mount: secret, prefix: {prefix}}}
subaccounts:
  - name: main
    master: true
    venue: spot
    processes:
      - {{name: treasury, role: treasury, image: "acme/treasury:1.0", allow_withdrawals: true,
          permissions: [query-funds, deposit-funds, withdraw-funds]}}
      - {{name: books, role: accounting, image: "acme/books:1.0"}}
  - name: momentum
    venue: futures
    processes:
      - {{name: executor, role: trader, image: "acme/momentum:1.0"}}
      - {{name: risk, role: risk, image: "acme/risk:1.0", key: {prefix}-elsewhere/momentum/risk}}
""",
        f"{prefix}.yaml",
    )


def registration(prefix: str, name: str = "momentum/executor", **options: Any) -> Registration:
    defaults: dict[str, Any] = {"venue": "futures", "permissions": "general-full", "prefix": prefix}
    return plan_registration(name, **{**defaults, **options})


@pytest.fixture
def client(openbao: OpenBao) -> Iterator[KV2Client]:
    with connect(VaultSettings(addr=openbao.addr, token=openbao.root_token, timeout=5.0)) as kv:
        yield kv


# =========================================================================== input (no server)


@pytest.mark.parametrize("name", ["momentum/executor", "a/b", "basis-2/feed-eu-1"])
def test_process_refs_accepted(name: str) -> None:
    assert "/".join(parse_process_ref(name)) == name


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("momentum", "one '/'"),
        ("a/b/c", "one '/'"),
        ("Momentum/executor", "DNS-1123"),
        ("momentum/exec_utor", "DNS-1123"),
        ("momentum/", "process name is empty"),
        ("-x/y", "DNS-1123"),
        ("m/" + "p" * 47, "at most 46"),
    ],
)
def test_bad_process_refs(name: str, fragment: str) -> None:
    with pytest.raises(KeyInputError, match=re.escape(fragment)) as info:
        parse_process_ref(name)
    assert info.value.exit_code == EXIT_INVALID


def test_material_accepted() -> None:
    material = new_material()
    assert validate_material(material.api_key, material.api_secret) == material


@pytest.mark.parametrize(
    ("api_key", "api_secret", "fragment"),
    [
        ("", "c2VjcmV0", "the api key is empty"),
        ("KEY", "", "the api secret is empty"),
        ("KEY WITH SPACE", "c2VjcmV0", "the api key contains whitespace"),
        ("KEY", "c2Vj cmV0", "the api secret contains whitespace"),
        ("KEY\t", "c2VjcmV0", "the api key contains whitespace"),
        ("KEY", "not*base64", "not valid base64"),
        ("KEY", "c2VjcmV0c", "not valid base64"),
        ("KEY", "c2VjcmV0\x00", "not printable ASCII"),
        ("c2VjcmV0", "c2VjcmV0", "the same value"),
        ("K" * 1025, "c2VjcmV0", "over 1024 characters"),
    ],
)
def test_bad_material_named_never_shown(api_key: str, api_secret: str, fragment: str) -> None:
    with pytest.raises(KeyInputError) as info:
        validate_material(api_key, api_secret)
    message = str(info.value)
    assert fragment in message
    assert info.value.exit_code == EXIT_INVALID
    for value in (api_key, api_secret):
        if len(value) > 3:
            assert value not in message


def test_permissions_are_checked_against_the_venue() -> None:
    assert parse_permission_list("query-funds, websocket,query-funds", "spot") == ("query-funds", "websocket")
    with pytest.raises(KeyInputError, match="'query-funds' is not a futures permission id"):
        parse_permission_list("query-funds", "futures")
    with pytest.raises(KeyInputError, match="is empty"):
        parse_permission_list(" , ", "spot")


@pytest.mark.parametrize("path", ["a/../b", "a/%2e", "a/.hidden/ok", "/", "a/b c"])
def test_bad_paths(path: str) -> None:
    with pytest.raises(KeyInputError, match="--path"):
        check_vault_path(path, "--path")


def test_placement_from_options_spec_or_defaults() -> None:
    assert resolve_placement(None, None, None) == Placement("secret", "kraken")
    assert resolve_placement(None, "kv/", "/desk//keys") == Placement("kv", "desk/keys")
    spec = fleet("pfx")
    assert resolve_placement(spec, None, None) == Placement("secret", "pfx")
    assert resolve_placement(spec, "secret", "pfx") == Placement("secret", "pfx")
    with pytest.raises(KeyInputError, match="--prefix 'other' contradicts the spec"):
        resolve_placement(spec, None, "other")


def test_spec_supplies_path_venue_and_permissions() -> None:
    spec = fleet("pfx")
    reg = plan_registration("momentum/risk", venue=None, permissions="general-full", spec=spec)
    assert (reg.path, reg.venue) == ("pfx-elsewhere/momentum/risk", "futures")
    treasury = plan_registration("main/treasury", venue=None, permissions=None, spec=spec)
    assert treasury.permissions == ("deposit-funds", "query-funds", "withdraw-funds")
    assert treasury.path == "pfx/main/treasury"
    assert "pfx-elsewhere/momentum/risk" in treasury.extra_paths


@pytest.mark.parametrize(
    ("name", "options", "error", "fragment"),
    [
        (
            "momentum/ghost",
            {"venue": "futures", "permissions": "general-full"},
            KeyInputError,
            "runs executor, risk",
        ),
        (
            "nowhere/x",
            {"venue": "futures", "permissions": "general-full"},
            KeyInputError,
            "subaccounts are main",
        ),
        (
            "momentum/executor",
            {"venue": "spot", "permissions": "query-funds"},
            KeyInputError,
            "trades futures",
        ),
        (
            "momentum/risk",
            {"venue": None, "permissions": "general-full", "path": "pfx/momentum/risk"},
            KeyInputError,
            "drop --path or fix the spec",
        ),
        ("main/books", {"venue": None, "permissions": None}, KeyInputError, "--permissions is required"),
        ("main/books", {"venue": None, "permissions": "withdraw-funds"}, RefusedError, "withdraw-funds"),
        (
            "momentum/executor",
            {"venue": None, "permissions": "withdrawal"},
            RefusedError,
            "blocks withdrawals",
        ),
        ("main/treasury", {"venue": None, "permissions": "query-funds"}, RefusedError, "holds exactly"),
    ],
)
def test_spec_refusals(name: str, options: dict[str, Any], error: type[KeyfenceError], fragment: str) -> None:
    with pytest.raises(error, match=re.escape(fragment)) as info:
        plan_registration(name, spec=fleet("pfx"), **options)
    assert info.value.exit_code == (EXIT_VIOLATION if error is RefusedError else EXIT_INVALID)


def test_venue_needed_without_spec() -> None:
    with pytest.raises(KeyInputError, match="--venue is required"):
        plan_registration("a/b", venue=None, permissions="general-read")


# =========================================================================== register (real OpenBao)


@pytest.mark.vault
def test_register_writes_material_and_metadata(client: KV2Client, vault_prefix: str) -> None:
    material = new_material()
    done = register_key(client, registration(vault_prefix), material)
    assert (done.path, done.version, done.replaced_version) == (f"{vault_prefix}/momentum/executor", 1, None)
    assert done.fingerprint == fingerprint_of(material.api_key)
    assert client.read_version("secret", done.path, 1) == material
    metadata = client.read_metadata("secret", done.path)
    custom = dict(metadata.custom_metadata)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", custom.pop("registered_at"))
    assert custom == {
        "subaccount": "momentum",
        "venue": "futures",
        "permissions": "general-full",
        "fingerprint": done.fingerprint,
        # The secret's identity, so keyfence check never reads material to recognise a copy of it.
        "secret_fingerprint": material.secret_fingerprint,
        "fingerprint_version": "1",
    }
    assert metadata.cas_required is True
    assert_clean(repr(done))


@pytest.mark.vault
def test_existing_key_needs_rotate(client: KV2Client, vault_prefix: str) -> None:
    register_key(client, registration(vault_prefix), new_material())
    with pytest.raises(RefusedError, match=r"already registered .*use --rotate") as info:
        register_key(client, registration(vault_prefix), new_material())
    assert f"secret/{vault_prefix}/momentum/executor" in str(info.value)
    assert client.read_metadata("secret", f"{vault_prefix}/momentum/executor").current_version == 1


@pytest.mark.vault
def test_rotate_writes_a_new_version_and_new_metadata(client: KV2Client, vault_prefix: str) -> None:
    first = register_key(
        client, registration(vault_prefix, venue="spot", permissions="query-funds"), new_material()
    )
    replacement = new_material()
    rotated = register_key(
        client,
        registration(vault_prefix, venue="futures", permissions="general-full", rotate=True),
        replacement,
    )
    assert (rotated.version, rotated.replaced_version) == (2, 1)
    metadata = client.read_metadata("secret", first.path)
    assert metadata.current_version == 2
    assert metadata.custom_metadata["fingerprint"] == fingerprint_of(replacement.api_key) != first.fingerprint
    assert (metadata.custom_metadata["venue"], metadata.custom_metadata["permissions"]) == (
        "futures",
        "general-full",
    )
    assert client.read_version("secret", first.path, 2) == replacement


@pytest.mark.vault
def test_rotate_needs_an_existing_key(client: KV2Client, vault_prefix: str) -> None:
    with pytest.raises(RefusedError, match=r"no key is registered .* to rotate"):
        register_key(client, registration(vault_prefix, rotate=True), new_material())


@pytest.mark.vault
def test_same_key_under_another_path_is_refused(client: KV2Client, vault_prefix: str) -> None:
    material = new_material()
    register_key(client, registration(vault_prefix, "momentum/executor"), material)
    with pytest.raises(RefusedError) as info:
        register_key(client, registration(vault_prefix, "basis/executor"), material)
    message = str(info.value)
    assert f"already registered at secret/{vault_prefix}/momentum/executor" in message
    assert info.value.exit_code == EXIT_VIOLATION
    assert_clean(message)
    with pytest.raises(KeyNotFoundError):
        client.read_metadata("secret", f"{vault_prefix}/basis/executor")


@pytest.mark.vault
def test_duplicate_found_at_a_spec_path_outside_the_prefix(client: KV2Client, vault_prefix: str) -> None:
    spec = fleet(vault_prefix)
    material = new_material()
    risk = plan_registration("momentum/risk", venue=None, permissions="general-full", spec=spec)
    register_key(client, risk, material)
    executor = plan_registration("momentum/executor", venue=None, permissions="general-full", spec=spec)
    with pytest.raises(RefusedError, match=f"secret/{vault_prefix}-elsewhere/momentum/risk"):
        register_key(client, executor, material)


@pytest.mark.vault
def test_keys_without_fingerprint_are_a_warning(
    client: KV2Client, openbao: OpenBao, vault_prefix: str
) -> None:
    openbao.put_key(f"{vault_prefix}/legacy/key", "LEGACYKEY", "bGVnYWN5")
    done = register_key(client, registration(vault_prefix), new_material())
    assert len(done.warnings) == 1
    assert f"secret/{vault_prefix}/legacy/key" in done.warnings[0]
    assert "LEGACYKEY" not in done.warnings[0]


@pytest.mark.vault
@pytest.mark.parametrize("rotate", [False, True], ids=["new-path", "rotation"])
def test_concurrent_registrations_of_one_path_one_wins(
    client: KV2Client, vault_prefix: str, monkeypatch: pytest.MonkeyPatch, rotate: bool
) -> None:
    """Both pass every read before either writes; check-and-set lets exactly one through."""
    if rotate:
        register_key(client, registration(vault_prefix), new_material())
    barrier = threading.Barrier(2, timeout=30)
    real_write = KV2Client.write_key

    def write_after_both_checked(self: KV2Client, *args: Any, **kwargs: Any) -> int:
        barrier.wait()
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(KV2Client, "write_key", write_after_both_checked)
    materials = [new_material(), new_material()]
    outcomes: list[object] = [None, None]

    def attempt(index: int) -> None:
        try:
            outcomes[index] = register_key(
                client, registration(vault_prefix, rotate=rotate), materials[index]
            )
        except KeyfenceError as exc:
            outcomes[index] = exc

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [o for o in outcomes if isinstance(o, RefusedError)]
    won = [i for i, o in enumerate(outcomes) if not isinstance(o, KeyfenceError)]
    assert len(refused) == 1 and len(won) == 1, outcomes
    assert "changed concurrently" in str(refused[0])
    version = 2 if rotate else 1
    stored = client.read_version("secret", f"{vault_prefix}/momentum/executor", version)
    assert stored == materials[won[0]]
    metadata = client.read_metadata("secret", f"{vault_prefix}/momentum/executor")
    assert metadata.current_version == version
    assert metadata.custom_metadata["fingerprint"] == fingerprint_of(materials[won[0]].api_key)


@pytest.mark.vault
def test_scan_that_cannot_read_a_key_writes_nothing(openbao: OpenBao, vault_prefix: str) -> None:
    openbao.put_key(f"{vault_prefix}/hidden/key", "HIDDENKEY", "aGlkZGVu")
    token = openbao.token(
        f"""
        path "secret/metadata/{vault_prefix}/" {{ capabilities = ["list"] }}
        path "secret/metadata/{vault_prefix}/*" {{ capabilities = ["list"] }}
        path "secret/metadata/{vault_prefix}/momentum/*" {{ capabilities = ["read", "update", "list"] }}
        path "secret/data/{vault_prefix}/*" {{ capabilities = ["create", "update"] }}
        """
    )
    limited = connect(VaultSettings(addr=openbao.addr, token=token, timeout=5.0))
    with (
        limited,
        pytest.raises(VaultError, match="cannot tell whether this key is already registered") as info,
    ):
        register_key(limited, registration(vault_prefix), new_material())
    assert f"'read' capability on 'secret/metadata/{vault_prefix}/hidden/key'" in str(info.value)
    assert info.value.exit_code == EXIT_INVALID


# =========================================================================== inventory and revoke


@pytest.mark.vault
def test_inventory_cross_checks_the_spec(client: KV2Client, openbao: OpenBao, vault_prefix: str) -> None:
    spec = fleet(vault_prefix)
    shared = new_material()
    register_key(client, plan_registration("main/treasury", venue=None, permissions=None, spec=spec), shared)
    register_key(
        client,
        plan_registration("momentum/executor", venue=None, permissions="general-full", spec=spec),
        new_material(),
    )
    # A careless copy of the treasury key, and a key no process uses.
    data = openbao.client.secrets.kv.v2.read_secret_version(
        path=f"{vault_prefix}/main/treasury", mount_point="secret", raise_on_deleted_version=True
    )["data"]
    custom = client.read_metadata("secret", f"{vault_prefix}/main/treasury").custom_metadata
    openbao.put_key(
        f"{vault_prefix}/main/books",
        data["data"]["api_key"],
        data["data"]["api_secret"],
        custom_metadata=dict(custom),
    )
    register_key(client, registration(vault_prefix, "old/bot"), new_material())

    progress = CountingProgress()
    result = inventory(client, Placement("secret", vault_prefix), spec=spec, progress=progress)
    paths = [k.path for k in result.keys]
    assert paths == sorted(
        f"{vault_prefix}/{p}" for p in ("main/treasury", "main/books", "momentum/executor", "old/bot")
    )
    assert result.unused == [f"{vault_prefix}/old/bot"]
    assert [(m.process, m.path) for m in result.missing] == [
        ("momentum/risk", f"{vault_prefix}-elsewhere/momentum/risk")
    ]
    assert [(d.fingerprint, d.paths) for d in result.duplicates] == [
        (fingerprint_of(shared.api_key), (f"{vault_prefix}/main/books", f"{vault_prefix}/main/treasury"))
    ]
    assert not result.clean
    by_path = {k.path: k for k in result.keys}
    treasury = by_path[f"{vault_prefix}/main/treasury"]
    assert (treasury.subaccount, treasury.process, treasury.used_by, treasury.status) == (
        "main",
        "treasury",
        "main/treasury",
        "ok",
    )
    assert treasury.permissions == ("deposit-funds", "query-funds", "withdraw-funds")
    assert by_path[f"{vault_prefix}/old/bot"].used_by is None
    # The whole mount is read (a copy may sit anywhere in it), so other tests' keys count too.
    assert progress.total == progress.steps >= 5 and progress.ended
    assert_clean(repr(result.to_json()))


@pytest.mark.vault
def test_inventory_without_spec_is_clean_unless_duplicated(client: KV2Client, vault_prefix: str) -> None:
    register_key(client, registration(vault_prefix), new_material())
    result = inventory(client, Placement("secret", vault_prefix))
    assert result.clean and result.unused == [] and result.missing == []
    assert inventory(client, Placement("secret", f"{vault_prefix}-empty")).keys == []


@pytest.mark.vault
def test_revoke_destroys_every_version(client: KV2Client, vault_prefix: str) -> None:
    register_key(client, registration(vault_prefix), new_material())
    register_key(client, registration(vault_prefix, rotate=True), new_material())
    metadata = client.read_metadata("secret", f"{vault_prefix}/momentum/executor")
    revoked = revoke_key(client, metadata)
    assert (revoked.ref, revoked.versions) == (f"secret/{vault_prefix}/momentum/executor", 2)
    with pytest.raises(KeyNotFoundError):
        client.read_metadata("secret", f"{vault_prefix}/momentum/executor")
    # Gone for good, so the path can take a new key without --rotate.
    assert register_key(client, registration(vault_prefix), new_material()).version == 1


class CountingProgress(NoProgress):
    def __init__(self) -> None:
        self.total = 0
        self.steps = 0
        self.ended = False
        self._lock = threading.Lock()

    def begin(self, description: str, total: int) -> None:
        self.total = total

    def step(self) -> None:
        with self._lock:
            self.steps += 1

    def end(self) -> None:
        self.ended = True
