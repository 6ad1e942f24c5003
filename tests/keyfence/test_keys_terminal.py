"""``keyfence keys`` and Vault advice against a real OpenBao, prompts through a real terminal (pty)."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keyfence.cli.app import app
from keyfence.errors import EXIT_INVALID, EXIT_OK, EXIT_VIOLATION
from tests.openbao import OpenBao

pytestmark = pytest.mark.vault

ROOT = Path(__file__).resolve().parents[2]
KEYFENCE = str(Path(sys.executable).parent / "keyfence")
SCRIPT = shutil.which("script")
needs_pty = pytest.mark.skipif(SCRIPT is None, reason="needs script(1) for a pseudo-terminal")


def on_terminal(
    args: list[str], env: dict[str, str], keystrokes: bytes
) -> subprocess.CompletedProcess[bytes]:
    """``keyfence ARGS`` on a pty; ``keystrokes`` are typed at it (``\\x04`` is Ctrl-D)."""
    assert SCRIPT
    command = " ".join([KEYFENCE, *args])
    return subprocess.run(
        [SCRIPT, "-qec", command, "/dev/null"],
        input=keystrokes,
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        timeout=120,
        check=False,
    )


def vault_env(openbao: OpenBao, token: str | None = None) -> dict[str, str]:
    return {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": token or openbao.root_token}


def answer_prompt(args: list[str], env: dict[str, str], prompt: bytes, keystrokes: bytes) -> tuple[int, str]:
    """``keyfence ARGS`` on a real pty; ``keystrokes`` are typed once ``prompt`` is on screen.

    Typing earlier would race: getpass flushes pending input when it turns echo off.
    """
    primary, secondary = pty.openpty()
    process = subprocess.Popen(
        [KEYFENCE, *args],
        stdin=secondary,
        stdout=secondary,
        stderr=secondary,
        cwd=ROOT,
        env={**os.environ, **env},
        start_new_session=True,
    )
    os.close(secondary)
    screen = b""
    typed = False
    try:
        while True:
            ready, _, _ = select.select([primary], [], [], 120)
            if not ready:
                raise AssertionError(f"no progress on the terminal; screen so far: {screen!r}")
            try:
                chunk = os.read(primary, 4096)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            screen += chunk
            if not typed and prompt in screen:
                os.write(primary, keystrokes)
                typed = True
        return process.wait(timeout=120), screen.decode(errors="replace")
    finally:
        os.close(primary)
        if process.poll() is None:
            process.kill()


def test_ctrl_d_at_the_prompt_ends_cleanly(openbao: OpenBao, vault_prefix: str) -> None:
    args = ["keys", "register", "momentum/executor", "--venue", "futures", "--permissions", "general-full"]
    code, out = answer_prompt([*args, "--prefix", vault_prefix], vault_env(openbao), b"API key:", b"\x04")
    assert "API key:" in out
    assert "no key entered" in out and "nothing was written" in out
    assert "internal error" not in out and "EOFError" not in out and "Traceback" not in out
    assert code == EXIT_INVALID


@needs_pty
@pytest.mark.parametrize("problem", ["bad-settings", "taken", "no-capability"])
def test_register_checks_vault_and_the_target_before_prompting(
    openbao: OpenBao, vault_prefix: str, problem: str
) -> None:
    args = [
        "keys",
        "register",
        "momentum/executor",
        "--venue",
        "futures",
        "--permissions",
        "general-full",
        "--prefix",
        vault_prefix,
    ]
    env = vault_env(openbao)
    if problem == "bad-settings":
        env["VAULT_ADDR"] = openbao.addr + "/v1"
    elif problem == "taken":
        openbao.client.secrets.kv.v2.create_or_update_secret(
            path=f"{vault_prefix}/momentum/executor",
            secret={"api_key": "a", "api_secret": "b"},
            mount_point="secret",
        )
    else:
        env["VAULT_TOKEN"] = openbao.token(
            f'path "secret/data/{vault_prefix}/*" {{ capabilities = ["create"] }}'
        )
    done = on_terminal(args, env, b"")
    out = done.stdout.decode(errors="replace")
    assert "API key:" not in out, "asked for a secret before checking Vault and the target"
    assert done.returncode == (EXIT_VIOLATION if problem == "taken" else EXIT_INVALID), out
    if problem == "bad-settings":
        assert "includes the API path /v1" in out
    elif problem == "taken":
        assert "already registered" in out and "--rotate" in out
    else:
        assert "capability" in out


def test_list_outside_a_project_names_the_prefix_it_searched(
    openbao: OpenBao, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, value in vault_env(openbao).items():
        monkeypatch.setenv(name, value)
    # Metadata anywhere in the mount, and the key ledger's records (other tests may have written some).
    monkeypatch.setenv(
        "VAULT_TOKEN",
        openbao.token(
            'path "secret/metadata/*" { capabilities = ["list", "read"] }\n'
            'path "secret/data/keyfence/ledger/*" { capabilities = ["read"] }'
        ),
    )
    # A prefix nobody used: what 'no --prefix' means on a fresh Vault.
    result = CliRunner().invoke(app, ["keys", "list", "--mount", "secret", "--prefix", "nowhere-x"])
    assert result.exit_code == EXIT_OK
    assert "no keys found under secret/nowhere-x/" in result.stderr
    default = CliRunner().invoke(app, ["keys", "list"])
    if "no keys found" in default.stderr:
        assert (
            "secret/kraken/ (the default mount and prefix: no --spec, --mount or --prefix given)"
            in default.stderr
        )


def test_a_token_without_a_capability_is_not_called_expired(
    openbao: OpenBao, vault_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No 'default' policy either: it cannot look itself up, yet it is alive.
    token = openbao.token(
        'path "secret/data/elsewhere/*" { capabilities = ["read"] }', no_default_policy=True
    )
    monkeypatch.setenv("VAULT_ADDR", openbao.addr)
    monkeypatch.setenv("VAULT_TOKEN", token)
    result = CliRunner().invoke(app, ["keys", "list", "--prefix", vault_prefix])
    assert result.exit_code == EXIT_INVALID
    assert "'list' capability" in result.stderr
    assert "expired" not in result.stderr and "log in again" not in result.stderr
    monkeypatch.setenv("VAULT_TOKEN", "s.not-a-token-at-all")
    dead = CliRunner().invoke(app, ["keys", "list", "--prefix", vault_prefix])
    assert dead.exit_code == EXIT_INVALID and "rejected the token" in dead.stderr


def test_https_against_a_plain_http_server_says_so(
    openbao: OpenBao, vault_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_ADDR", openbao.addr.replace("http://", "https://"))
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    monkeypatch.setenv("KEYFENCE_VAULT_RETRIES", "1")
    result = CliRunner().invoke(app, ["keys", "list", "--prefix", vault_prefix])
    assert result.exit_code == EXIT_INVALID
    assert "answered in plain HTTP, not TLS" in result.stderr and "http://" in result.stderr
    assert "certificate" not in result.stderr
