"""``keyfence keys`` end to end: the real command line against a real OpenBao dev server.

Every invocation goes through ``invoke``, which fails the test if any key material a test
issued shows up on stdout or stderr, whatever the command and whatever its outcome.
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import secrets
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from typer.testing import CliRunner

import keyfence.cli.keys as keys_cli
from keyfence.cli.app import app
from keyfence.errors import EXIT_INVALID, EXIT_OK, EXIT_VIOLATION
from keyfence.keystore import KeyInputError, NoProgress
from keyfence.material import KeyMaterial, fingerprint_of
from tests.openbao import OpenBao

pytestmark = pytest.mark.vault

ROOT = Path(__file__).resolve().parents[2]
ISSUED: list[KeyMaterial] = []


def new_material() -> KeyMaterial:
    material = KeyMaterial(
        api_key=f"CANARYKEY{secrets.token_hex(16)}",
        api_secret=base64.b64encode(b"CANARYSECRET" + secrets.token_bytes(48)).decode(),
    )
    ISSUED.append(material)
    return material


def stdin_for(material: KeyMaterial) -> str:
    return f"{material.api_key}\n{material.api_secret}\n"


CANARY_PREFIXES = ("CANARYKEY", base64.b64encode(b"CANARYSECRET").decode()[:16])
"""Even a fragment of a test key is a leak: every key and secret starts with one of these."""


def assert_no_material(text: str) -> None:
    for material in ISSUED:
        assert material.api_key not in text, "an api key leaked into the output"
        assert material.api_secret not in text, "an api secret leaked into the output"
    for prefix in CANARY_PREFIXES:
        assert prefix not in text, "part of a test key leaked into the output"


def invoke(*args: str, input: str = "", env: dict[str, str] | None = None) -> Any:
    result = CliRunner(env=env).invoke(app, ["keys", *args], input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    assert_no_material(result.stdout + result.stderr)
    return result


def register(prefix: str, name: str, material: KeyMaterial, *extra: str) -> Any:
    options = ["--venue", "futures", "--permissions", "general-full"] if "--spec" not in extra else []
    return invoke("register", name, "--prefix", prefix, *options, *extra, input=stdin_for(material))


def register_with_spec(spec: Path, name: str, material: KeyMaterial, *extra: str) -> Any:
    return invoke("register", name, "--spec", str(spec), *extra, input=stdin_for(material))


def stored_paths(openbao: OpenBao, prefix: str) -> list[str]:
    try:
        keys = openbao.client.secrets.kv.v2.list_secrets(path=prefix, mount_point="secret")["data"]["keys"]
    except Exception:
        return []
    return sorted(keys)


def metadata(openbao: OpenBao, path: str) -> dict[str, Any]:
    data: dict[str, Any] = openbao.client.secrets.kv.v2.read_secret_metadata(path=path, mount_point="secret")[
        "data"
    ]
    return data


def write_spec(tmp_path: Path, prefix: str) -> Path:
    spec = tmp_path / "fleet.yaml"
    spec.write_text(
        textwrap.dedent(
            f"""\
            version: 1
            vault: {{mount: secret, prefix: {prefix}}}
            subaccounts:
              - name: main
                master: true
                venue: spot
                processes:
                  - {{name: treasury, role: treasury, image: "acme/treasury:1.0", allow_withdrawals: true,
                      permissions: [query-funds, deposit-funds, withdraw-funds]}}
              - name: momentum
                venue: futures
                processes:
                  - {{name: executor, role: trader, image: "acme/momentum:1.0", permissions: [general-full]}}
                  - {{name: feed, role: market-data, image: "acme/feed:1.0"}}
            """
        )
    )
    return spec


# =========================================================================== register


def test_register_reads_two_lines_of_stdin(
    vault_env: dict[str, str], openbao: OpenBao, vault_prefix: str
) -> None:
    material = new_material()
    result = register(vault_prefix, "momentum/executor", material)
    assert result.exit_code == EXIT_OK, result.output
    fingerprint = fingerprint_of(material.api_key)
    assert result.stdout == (
        f"registered secret/{vault_prefix}/momentum/executor version 1 for momentum/executor "
        f"(futures: general-full), fingerprint {fingerprint[:12]}\n"
    )
    assert result.stderr == ""
    custom = metadata(openbao, f"{vault_prefix}/momentum/executor")["custom_metadata"]
    assert custom["fingerprint"] == fingerprint
    assert (custom["subaccount"], custom["venue"], custom["permissions"]) == (
        "momentum",
        "futures",
        "general-full",
    )
    data = openbao.client.secrets.kv.v2.read_secret_version(
        path=f"{vault_prefix}/momentum/executor", mount_point="secret", raise_on_deleted_version=True
    )["data"]["data"]
    assert data == {"api_key": material.api_key, "api_secret": material.api_secret}


def test_register_accepts_crlf_and_an_explicit_path(
    vault_env: dict[str, str], openbao: OpenBao, vault_prefix: str
) -> None:
    material = new_material()
    result = invoke(
        "register",
        "basis/feed",
        "--venue",
        "futures",
        "--permissions",
        "general-read",
        "--path",
        f"/{vault_prefix}//feeds/basis/",
        input=f"{material.api_key}\r\n{material.api_secret}\r\n",
    )
    assert result.exit_code == EXIT_OK, result.output
    assert f"registered secret/{vault_prefix}/feeds/basis version 1" in result.stdout


def test_register_with_spec_takes_venue_permissions_and_path(
    vault_env: dict[str, str], openbao: OpenBao, vault_prefix: str, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, vault_prefix)
    result = register_with_spec(spec, "main/treasury", new_material())
    assert result.exit_code == EXIT_OK, result.output
    assert "(spot: deposit-funds,query-funds,withdraw-funds)" in result.stdout
    refused = register_with_spec(spec, "momentum/feed", new_material(), "--permissions", "general-full")
    assert refused.exit_code == EXIT_VIOLATION
    assert "market-data" in refused.stderr and "general-full" in refused.stderr
    unknown = register_with_spec(spec, "momentum/ghost", new_material(), "--permissions", "general-full")
    assert unknown.exit_code == EXIT_INVALID
    assert "no process momentum/ghost in the spec" in unknown.stderr
    assert stored_paths(openbao, f"{vault_prefix}/momentum") == []


GOOD_SECRET = base64.b64encode(b"a perfectly fine secret").decode()


@pytest.mark.parametrize(
    ("args", "stdin", "fragment"),
    [
        ((), "", "expected two lines on standard input, the api key and then the api secret; got 0"),
        ((), "ONLYAKEY\n", "got 1"),
        ((), f"KEY\n{GOOD_SECRET}\nTHIRD\n", "got 3"),
        ((), f"\n{GOOD_SECRET}\n", "the api key is empty"),
        ((), "KEY\n\n", "got 1"),
        ((), f"KEY WITH BLANKS\n{GOOD_SECRET}\n", "the api key contains whitespace"),
        ((), f" KEY\n{GOOD_SECRET}\n", "the api key contains whitespace"),
        ((), "KEY\nnot-base64!\n", "the api secret is not valid base64"),
        ((), "KEY\nc2VjcmV0c\n", "the api secret is not valid base64"),
        (
            ("--permissions", "query-funds"),
            f"KEY\n{GOOD_SECRET}\n",
            "'query-funds' is not a futures permission id",
        ),
        (("--permissions", ","), f"KEY\n{GOOD_SECRET}\n", "--permissions is empty"),
        (("--path", "a/../b"), f"KEY\n{GOOD_SECRET}\n", "Vault paths cannot climb directories"),
    ],
)
def test_invalid_input_exits_2_and_writes_nothing(
    vault_env: dict[str, str],
    openbao: OpenBao,
    vault_prefix: str,
    args: tuple[str, ...],
    stdin: str,
    fragment: str,
) -> None:
    options = {"--venue": "futures", "--permissions": "general-full"}
    for name, value in zip(args[::2], args[1::2], strict=True):
        options[name] = value
    argv = [item for pair in options.items() for item in pair]
    result = invoke("register", "momentum/executor", "--prefix", vault_prefix, *argv, input=stdin)
    assert result.exit_code == EXIT_INVALID, result.output
    assert fragment in result.stderr
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.output
    assert stored_paths(openbao, vault_prefix) == []
    for secret_line in stdin.split("\n"):
        if len(secret_line.strip()) > 4:
            assert secret_line.strip() not in result.output


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("Momentum/executor", "not a DNS-1123 label"),
        ("momentum", "is not SUBACCOUNT/PROCESS"),
        ("momentum/exec/utor", "is not SUBACCOUNT/PROCESS"),
        ("momentum/-executor", "not a DNS-1123 label"),
    ],
)
def test_bad_names_exit_2(vault_env: dict[str, str], vault_prefix: str, name: str, fragment: str) -> None:
    result = register(vault_prefix, name, new_material())
    assert result.exit_code == EXIT_INVALID
    assert fragment in result.stderr


def test_bad_venue_is_a_usage_error(vault_env: dict[str, str], vault_prefix: str) -> None:
    result = invoke(
        "register", "a/b", "--venue", "margin", "--permissions", "x", "--prefix", vault_prefix, input="K\nS\n"
    )
    assert result.exit_code == EXIT_INVALID
    assert "margin" in result.output


def test_same_key_under_another_path_is_refused(
    vault_env: dict[str, str], openbao: OpenBao, vault_prefix: str
) -> None:
    material = new_material()
    assert register(vault_prefix, "momentum/executor", material).exit_code == EXIT_OK
    result = register(vault_prefix, "basis/executor", material)
    assert result.exit_code == EXIT_VIOLATION
    assert f"already registered at secret/{vault_prefix}/momentum/executor" in result.stderr
    assert result.stdout == ""
    assert stored_paths(openbao, vault_prefix) == ["momentum/"]


def test_existing_path_needs_rotate_and_rotate_bumps_the_version(
    vault_env: dict[str, str], openbao: OpenBao, vault_prefix: str
) -> None:
    path = f"{vault_prefix}/momentum/executor"
    assert register(vault_prefix, "momentum/executor", new_material()).exit_code == EXIT_OK
    before = metadata(openbao, path)["custom_metadata"]

    again = register(vault_prefix, "momentum/executor", new_material())
    assert again.exit_code == EXIT_VIOLATION
    assert f"secret/{path} is already registered (version 1); use --rotate" in again.stderr

    replacement = new_material()
    rotated = invoke(
        "register",
        "momentum/executor",
        "--prefix",
        vault_prefix,
        "--venue",
        "futures",
        "--permissions",
        "general-read",
        "--rotate",
        input=stdin_for(replacement),
    )
    assert rotated.exit_code == EXIT_OK, rotated.output
    assert f"rotated secret/{path} from version 1 to version 2" in rotated.stdout
    meta = metadata(openbao, path)
    assert meta["current_version"] == 2
    after = meta["custom_metadata"]
    assert after["fingerprint"] == fingerprint_of(replacement.api_key) != before["fingerprint"]
    assert after["permissions"] == "general-read"
    assert after["registered_at"] >= before["registered_at"]
    assert meta["cas_required"] is True


BARRIER_SHIM = """
import os, sys, time
from pathlib import Path
import keyfence.vault as vault

real_write = vault.KV2Client.write_key

def write_when_both_are_ready(self, *args, **kwargs):
    # Both processes have read the path (nothing there) before either writes.
    here = Path(os.environ["KEYFENCE_TEST_BARRIER"])
    (here / str(os.getpid())).touch()
    deadline = time.monotonic() + 60
    while len(list(here.iterdir())) < 2:
        if time.monotonic() > deadline:
            raise SystemExit("barrier: the other registration never arrived")
        time.sleep(0.01)
    return real_write(self, *args, **kwargs)

vault.KV2Client.write_key = write_when_both_are_ready
from keyfence.cli.app import main
sys.exit(main())
"""


def test_concurrent_registrations_of_one_new_path_exactly_one_wins(
    vault_env: dict[str, str], openbao: OpenBao, vault_prefix: str, tmp_path: Path
) -> None:
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    env = {**os.environ, "KEYFENCE_TEST_BARRIER": str(barrier), "PYTHONPATH": str(ROOT)}
    argv = [
        sys.executable,
        "-c",
        BARRIER_SHIM,
        "keys",
        "register",
        "momentum/executor",
        "--prefix",
        vault_prefix,
        "--venue",
        "futures",
        "--permissions",
        "general-full",
    ]
    materials = [new_material(), new_material()]
    # Each key comes from its own file, so neither process waits on the test to feed it: each
    # blocks only at the barrier, until the other has read the path too.
    inputs = []
    for index, material in enumerate(materials):
        (tmp_path / f"key{index}").write_text(stdin_for(material))
        inputs.append(open(tmp_path / f"key{index}"))  # noqa: SIM115 - closed below
    try:
        procs = [
            subprocess.Popen(
                argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
                cwd=ROOT,
            )
            for stdin in inputs
        ]
        outcomes = [proc.communicate(timeout=120) for proc in procs]
    finally:
        for handle in inputs:
            handle.close()
    for out, err in outcomes:
        assert_no_material(out + err)
    codes = sorted(proc.returncode for proc in procs)
    assert codes == [EXIT_OK, EXIT_VIOLATION], outcomes
    loser = next(
        err for proc, (_, err) in zip(procs, outcomes, strict=True) if proc.returncode == EXIT_VIOLATION
    )
    assert "changed concurrently (check-and-set expected no key there yet)" in loser
    winner = next(m for proc, m in zip(procs, materials, strict=True) if proc.returncode == EXIT_OK)
    meta = metadata(openbao, f"{vault_prefix}/momentum/executor")
    assert meta["current_version"] == 1
    assert meta["custom_metadata"]["fingerprint"] == fingerprint_of(winner.api_key)


# =========================================================================== revoke


def test_revoke_with_yes(vault_env: dict[str, str], openbao: OpenBao, vault_prefix: str) -> None:
    material = new_material()
    register(vault_prefix, "momentum/executor", material)
    result = invoke("revoke", "momentum/executor", "--prefix", vault_prefix, "--yes")
    assert result.exit_code == EXIT_OK, result.output
    assert result.stdout.startswith(
        f"revoked secret/{vault_prefix}/momentum/executor: destroyed 1 version(s) and the metadata, "
        f"fingerprint {fingerprint_of(material.api_key)[:12]}"
    )
    assert stored_paths(openbao, vault_prefix) == []


def test_revoke_without_yes_and_no_terminal_exits_2(
    vault_env: dict[str, str], openbao: OpenBao, vault_prefix: str
) -> None:
    register(vault_prefix, "momentum/executor", new_material())
    result = invoke("revoke", "momentum/executor", "--prefix", vault_prefix)
    assert result.exit_code == EXIT_INVALID
    assert "pass --yes to confirm" in result.stderr
    assert stored_paths(openbao, vault_prefix) == ["momentum/"]


@pytest.mark.parametrize(
    ("answer", "code", "left"), [("n\n", EXIT_VIOLATION, ["momentum/"]), ("y\n", EXIT_OK, [])]
)
def test_revoke_asks_on_a_terminal(
    vault_env: dict[str, str],
    openbao: OpenBao,
    vault_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    answer: str,
    code: int,
    left: list[str],
) -> None:
    register(vault_prefix, "momentum/executor", new_material())
    monkeypatch.setattr(keys_cli, "_stdin_is_terminal", lambda: True)
    result = invoke("revoke", "momentum/executor", "--prefix", vault_prefix, input=answer)
    assert result.exit_code == code, result.output
    assert f"Destroy every version of secret/{vault_prefix}/momentum/executor (version 1" in result.stderr
    assert stored_paths(openbao, vault_prefix) == left


def test_revoke_of_a_missing_key_names_the_path(vault_env: dict[str, str], vault_prefix: str) -> None:
    result = invoke("revoke", "momentum/executor", "--prefix", vault_prefix, "--yes")
    assert result.exit_code == EXIT_INVALID
    assert f"secret/{vault_prefix}/momentum/executor: no key is stored here" in result.stderr


# =========================================================================== list


def broken_fleet(openbao: OpenBao, spec: Path, prefix: str) -> KeyMaterial:
    """treasury registered, executor holding a hand-made copy of it, feed missing, one stray key."""
    shared = new_material()
    assert register_with_spec(spec, "main/treasury", shared).exit_code == EXIT_OK
    custom = metadata(openbao, f"{prefix}/main/treasury")["custom_metadata"]
    openbao.put_key(f"{prefix}/momentum/executor", shared.api_key, shared.api_secret, custom_metadata=custom)
    assert register(prefix, "old/bot", new_material()).exit_code == EXIT_OK
    return shared


def test_list_json_cross_checks_the_spec(
    vault_env: dict[str, str], openbao: OpenBao, vault_prefix: str, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, vault_prefix)
    shared = broken_fleet(openbao, spec, vault_prefix)
    result = invoke("list", "--spec", str(spec), "--format", "json")
    assert result.exit_code == EXIT_VIOLATION, result.output
    report = json.loads(result.stdout)
    assert set(report) == {
        "mount",
        "prefix",
        "spec",
        "keys",
        "unused",
        "missing",
        "duplicates",
        "problems",
        "repaired",
        "ledger",
    }
    assert (report["mount"], report["prefix"], report["spec"]) == ("secret", vault_prefix, str(spec))
    assert [k["path"] for k in report["keys"]] == [
        f"{vault_prefix}/main/treasury",
        f"{vault_prefix}/momentum/executor",
        f"{vault_prefix}/old/bot",
    ]
    treasury = report["keys"][0]
    assert set(treasury) == {
        "path",
        "subaccount",
        "process",
        "venue",
        "fingerprint",
        "version",
        "permissions",
        "registered_at",
        "updated_time",
        "status",
        "used_by",
        "holder",
    }
    assert treasury["holder"] == "nobody"
    # The hand-made copy is also a ledger problem: the record names the treasury's path.
    assert [p["path"] for p in report["problems"]] == [f"{vault_prefix}/momentum/executor"]
    assert treasury["fingerprint"] == fingerprint_of(shared.api_key)
    assert treasury["permissions"] == ["deposit-funds", "query-funds", "withdraw-funds"]
    assert (treasury["version"], treasury["status"], treasury["used_by"]) == (1, "ok", "main/treasury")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", treasury["updated_time"])
    assert report["unused"] == [f"{vault_prefix}/old/bot"]
    assert report["missing"] == [
        {
            "process": "momentum/feed",
            "path": f"{vault_prefix}/momentum/feed",
            "reason": "no key is stored at its path",
        }
    ]
    assert report["duplicates"] == [
        {
            "fingerprint": fingerprint_of(shared.api_key),
            "paths": [f"{vault_prefix}/main/treasury", f"{vault_prefix}/momentum/executor"],
        }
    ]


def test_list_text_cross_checks_the_spec(
    vault_env: dict[str, str], openbao: OpenBao, vault_prefix: str, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, vault_prefix)
    shared = broken_fleet(openbao, spec, vault_prefix)
    result = invoke("list", "--spec", str(spec))
    assert result.exit_code == EXIT_VIOLATION
    out = result.stdout
    assert out.startswith(f"keys under secret/{vault_prefix}:\n  SUBACCOUNT  PROCESS")
    assert f"  main        treasury  {vault_prefix}/main/treasury" in out
    assert f"unused (stored, used by no process of {spec}): 1\n  secret/{vault_prefix}/old/bot\n" in out
    assert f"  momentum/feed: secret/{vault_prefix}/momentum/feed: no key is stored at its path\n" in out
    assert (
        f"  fingerprint {fingerprint_of(shared.api_key)[:12]}: secret/{vault_prefix}/main/treasury, "
        f"secret/{vault_prefix}/momentum/executor\n"
    ) in out
    assert out.endswith(
        "NOT CLEAN: 3 keys under secret/" + vault_prefix + "; 1 key(s) stored under several paths; "
        "1 process(es) without a key; 1 identity or ledger problem(s)\n"
    )
    assert result.stderr == ""


def test_list_clean_fleet_exits_0(
    vault_env: dict[str, str], openbao: OpenBao, vault_prefix: str, tmp_path: Path
) -> None:
    spec = write_spec(tmp_path, vault_prefix)
    for name in ("main/treasury", "momentum/executor"):
        assert register_with_spec(spec, name, new_material()).exit_code == EXIT_OK
    feed = register_with_spec(spec, "momentum/feed", new_material(), "--permissions", "general-read")
    assert feed.exit_code == EXIT_OK, feed.output
    text = invoke("list", "--spec", str(spec))
    assert text.exit_code == EXIT_OK, text.output
    assert text.stdout.endswith(
        f"clean: 3 keys under secret/{vault_prefix}; every process of {spec} has its own key\n"
    )
    plain = invoke("list", "--prefix", vault_prefix, "--format", "json")
    assert plain.exit_code == EXIT_OK
    assert json.loads(plain.stdout)["missing"] == [] and len(json.loads(plain.stdout)["keys"]) == 3


def test_list_of_an_empty_prefix(vault_env: dict[str, str], vault_prefix: str) -> None:
    result = invoke("list", "--prefix", vault_prefix)
    assert result.exit_code == EXIT_OK
    assert "  (none)" in result.stdout


# =========================================================================== permissions (403)


def test_register_without_write_capability_names_it(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = openbao.token(
        f'path "secret/metadata/{vault_prefix}/*" {{ capabilities = ["read", "list"] }}\n'
        'path "secret/data/keyfence/ledger/*" { capabilities = ["create", "read", "update"] }\n'
        'path "secret/metadata/keyfence/ledger/*" { capabilities = ["delete"] }'
    )
    monkeypatch.setenv("VAULT_TOKEN", token)
    result = register(vault_prefix, "momentum/executor", new_material())
    assert result.exit_code == EXIT_INVALID
    assert f"the 'create' capability on 'secret/data/{vault_prefix}/momentum/executor'" in result.stderr
    assert f"secret/{vault_prefix}/momentum/executor" in result.stderr


@pytest.mark.parametrize(
    ("granted", "missing"),
    [
        # No write on the key's data path: the token could never store the key.
        (
            'path "secret/metadata/{p}/*" {{ capabilities = ["read", "list", "update"] }}\n'
            'path "secret/data/keyfence/ledger/*" {{ capabilities = ["create", "read", "update"] }}',
            "'create' capability on 'secret/data/{p}/momentum/executor'",
        ),
        # Metadata read and list only (the CI policy): no ledger and no write anywhere.
        (
            'path "secret/metadata/*" {{ capabilities = ["read", "list"] }}',
            "'create' capability on 'secret/data/{p}/momentum/executor'",
        ),
        # Everything but the key ledger.
        (
            'path "secret/metadata/{p}/*" {{ capabilities = ["read", "list", "update"] }}\n'
            'path "secret/data/{p}/*" {{ capabilities = ["create", "update"] }}',
            "'create' capability on 'secret/data/keyfence/ledger/",
        ),
    ],
    ids=["no-data-write", "ci-metadata-only", "no-ledger"],
)
def test_register_checks_the_tokens_capabilities_before_asking_for_the_key(
    openbao: OpenBao,
    vault_env: dict[str, str],
    vault_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    granted: str,
    missing: str,
) -> None:
    """Nobody pastes an exchange secret into a command whose token was never going to store it."""
    monkeypatch.setenv("VAULT_TOKEN", openbao.token(granted.format(p=vault_prefix)))
    result = invoke(
        "register", "momentum/executor", "--prefix", vault_prefix, "--venue", "futures",
        "--permissions", "general-full", input="",
    )  # fmt: skip
    assert result.exit_code == EXIT_INVALID
    assert "expected two lines" not in result.stderr, "refused only after asking for the key"
    assert missing.format(p=vault_prefix) in result.stderr
    assert "key-admin.hcl" in result.stderr and "nothing was asked for or written" in result.stderr
    assert stored_paths(openbao, vault_prefix) == []


def test_list_without_list_capability_names_it(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = openbao.token(f'path "secret/metadata/{vault_prefix}/*" {{ capabilities = ["read"] }}')
    monkeypatch.setenv("VAULT_TOKEN", token)
    result = invoke("list", "--prefix", vault_prefix)
    assert result.exit_code == EXIT_INVALID
    # list looks for copies in the whole mount, so it lists from the mount's root.
    assert "the 'list' capability on 'secret/metadata/'" in result.stderr


def test_revoke_without_delete_capability_names_it(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    register(vault_prefix, "momentum/executor", new_material())
    token = openbao.token(
        f'path "secret/metadata/{vault_prefix}/*" {{ capabilities = ["read", "list"] }}\n'
        'path "secret/data/keyfence/ledger/*" { capabilities = ["read"] }'
    )
    monkeypatch.setenv("VAULT_TOKEN", token)
    result = invoke("revoke", "momentum/executor", "--prefix", vault_prefix, "--yes")
    assert result.exit_code == EXIT_INVALID
    assert f"'delete' capability on 'secret/metadata/{vault_prefix}/momentum/executor'" in result.stderr


def test_no_vault_settings_is_exit_2(monkeypatch: pytest.MonkeyPatch, vault_prefix: str) -> None:
    for name in list(os.environ):
        if name.startswith(("VAULT_", "KEYFENCE_VAULT_")):
            monkeypatch.delenv(name)
    result = register(vault_prefix, "momentum/executor", new_material())
    assert result.exit_code == EXIT_INVALID
    assert "VAULT_ADDR is not set" in result.stderr


# =========================================================================== terminals


def test_terminal_input_uses_no_echo_prompts(monkeypatch: pytest.MonkeyPatch) -> None:
    material = new_material()
    prompts: list[str] = []
    answers = iter([material.api_key, material.api_secret])

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(answers)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    monkeypatch.setattr(keys_cli.getpass, "getpass", fake_getpass)
    assert keys_cli.read_material(Terminal()) == (material.api_key, material.api_secret)
    assert prompts == ["API key: ", "API secret: "]


def test_oversized_stdin_is_refused() -> None:
    with pytest.raises(KeyInputError, match="over 64 KiB"):
        keys_cli.read_material(io.StringIO("K" * (65 * 1024)))


def test_progress_only_on_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(keys_cli._progress(), NoProgress)  # pytest captures stderr: not a terminal
    sink = io.StringIO()
    console = Console(file=sink, force_terminal=True, height=5, width=80)
    progress = keys_cli._TerminalProgress(console)
    progress.begin("reading 3 keys", 3)  # fits the screen: nothing drawn
    progress.step()
    progress.end()
    assert sink.getvalue() == ""
    progress.begin("reading 40 keys", 40)
    for _ in range(40):
        progress.step()
    progress.end()
    assert "reading 40 keys" in sink.getvalue()


def test_piped_output_is_plain(vault_env: dict[str, str], vault_prefix: str) -> None:
    """No escape codes, progress bars or prompts when stdout and stderr are pipes."""
    register(vault_prefix, "momentum/executor", new_material())
    for args in (
        ("list", "--prefix", vault_prefix),
        ("revoke", "momentum/executor", "--prefix", vault_prefix, "-y"),
    ):
        result = invoke(*args)
        assert result.exit_code == EXIT_OK
        assert "\x1b[" not in result.output
        assert result.stderr == ""


def test_the_documented_key_admin_policy_is_enough(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """docs/vault-policies/key-admin.hcl, adapted to the prefix as it says: no read on material needed."""
    policy = (
        (ROOT / "docs" / "vault-policies" / "key-admin.hcl")
        .read_text()
        .replace("kraken/", f"{vault_prefix}/")
    )
    monkeypatch.setenv("VAULT_TOKEN", openbao.token(policy))
    material = new_material()
    assert register(vault_prefix, "momentum/executor", material).exit_code == EXIT_OK
    assert register(vault_prefix, "basis/executor", material).exit_code == EXIT_VIOLATION
    rotated = register(vault_prefix, "momentum/executor", new_material(), "--rotate")
    assert rotated.exit_code == EXIT_OK, rotated.output
    listed = invoke("list", "--prefix", vault_prefix, "--format", "json")
    assert listed.exit_code == EXIT_OK, listed.output
    assert [k["version"] for k in json.loads(listed.stdout)["keys"]] == [2]
    revoked = invoke("revoke", "momentum/executor", "--prefix", vault_prefix, "--yes")
    assert revoked.exit_code == EXIT_OK, revoked.output
    assert stored_paths(openbao, vault_prefix) == []
