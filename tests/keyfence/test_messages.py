"""Messages that name the real cause: spec errors for people, Vault advice, wrong-venue keys."""

from __future__ import annotations

import re

import pytest
from keyfence_policies import permissions as perms

from keyfence.errors import SpecError
from keyfence.spec import load_spec_text
from keyfence.vault import VaultSettings

BASE = """\
version: 1
subaccounts:
  - name: alpha
    venue: futures
    processes:
      - name: good
        role: trader
        image: ghcr.io/acme/good:1.0
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as err:
        load_spec_text(text, "fleet.yaml")
    return err.value.problems or [err.value.headline]


def test_an_unquoted_number_in_env_hides_nothing_and_each_error_has_its_own_line() -> None:
    env = "        env:\n          MAX_POS: 5\n          API_TOKEN: x\n          Z_SECRET: y\n"
    found = problems(BASE + env)
    assert len(found) == 3, found
    assert found[0].startswith("fleet.yaml:10:11:") and 'quote it, e.g. "5"' in found[0]
    assert found[1].startswith("fleet.yaml:11:11:") and "'API_TOKEN' looks like a credential" in found[1]
    assert found[2].startswith("fleet.yaml:12:11:") and "'Z_SECRET'" in found[2]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("version: 1\nsubaccounts:\n  - name: a\n    venue: spot\n  ? x\n", "does not fit the block above"),
        ("version: 1\nsubaccounts:\n  - name: a\n venue: spot\n", "does not fit the block above"),
        ("version: 1\nsubaccounts:\n\t- name: a\n", "tab character"),
        ("version: 1\nsubaccounts: [a, b\n", "not closed with ']'"),
        ("version: 1\nsubaccounts: *nowhere\n", "refers to no anchor"),
        ('version: 1\nsubaccounts: "open\n', "close the quote"),
        ("version: 1\nsubaccounts: a: b\n", "a ':' where YAML did not expect one"),
    ],
)
def test_yaml_parser_errors_are_phrased_for_a_person(text: str, words: str) -> None:
    (message,) = problems(text)
    assert words in message, message
    assert not re.search(r"<block|<stream|<flow|but found '", message), message


def test_wrong_types_never_name_python_classes() -> None:
    found = problems("version: 1\nsubaccounts:\n")
    assert "expected a list, got nothing" in found[0]
    for message in problems(BASE.replace("role: trader", "role: trader\n        args:\n        env: 3")):
        assert not re.search(r"NoneType|\bint\b|\bdict\b|\bstr\b", message), message


def test_vault_addr_with_the_api_path_is_refused_naming_the_fix() -> None:
    from keyfence.errors import KeyfenceError

    with pytest.raises(KeyfenceError) as err:
        VaultSettings.from_env({"VAULT_ADDR": "https://vault.example.com:8200/v1/", "VAULT_TOKEN": "t"})
    assert "includes the API path /v1" in str(err.value)
    assert "VAULT_ADDR=https://vault.example.com:8200)" in str(err.value)


@pytest.mark.parametrize(
    "addr",
    [
        "https://proxyuser:s3cretpw@vault.example.com:8200/v1/",
        "ftp://proxyuser:s3cretpw@vault.example.com",
        "https://proxyuser:s3cretpw@vault.example.com:port",
    ],
)
def test_a_password_in_vault_addr_is_never_shown_in_its_errors(addr: str) -> None:
    from keyfence.errors import KeyfenceError

    with pytest.raises(KeyfenceError) as err:
        VaultSettings.from_env({"VAULT_ADDR": addr, "VAULT_TOKEN": "t"})
    assert "s3cretpw" not in str(err.value) and "***@vault.example.com" in str(err.value)


def test_a_password_in_vault_addr_is_never_shown_when_vault_cannot_be_reached() -> None:
    import socket

    from keyfence.errors import KeyfenceError
    from keyfence.vault import connect

    with socket.socket() as probe:  # a loopback port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    settings = VaultSettings.from_env(
        {
            "VAULT_ADDR": f"http://proxyuser:s3cretpw@127.0.0.1:{port}",
            "VAULT_TOKEN": "t",
            "KEYFENCE_VAULT_RETRIES": "1",
            "KEYFENCE_VAULT_BACKOFF": "0",
        }
    )
    assert "s3cretpw" not in repr(settings)
    with pytest.raises(KeyfenceError) as err, connect(settings) as client:
        client.read_metadata("secret", "a/b")
    assert "s3cretpw" not in str(err.value) and f"***@127.0.0.1:{port}" in str(err.value)


def test_a_key_of_the_other_venue_is_not_called_a_typo() -> None:
    advice = perms.unknown_advice("spot", ["general-full"])
    assert "futures key on a spot process" in advice and "typo" not in advice
    assert "misspelt" in perms.unknown_advice("spot", ["query-fund"])
    found = problems(BASE.replace("role: trader", "role: trader\n        permissions: [query-funds]"))
    assert any("spot permissions: this is a spot key on a futures process" in p for p in found), found
