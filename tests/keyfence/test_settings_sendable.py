"""Settings an HTTP request to Vault cannot carry (a header value outside visible ASCII, an address
whose host or credentials cannot be encoded) are refused when read, naming the variable, never the
secret; nothing reaches http.client to fail there with a bare UnicodeEncodeError."""

from __future__ import annotations

from pathlib import Path

import pytest

from keyfence.errors import EXIT_INVALID, VaultError
from keyfence.vault import VaultSettings

CANARY = "CANARYTOKEN"
BASE = {"VAULT_ADDR": "https://vault.example.com:8200", "VAULT_TOKEN": "s.goodtoken"}

STRAY = {
    "non-latin-1": "\u20ac",
    "latin-1 but not ascii": "\u00e9",
    "typographic quote": "\u2019",
    "line break": "\n",
    "carriage return": "\r",
    "tab": "\t",
    "inner space": " ",
    "nul": "\x00",
    "escape": "\x1b",
    "delete": "\x7f",
    "zero-width space": "\u200b",
}
"""One of each kind of character a header value cannot carry, or that no Vault value holds."""

HEADER_AND_LOGIN_VARIABLES = {
    "VAULT_TOKEN": {},
    "VAULT_NAMESPACE": {},
    "KEYFENCE_VAULT_ROLE": {"KEYFENCE_VAULT_AUTH": "kubernetes", "KEYFENCE_VAULT_JWT": "ey.jwt.sig"},
    "KEYFENCE_VAULT_JWT": {"KEYFENCE_VAULT_AUTH": "jwt", "KEYFENCE_VAULT_ROLE": "deployer"},
    "KEYFENCE_VAULT_ROLE_ID": {"KEYFENCE_VAULT_AUTH": "approle"},
    "KEYFENCE_VAULT_SECRET_ID": {"KEYFENCE_VAULT_AUTH": "approle", "KEYFENCE_VAULT_ROLE_ID": "rid"},
}
SECRET_VARIABLES = {"VAULT_TOKEN", "KEYFENCE_VAULT_JWT", "KEYFENCE_VAULT_ROLE_ID", "KEYFENCE_VAULT_SECRET_ID"}


def refused(env: dict[str, str]) -> VaultError:
    with pytest.raises(VaultError) as err:
        VaultSettings.from_env(env)
    assert err.value.exit_code == EXIT_INVALID
    return err.value


@pytest.mark.parametrize("stray", list(STRAY.values()), ids=list(STRAY))
@pytest.mark.parametrize("variable", list(HEADER_AND_LOGIN_VARIABLES))
def test_a_value_with_a_stray_character_is_refused_naming_the_variable(variable: str, stray: str) -> None:
    env = {**BASE, **HEADER_AND_LOGIN_VARIABLES[variable], variable: f"s.{CANARY}{stray}tail"}
    error = refused(env)
    assert len(error.problems) == 1, error.problems
    assert error.problems[0].startswith(f"{variable} contains "), error.problems
    assert "set it again without the stray character" in str(error)
    if variable in SECRET_VARIABLES:
        assert CANARY not in str(error) and "tail" not in str(error)


def test_the_kind_of_character_is_named_and_a_namespace_shows_it() -> None:
    assert "a line break" in str(refused({**BASE, "VAULT_TOKEN": "s.a\nb"}))
    assert "a control character" in str(refused({**BASE, "VAULT_TOKEN": "s.a\x01b"}))
    assert "outside ASCII" in str(refused({**BASE, "VAULT_TOKEN": "s.a\u00a0b"}))
    namespace = str(refused({**BASE, "VAULT_NAMESPACE": "t\u00ebam"}))
    assert "'\u00eb' at position 2" in namespace


@pytest.mark.parametrize("stray", ["\u20ac", "\n", "\x00"], ids=["euro", "line-break", "nul"])
def test_a_credential_file_with_a_stray_character_is_refused_naming_the_file(
    tmp_path: Path, stray: str
) -> None:
    secret = tmp_path / "secret-id"
    secret.write_text(f"{CANARY}{stray}more\n", encoding="utf-8")
    error = refused(
        {
            **BASE,
            "KEYFENCE_VAULT_AUTH": "approle",
            "KEYFENCE_VAULT_ROLE_ID": "rid",
            "KEYFENCE_VAULT_SECRET_ID_FILE": str(secret),
        }
    )
    assert error.problems == [error.problems[0]] and f"KEYFENCE_VAULT_SECRET_ID_FILE={secret}" in str(error)
    assert CANARY not in str(error) and "more" not in str(error)


@pytest.mark.parametrize("field", ["token", "namespace", "role", "role_id", "secret_id", "jwt"])
def test_settings_made_in_code_are_checked_too(field: str) -> None:
    values = {"auth": "jwt", "role": "r", "jwt": "j", "token": "t", field: f"{CANARY}\u20ac"}
    with pytest.raises(VaultError) as err:
        VaultSettings(addr="http://127.0.0.1:8200", **values)  # type: ignore[arg-type]
    assert "outside ASCII" in str(err.value)
    if field != "namespace" and field != "role":
        assert CANARY not in str(err.value)


def test_a_non_ascii_host_is_sent_in_its_ascii_form() -> None:
    """What requests does to the host for the session path, done once so the pooled path sends the same."""
    settings = VaultSettings.from_env({**BASE, "VAULT_ADDR": "https://vault.b\u00fccher.example:8200/"})
    assert settings.addr == "https://vault.xn--bcher-kva.example:8200"
    made = VaultSettings(addr="http://b\u00fccher.example", token="t")
    assert made.addr == "http://xn--bcher-kva.example"


@pytest.mark.parametrize(
    ("addr", "fragment"),
    [
        ("https://\u2603.example:8200", "not a valid internationalised domain name"),
        ("https://b\u00fccher..example:8200", "not a valid internationalised domain name"),
        ("https://vault.example.com:8200\nX-Injected: 1", "contains whitespace"),
        ("https://vault.exa mple.com:8200", "contains whitespace"),
        ("https://vault.example.com\t:8200", "contains whitespace"),
        ("https://vault.example\x00.com:8200", "contains a control character"),
        ("https://[::1:8200", "not a URL"),
    ],
)
def test_an_address_that_cannot_be_sent_is_refused(addr: str, fragment: str) -> None:
    error = refused({**BASE, "VAULT_ADDR": addr})
    assert "VAULT_ADDR" in str(error) and fragment in str(error)


@pytest.mark.parametrize("userinfo", ["user:pa\u20acss", "\u20acuser:pass", "user:pa%E2%82%ACss"])
def test_proxy_credentials_basic_auth_cannot_carry_are_refused_unshown(userinfo: str) -> None:
    error = refused({**BASE, "VAULT_ADDR": f"https://{userinfo}@vault.example.com:8200"})
    assert "Basic authentication cannot carry" in str(error) and "***@vault.example.com" in str(error)
    assert "\u20ac" not in str(error) and "E2%82" not in str(error)


@pytest.mark.parametrize(
    "addr",
    [
        f"https://user:{CANARY}/pw@vault.example.com:8200",
        f"https://user:{CANARY}#pw@vault.example.com",
        f"https://user:{CANARY}?pw@vault.example.com",
        f"user:{CANARY}@vault.example.com:8200",
        f"https://user:{CANARY}@vault.example.com:99999",
        f"https://user:{CANARY}@@vault.example.com/v1",
    ],
    ids=["slash", "hash", "question-mark", "no-scheme", "bad-port", "double-at"],
)
def test_a_password_the_url_parser_reads_as_path_or_scheme_is_never_shown(addr: str) -> None:
    """A proxy password with an unencoded ``/``, ``#`` or ``?`` (or no scheme at all) ends the URL's
    authority early: the message must still hide everything before the last ``@``."""
    error = refused({**BASE, "VAULT_ADDR": addr})
    assert "VAULT_ADDR" in str(error) and "***@vault.example.com" in str(error)
    assert CANARY not in str(error) and CANARY not in repr(error.problems)
