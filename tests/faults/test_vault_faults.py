"""Vault faults against a real OpenBao, on both surfaces: ``keyfence check`` and the Pulumi program.

Each test is one row of the fault matrix. Every failure must be exit 2 (or a failed
program) with one message that names the Vault address or the key's ``<mount>/<path>``
and says what to do, shows no traceback and no key material, and declares nothing.
Faults that break a server for good (sealing, stopping) get a server of their own.

| fault | what the person reads (excerpt) |
|---|---|
| server down | cannot reach Vault at <addr> ... check VAULT_ADDR and that Vault is running |
| stopped mid-run | the same, naming the read that found it gone |
| dropped mid-answer | Vault at <addr> dropped the connection in the middle of its answer |
| sealed | Vault at <addr> is sealed; unseal it |
| slow | did not answer within 0.5s ...; raise KEYFENCE_VAULT_TIMEOUT |
| token expired / revoked | rejected the token ... log in again and export a fresh VAULT_TOKEN |
| no read on data / metadata | the 'read' capability on '<mount>/data|metadata/<path>' |
| mount missing / KV v1 | no secrets engine is mounted at / is a KV version 1 mount |
| key absent / deleted / destroyed | register it / undelete it with / register a new key |
| field missing | field 'api_secret' is missing; store both |
| custom metadata malformed | custom metadata '<field>' ... re-register the key |
| not Vault answering | instead of Vault's JSON; check that VAULT_ADDR is the address of Vault's API |
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest

from keyfence.devvault import DevVault
from keyfence.errors import EXIT_OK
from keyfence.vault import KV2Client
from tests.faults.conftest import (
    Fleet,
    Surface,
    expect_failure,
    material,
    point_at,
    root_client,
    run_cli,
    write_fleet,
)
from tests.faults.proxy import Fault, FaultProxy, Rule, matching
from tests.openbao import OpenBao, free_port

pytestmark = pytest.mark.vault

RUNNING = "check VAULT_ADDR and that Vault is running"


def reads(proxy: FaultProxy, what: str) -> list[str]:
    """Outcomes of the proxy's requests to the fleet's ``metadata`` or ``data`` paths, in order."""
    return proxy.outcomes(f"/v1/secret/{what}/")


# =========================================================================== the server goes away


def test_server_down(surface: Surface, fleet: Fleet, fault_env: pytest.MonkeyPatch) -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    fault_env.setenv("VAULT_ADDR", addr)
    surface.fails(
        fleet.spec,
        f"cannot reach Vault at {addr}",
        "(3 attempts)",
        "while trying to read the metadata of",
        RUNNING,
    )


@pytest.mark.parametrize("command", [["keys", "list"], ["keys", "revoke", "momentum/executor", "--yes"]])
def test_server_down_for_keys(command: list[str], fleet: Fleet, fault_env: pytest.MonkeyPatch) -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    fault_env.setenv("VAULT_ADDR", addr)
    expect_failure(run_cli(*command, "--prefix", fleet.prefix), f"cannot reach Vault at {addr}", RUNNING)


def test_server_down_for_register(fleet: Fleet, fault_env: pytest.MonkeyPatch) -> None:
    addr = f"http://127.0.0.1:{free_port()}"
    fault_env.setenv("VAULT_ADDR", addr)
    run = register(fleet, "momentum/new")
    expect_failure(run, f"cannot reach Vault at {addr}", f"secret/{fleet.prefix}/momentum/new", RUNNING)


@pytest.mark.parametrize("metadata", ["listed", "per-key"])
def test_stopped_mid_run(
    surface: Surface, metadata: str, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    """The server dies after the first reads. Check mode: with OpenBao's folder listing, between
    the listing of the keys' folder and that of the key ledger; without it (a server answering
    405 there, as HashiCorp Vault does), between two metadata reads. Deploy mode: between the
    metadata and the material. One read at a time, so the cut is exact."""
    fault_env.setenv("KEYFENCE_VAULT_CONCURRENCY", "1")
    down: Rule
    if surface.mode == "deploy":
        down = matching("/v1/secret/data/", Fault("down"))
        during = f"read version 1 of {fleet.ref('executor')}"
    elif metadata == "listed":
        down = matching("/v1/secret/detailed-metadata/keyfence/ledger", Fault("down"))
        during = "list the keys under secret/keyfence/ledger/"
    else:
        down = matching(f"/v1/secret/metadata/{fleet.path('feed')}", Fault("down"))
        during = f"read the metadata of {fleet.ref('feed')}"
    rule = down if metadata == "listed" else without_listing(down)
    with FaultProxy(openbao.addr, rule) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        surface.fails(fleet.spec, f"cannot reach Vault at {proxy.addr}", during, "(3 attempts)", RUNNING)
    metadata_reads = proxy.outcomes("/v1/secret/metadata/" if metadata == "per-key" else "metadata/")
    assert metadata_reads[0] == "forwarded", "the run had begun before the server went away"
    listed = "forwarded" in proxy.outcomes("/v1/secret/detailed-metadata/")
    assert listed is (metadata == "listed"), "the listing was used, or refused, as the case says"


def without_listing(rule: Rule) -> Rule:
    """``rule``, behind a server without OpenBao's detailed-metadata listing (HashiCorp Vault: 405)."""

    def unsupported(method: str, path: str, n: int) -> Fault | None:
        if "/detailed-metadata/" in path:
            return Fault("status", 405, body=b'{"errors":["unsupported operation"]}')
        return rule(method, path, n)

    return unsupported


def test_real_server_stopped_mid_run(
    surface: Surface, dedicated: DevVault, tmp_path: Path, fault_env: pytest.MonkeyPatch
) -> None:
    """The OpenBao process itself is terminated between two reads of the run."""
    fleet = write_fleet(tmp_path, "kraken")
    fleet.register(root_client(dedicated))
    point_at(fault_env, dedicated.addr, dedicated.root_token)
    fault_env.setenv("KEYFENCE_VAULT_CONCURRENCY", "1")
    if surface.mode == "check":
        # keyfence check reads Vault from the program's own process, out of reach of a patch
        # here: the server is stopped by the proxy the reads go through, once the first
        # metadata read (OpenBao: the listing of the keys' folder) has been answered, and the
        # next one (the key ledger's listing) finds it gone.
        metadata_reads = 0

        def stop_on_second_read(method: str, path: str, n: int) -> Fault | None:
            nonlocal metadata_reads
            if "metadata/" in path:
                metadata_reads += 1
                if metadata_reads == 2:
                    dedicated.stop()
            return None

        with FaultProxy(dedicated.addr, stop_on_second_read) as proxy:
            fault_env.setenv("VAULT_ADDR", proxy.addr)
            surface.fails(fleet.spec, f"cannot reach Vault at {proxy.addr}", RUNNING)
    else:
        # Deploy mode: stop the server just before the first material read.
        stop_after_first_call(fault_env, "read_version", dedicated.stop, before=True)
        surface.fails(fleet.spec, f"cannot reach Vault at {dedicated.addr}", RUNNING)
    assert not dedicated.running


def stop_after_first_call(
    monkeypatch: pytest.MonkeyPatch, method: str, stop: Callable[[], None], *, before: bool
) -> None:
    """Make the first call of ``KV2Client.<method>`` stop the server, before or after it runs."""
    original = getattr(KV2Client, method)
    calls = 0

    def wrapped(self: KV2Client, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1 and before:
            stop()
        try:
            return original(self, *args, **kwargs)
        finally:
            if calls == 1 and not before:
                stop()

    monkeypatch.setattr(KV2Client, method, wrapped)


def test_register_stopped_between_the_key_and_its_metadata(
    fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    """The write landed, the metadata did not: the message says so and how to finish; --rotate does."""

    key_metadata = f"/v1/secret/metadata/{fleet.prefix}/"

    def rule(method: str, path: str, n: int) -> Fault | None:
        # The key's own metadata: the ledger record's (its mirror) is written before, best effort.
        return Fault("down") if method in ("POST", "PUT") and path.startswith(key_metadata) else None

    with FaultProxy(openbao.addr, rule) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        run = register(fleet, "momentum/new")
    expect_failure(
        run,
        f"secret/{fleet.prefix}/momentum/new: version 1 of the key was written but its metadata was not",
        f"cannot reach Vault at {proxy.addr}",
        "run the same command with --rotate once the cause is fixed",
    )
    fault_env.setenv("VAULT_ADDR", openbao.addr)
    done = register(fleet, "momentum/new", "--rotate")
    assert done.exit_code == EXIT_OK, done.message
    assert "from version 1 to version 2" in done.stdout


def test_dropped_in_the_middle_of_an_answer(
    surface: Surface, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    """Vault (or a proxy) sends its headers and half a body, then resets: retried, then reported."""
    with FaultProxy(openbao.addr, matching("/v1/secret/", Fault("truncate"))) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        surface.fails(
            fleet.spec,
            f"Vault at {proxy.addr} dropped the connection in the middle of its answer (3 attempts)",
            "check that Vault is running and healthy",
        )


# =========================================================================== the server cannot serve


def test_sealed(surface: Surface, dedicated: DevVault, tmp_path: Path, fault_env: pytest.MonkeyPatch) -> None:
    fleet = write_fleet(tmp_path, "kraken")
    root = root_client(dedicated)
    fleet.register(root)
    root.sys.seal()
    point_at(fault_env, dedicated.addr, dedicated.root_token)
    surface.fails(fleet.spec, f"Vault at {dedicated.addr} is sealed; unseal it")


def test_sealed_for_keys(dedicated: DevVault, tmp_path: Path, fault_env: pytest.MonkeyPatch) -> None:
    fleet = write_fleet(tmp_path, "kraken")
    root_client(dedicated).sys.seal()
    point_at(fault_env, dedicated.addr, dedicated.root_token)
    sealed = f"Vault at {dedicated.addr} is sealed; unseal it"
    expect_failure(run_cli("keys", "list", "--prefix", fleet.prefix), sealed)
    expect_failure(register(fleet, "momentum/new"), sealed)


def test_slow(surface: Surface, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch) -> None:
    """Answers held past KEYFENCE_VAULT_TIMEOUT: the metadata in check mode (listed or read per
    key), the material in deploy mode."""
    fault_env.setenv("KEYFENCE_VAULT_TIMEOUT", "0.5")
    held = "metadata/" if surface.mode == "check" else "/v1/secret/data/"
    with FaultProxy(openbao.addr, matching(held, Fault("hold", seconds=5))) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        surface.fails(
            fleet.spec,
            f"Vault at {proxy.addr} did not answer within 0.5s while trying to read",
            "raise KEYFENCE_VAULT_TIMEOUT if Vault is only slow",
        )


def test_slow_for_keys(fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch) -> None:
    fault_env.setenv("KEYFENCE_VAULT_TIMEOUT", "0.5")
    with FaultProxy(openbao.addr, matching("/v1/secret/", Fault("hold", seconds=5))) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        expect_failure(
            run_cli("keys", "list", "--prefix", fleet.prefix),
            # keys list looks for copies in the whole mount: it lists from the mount's root.
            f"Vault at {proxy.addr} did not answer within 0.5s while trying to list the keys under secret/",
        )


# =========================================================================== the token


REJECTED = "rejected the token while trying to read the metadata of"
FRESH_TOKEN = "log in again and export a fresh VAULT_TOKEN"


@pytest.mark.slow
def test_token_expired(
    surface: Surface, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    token = openbao.token('path "secret/*" { capabilities = ["read", "list"] }', ttl="1s")
    wait_until_rejected(openbao.addr, token)
    fault_env.setenv("VAULT_TOKEN", token)
    surface.fails(
        fleet.spec, f"Vault at {openbao.addr} {REJECTED}", "expired, revoked or unknown", FRESH_TOKEN
    )


def wait_until_rejected(addr: str, token: str, *, limit: float = 15.0) -> None:
    """Poll until Vault refuses the token: its TTL is the only clock involved."""
    client = hvac.Client(url=addr, token=token, timeout=5)
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        try:
            client.auth.token.lookup_self()
        except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
            return
        time.sleep(0.1)
    pytest.fail(f"the token did not expire within {limit:g}s")


def test_token_revoked(
    surface: Surface, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    token = openbao.token('path "secret/*" { capabilities = ["read", "list"] }')
    openbao.revoke(token)
    fault_env.setenv("VAULT_TOKEN", token)
    surface.fails(fleet.spec, f"Vault at {openbao.addr} {REJECTED}", FRESH_TOKEN)


def test_token_revoked_for_keys(fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch) -> None:
    token = openbao.token('path "secret/*" { capabilities = ["read", "list"] }')
    openbao.revoke(token)
    fault_env.setenv("VAULT_TOKEN", token)
    expect_failure(
        run_cli("keys", "list", "--prefix", fleet.prefix),
        f"Vault at {openbao.addr} rejected the token",
        FRESH_TOKEN,
    )


def test_token_without_read_on_the_material(
    surface: Surface, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    """The CI token: check mode never needs the material, so it passes; a deploy names the capability."""
    token = openbao.token(
        f'path "secret/metadata/{fleet.prefix}/*" {{ capabilities = ["read", "list"] }}\n'
        'path "secret/data/keyfence/ledger/*" { capabilities = ["read"] }'
    )
    fault_env.setenv("VAULT_TOKEN", token)
    if surface.mode == "check":
        surface.passes(fleet.spec)
        return
    message = surface.fails(
        fleet.spec,
        "permission denied: the token may not read it",
        f"its policy needs the 'read' capability on 'secret/data/{fleet.path('executor')}'",
        f"its policy needs the 'read' capability on 'secret/data/{fleet.path('feed')}'",
    )
    assert f"{fleet.ref('executor')}: permission denied" in message


def test_token_without_read_on_the_metadata(
    surface: Surface, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    token = openbao.token(f'path "secret/data/{fleet.prefix}/*" {{ capabilities = ["read"] }}')
    fault_env.setenv("VAULT_TOKEN", token)
    message = surface.fails(
        fleet.spec,
        f"{fleet.ref('executor')}: permission denied: the token may not read it",
        f"its policy needs the 'read' capability on 'secret/metadata/{fleet.path('executor')}'",
    )
    assert f"'secret/metadata/{fleet.path('feed')}'" in message


def test_token_without_read_on_the_metadata_for_keys(
    fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    """Listing is allowed, reading what is listed is not: the inventory names every path it could not read."""
    token = openbao.token('path "secret/metadata/*" { capabilities = ["list"] }')
    fault_env.setenv("VAULT_TOKEN", token)
    expect_failure(
        run_cli("keys", "list", "--prefix", fleet.prefix),
        f"cannot read every key under secret/{fleet.prefix}",
        f"{fleet.ref('executor')}: permission denied",
        f"the 'read' capability on 'secret/metadata/{fleet.path('feed')}'",
    )


# =========================================================================== the mount


def test_kv_mount_missing(surface: Surface, fleet: Fleet) -> None:
    mount = f"nosuch{fleet.prefix}"
    elsewhere = fleet.with_mount(mount)
    surface.fails(
        elsewhere.spec,
        f"{mount}/{fleet.path('executor')}: no secrets engine is mounted at '{mount}/'",
        "set vault.mount in the spec",
    )


def test_kv_mount_missing_for_keys(fleet: Fleet) -> None:
    mount = f"nosuch{fleet.prefix}"
    expect_failure(
        run_cli("keys", "list", "--mount", mount, "--prefix", fleet.prefix),
        f"no secrets engine is mounted at '{mount}/'",
        "(--mount for 'keyfence keys')",
    )


def test_kv_version_1(surface: Surface, fleet: Fleet, openbao: OpenBao) -> None:
    mount = openbao.enable_secrets("kv", f"v1{fleet.prefix}", {"version": "1"})
    surface.fails(
        fleet.with_mount(mount).spec,
        f"{mount}/{fleet.path('executor')}: '{mount}' is a KV version 1 mount; keyfence needs KV version 2",
        f"vault kv enable-versioning {mount}",
    )


def test_kv_version_1_for_keys(fleet: Fleet, openbao: OpenBao) -> None:
    """Found by this suite: a KV v1 mount listed as 'clean, 0 keys', and register wrote the key into it."""
    mount = openbao.enable_secrets("kv", f"v1{fleet.prefix}", {"version": "1"})
    v1 = f"'{mount}' is a KV version 1 mount; keyfence needs KV version 2"
    expect_failure(run_cli("keys", "list", "--mount", mount, "--prefix", fleet.prefix), v1)
    expect_failure(
        register(fleet, "momentum/new", "--mount", mount), v1, f"{mount}/{fleet.prefix}/momentum/new"
    )
    with pytest.raises(hvac.exceptions.InvalidPath):
        openbao.client.secrets.kv.v1.list_secrets(path="", mount_point=mount)


# =========================================================================== the key


def test_key_absent(surface: Surface, fleet: Fleet, openbao: OpenBao) -> None:
    openbao.client.secrets.kv.v2.delete_metadata_and_all_versions(fleet.path("executor"))
    surface.fails(
        fleet.spec,
        f"{fleet.ref('executor')}: no key is stored here",
        "register it with 'keyfence keys register'",
    )


def test_key_deleted(surface: Surface, fleet: Fleet, openbao: OpenBao) -> None:
    openbao.client.secrets.kv.v2.delete_latest_version_of_secret(fleet.path("executor"))
    surface.fails(
        fleet.spec,
        f"{fleet.ref('executor')}: the current version 1 is deleted",
        f"undelete it with 'vault kv undelete -mount=secret -versions=1 {fleet.path('executor')}'",
    )


def test_version_destroyed(surface: Surface, fleet: Fleet, openbao: OpenBao) -> None:
    openbao.client.secrets.kv.v2.destroy_secret_versions(fleet.path("executor"), versions=[1])
    surface.fails(
        fleet.spec,
        f"{fleet.ref('executor')}: the current version 1 is destroyed, its material is gone for good",
        "register a new key with 'keyfence keys register'",
    )


def test_field_missing(surface: Surface, fleet: Fleet, openbao: OpenBao) -> None:
    """No api_secret. The metadata has no fingerprint either, so check mode reads the material too."""
    key = material(fleet.prefix, "executor")
    openbao.client.secrets.kv.v2.create_or_update_secret(
        path=fleet.path("executor"), secret={"api_key": key.api_key}
    )
    fleet.set_metadata(openbao.client, "executor", fingerprint=None)
    surface.fails(
        fleet.spec,
        f"{fleet.ref('executor')}: version 2: field 'api_secret' is missing",
        "store both api_key and api_secret",
    )


@pytest.mark.parametrize(
    ("field", "value", "says"),
    [
        ("fingerprint", "not-a-sha256", "custom metadata 'fingerprint' is not 64 lowercase hex digits"),
        ("venue", "moon", "custom metadata 'venue' is 'moon', not one of spot, futures"),
        (
            "permissions",
            "general-full,fly",
            "custom metadata 'permissions' lists 'fly', not futures permission ids",
        ),
        ("subaccount", " ", "custom metadata 'subaccount' is empty"),
    ],
)
def test_custom_metadata_malformed(
    surface: Surface, fleet: Fleet, openbao: OpenBao, field: str, value: str, says: str
) -> None:
    fleet.set_metadata(openbao.client, "executor", **{field: value})
    message = surface.fails(fleet.spec, f"{fleet.ref('executor')}: {says}")
    (line,) = [line for line in message.splitlines() if fleet.ref("executor") in line]
    assert any(remedy in line for remedy in ("re-register the key", "set it to")), f"no remedy in: {line}"


# =========================================================================== not Vault at all


def test_something_else_answers(
    surface: Surface, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    """A web page where Vault should be (wrong VAULT_ADDR, a login portal, a proxy's placeholder).

    Found by this suite: its 200 answer was read as 'this version holds no data; register
    the key again', advice that would make someone replace a good key.
    """
    page = Fault("status", 200, body=b"<html>sign in</html>", content_type="text/html; charset=utf-8")
    # Check mode reads metadata: OpenBao's folder listing, or per key; a page there is no fallback.
    with FaultProxy(
        openbao.addr, matching("metadata/" if surface.mode == "check" else "/v1/secret/data/", page)
    ) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        surface.fails(
            fleet.spec,
            f"Vault at {proxy.addr} answered the request to read",
            "with HTTP 200 (text/html) instead of Vault's JSON",
            "check that VAULT_ADDR is the address of Vault's API",
        )


# =========================================================================== helpers


def register(fleet: Fleet, name: str, *extra: str) -> Any:
    """``keyfence keys register`` of fresh canary material under the fleet's prefix."""
    key = material(fleet.prefix, name)
    return run_cli(
        "keys",
        "register",
        name,
        "--venue",
        "futures",
        "--permissions",
        "general-full",
        "--prefix",
        fleet.prefix,
        *extra,
        stdin=f"{key.api_key}\n{key.api_secret}\n",
    )
