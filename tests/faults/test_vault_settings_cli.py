"""Vault settings an HTTP request cannot carry, met where people meet them: ``keyfence check``, the
Pulumi program and ``keyfence keys``. One message naming the variable, exit 2, and never the token.

Before settings refused them, a token or namespace outside Latin-1 reached http.client on both HTTP
paths and ended as a bare UnicodeEncodeError.
"""

from __future__ import annotations

import pytest

from tests.faults.conftest import Fleet, Run, Surface, expect_failure, run_cli

pytestmark = pytest.mark.vault

CANARY_TOKEN = "s.CANARYTOKEN4f2a9"
"""expect_failure refuses any output that holds 'CANARY'."""
STRAY = ["\u20ac", "\u2019", "\n", "\x1b", "\u00e9"]
IDS = ["euro", "typographic-quote", "line-break", "escape", "latin-1-letter"]

COMMANDS = [
    ["keys", "list"],
    ["keys", "revoke", "momentum/executor", "--yes"],
    ["keys", "register", "momentum/new", "--venue", "futures", "--permissions", "general-read"],
]


def assert_token_unshown(run: Run) -> None:
    for text in (run.message, run.stdout):
        assert "CANARY" not in text and "4f2a9" not in text, text


@pytest.mark.parametrize("stray", STRAY, ids=IDS)
def test_a_token_http_cannot_carry(
    surface: Surface, fleet: Fleet, fault_env: pytest.MonkeyPatch, stray: str
) -> None:
    fault_env.setenv("VAULT_TOKEN", f"{CANARY_TOKEN}{stray}x")
    message = surface.fails(fleet.spec, "invalid Vault settings", "VAULT_TOKEN contains ", "set it again")
    assert "UnicodeEncodeError" not in message and "latin-1" not in message


@pytest.mark.parametrize("stray", STRAY, ids=IDS)
def test_a_namespace_http_cannot_carry(
    surface: Surface, fleet: Fleet, fault_env: pytest.MonkeyPatch, stray: str
) -> None:
    fault_env.setenv("VAULT_NAMESPACE", f"team{stray}a")
    surface.fails(fleet.spec, "VAULT_NAMESPACE contains ", "set it again")


@pytest.mark.parametrize("command", COMMANDS, ids=["list", "revoke", "register"])
@pytest.mark.parametrize("stray", STRAY[:3], ids=IDS[:3])
def test_keys_commands_refuse_the_token_without_showing_it(
    command: list[str], fleet: Fleet, fault_env: pytest.MonkeyPatch, stray: str
) -> None:
    fault_env.setenv("VAULT_TOKEN", f"{CANARY_TOKEN}{stray}x")
    stdin = "APIKEY-abc\nAPISECRET-def\n" if command[1] == "register" else None
    run = run_cli(*command, "--prefix", fleet.prefix, stdin=stdin)
    expect_failure(run, "VAULT_TOKEN contains ", "set it again")
    assert_token_unshown(run)


def test_an_address_whose_host_no_encoding_accepts(
    surface: Surface, fleet: Fleet, fault_env: pytest.MonkeyPatch
) -> None:
    fault_env.setenv("VAULT_ADDR", "http://\u2603.invalid:8200")
    surface.fails(fleet.spec, "VAULT_ADDR=", "not a valid internationalised domain name")


@pytest.mark.parametrize("stray", ["/", "#", "?"], ids=["slash", "hash", "question-mark"])
def test_a_proxy_password_that_ends_the_host_part_early_is_refused_unshown(
    surface: Surface, fleet: Fleet, fault_env: pytest.MonkeyPatch, stray: str
) -> None:
    fault_env.setenv("VAULT_ADDR", f"http://proxy:CANARYPW{stray}4f2a9@127.0.0.1:8200")
    surface.fails(fleet.spec, "VAULT_ADDR=", "***@127.0.0.1:8200", "percent-encode")
