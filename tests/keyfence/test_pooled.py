"""The hvac adapter that skips Session.request: TLS, proxies, hvac's own arguments and its fallbacks,
against the real OpenBao (through a proxy in front of it where TLS or a forward proxy is needed)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import hvac
import pytest

from keyfence.errors import VaultError
from keyfence.material import KeyMaterial
from keyfence.vault import VaultSettings, VaultUnavailableError, connect
from keyfence.vault.pooled import PooledAdapter
from tests.openbao import Fault, FlakyProxy, OpenBao

PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY")


@pytest.fixture
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for 127.0.0.1 and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a test certificate")
    where = tmp_path_factory.mktemp("tls")
    cert, key = where / "vault.pem", where / "vault-key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return str(cert), str(key)


@pytest.fixture
def tls_vault(openbao: OpenBao, certificate: tuple[str, str]) -> Iterator[FlakyProxy]:
    with FlakyProxy(openbao.addr, tls=certificate) as front:
        yield front


def settings(addr: str, token: str, **overrides: Any) -> VaultSettings:
    return VaultSettings(
        addr=addr, token=token, **{"timeout": 5.0, "retries": 2, "backoff": 0.1, **overrides}
    )


def test_the_client_uses_the_pooled_adapter(openbao: OpenBao, no_proxy_env: None) -> None:
    with connect(settings(openbao.addr, openbao.root_token)) as client:
        assert isinstance(client.hvac_client.adapter, PooledAdapter)


def test_tls_verified_with_the_ca_bundle(
    openbao: OpenBao,
    tls_vault: FlakyProxy,
    certificate: tuple[str, str],
    vault_prefix: str,
    no_proxy_env: None,
) -> None:
    secret = KeyMaterial(api_key=f"CANARYKEY-{vault_prefix}", api_secret=f"CANARYSECRET-{vault_prefix}")
    with connect(settings(tls_vault.addr, openbao.root_token, cacert=certificate[0])) as client:
        version = client.write_key("secret", f"{vault_prefix}/k", secret, cas=0)
        assert client.read_version("secret", f"{vault_prefix}/k", version) == secret
        assert client.read_record("secret", f"{vault_prefix}/absent") is None
    assert tls_vault.hits(f"/v1/secret/data/{vault_prefix}/k") == 2


def test_tls_refused_without_the_ca(
    openbao: OpenBao, tls_vault: FlakyProxy, vault_prefix: str, no_proxy_env: None
) -> None:
    with (
        connect(settings(tls_vault.addr, openbao.root_token)) as client,
        pytest.raises(VaultUnavailableError) as err,
    ):
        client.read_record("secret", f"{vault_prefix}/k")
    assert "certificate is not trusted" in str(err.value) and "VAULT_CACERT" in str(err.value)
    assert tls_vault.hits("/v1/") == 0


def test_plain_http_client_on_a_tls_port_is_named(
    openbao: OpenBao, tls_vault: FlakyProxy, vault_prefix: str, no_proxy_env: None
) -> None:
    plain = tls_vault.addr.replace("https://", "http://")
    with connect(settings(plain, openbao.root_token)) as client, pytest.raises(VaultUnavailableError) as err:
        client.read_record("secret", f"{vault_prefix}/k")
    assert f"Vault at {plain}" in str(err.value)


def test_proxy_from_the_environment(
    openbao: OpenBao, vault_prefix: str, no_proxy_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    openbao.put_data(f"{vault_prefix}/rec", {"path": "x"})
    with FlakyProxy(openbao.addr) as forward:
        monkeypatch.setenv("HTTP_PROXY", forward.addr)
        with connect(settings(openbao.addr, openbao.root_token)) as client:
            assert client.read_record("secret", f"{vault_prefix}/rec") == ({"path": "x"}, 1)
        # A forward proxy is sent the whole URL, and it is the proxy that reached Vault.
        assert any(
            path.startswith(f"{openbao.addr}/v1/secret/data/{vault_prefix}/rec") for _, path in forward.seen
        )


def test_no_proxy_is_honoured(
    openbao: OpenBao, vault_prefix: str, no_proxy_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    openbao.put_data(f"{vault_prefix}/rec", {"path": "x"})
    with FlakyProxy(openbao.addr) as forward:
        monkeypatch.setenv("HTTP_PROXY", forward.addr)
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        with connect(settings(openbao.addr, openbao.root_token)) as client:
            assert client.read_record("secret", f"{vault_prefix}/rec") == ({"path": "x"}, 1)
        assert forward.seen == []


def test_hvac_arguments_still_reach_vault(openbao: OpenBao, vault_prefix: str, no_proxy_env: None) -> None:
    """Query parameters, a wrapping TTL, a LIST and a raw (non-JSON-dict) answer all go through."""
    openbao.put_data(f"{vault_prefix}/v", {"n": "1"})
    openbao.put_data(f"{vault_prefix}/v", {"n": "2"})
    with connect(settings(openbao.addr, openbao.root_token)) as client:
        kv2 = client.hvac_client.secrets.kv.v2
        first = kv2.read_secret_version(path=f"{vault_prefix}/v", version=1, raise_on_deleted_version=True)
        assert first["data"]["data"] == {"n": "1"}
        assert kv2.list_secrets(path=vault_prefix)["data"]["keys"] == ["v"]
        wrapped = client.hvac_client.auth.token.create(policies=["default"], ttl="5m", wrap_ttl="60s")
        assert wrapped["wrap_info"]["ttl"] == 60
        deleted = kv2.delete_latest_version_of_secret(path=f"{vault_prefix}/v")
        assert deleted.status_code == 204
        with pytest.raises(hvac.exceptions.InvalidPath):
            kv2.read_secret_metadata(path=f"{vault_prefix}/missing")


def test_a_closed_session_reopens_its_pool(openbao: OpenBao, vault_prefix: str, no_proxy_env: None) -> None:
    openbao.put_data(f"{vault_prefix}/rec", {"path": "x"})
    with connect(settings(openbao.addr, openbao.root_token)) as client:
        assert client.read_record("secret", f"{vault_prefix}/rec") is not None
        client.session.get_adapter(openbao.addr).close()
        assert client.read_record("secret", f"{vault_prefix}/rec") is not None


def test_an_unexpected_argument_goes_through_the_session(openbao: OpenBao, no_proxy_env: None) -> None:
    with connect(settings(openbao.addr, openbao.root_token)) as client:
        seen: list[int] = []
        client.session.hooks["response"].append(lambda response, *a, **k: seen.append(response.status_code))
        answer = client.hvac_client.adapter.get("/v1/sys/health", stream=False)
        assert answer["initialized"] is True and seen == [200]


def test_scrubbed_errors_through_the_adapter(openbao: OpenBao, no_proxy_env: None) -> None:
    """A refused token's error names the address and path, never the token."""
    token = "s.CANARYTOKEN-pooled"
    with connect(settings(openbao.addr, token)) as client, pytest.raises(VaultUnavailableError) as err:
        client.read_record("secret", "pooled/k")
    assert token not in str(err.value) and "secret/pooled/k" in str(err.value)


def test_a_redirect_costs_one_send_and_the_follow_up(
    openbao: OpenBao, vault_prefix: str, no_proxy_env: None
) -> None:
    """A standby's 307 is followed from the answer in hand: the standby sees the request once, the
    active node once, and the session's hooks see both answers."""
    openbao.put_data(f"{vault_prefix}/rec", {"path": "x"})
    path = f"/v1/secret/data/{vault_prefix}/rec"
    with FlakyProxy(openbao.addr) as active, FlakyProxy(openbao.addr) as standby:
        standby.script = [Fault(307, location=active.addr)]
        with connect(settings(standby.addr, openbao.root_token)) as client:
            seen: list[int] = []
            client.session.hooks["response"].append(lambda answer, *a, **k: seen.append(answer.status_code))
            assert client.read_record("secret", f"{vault_prefix}/rec") == ({"path": "x"}, 1)
            assert seen == [307, 200]
        assert (standby.hits(path), active.hits(path)) == (1, 1) and standby.script == []


def test_a_redirected_write_keeps_its_method_and_body_once(
    openbao: OpenBao, vault_prefix: str, no_proxy_env: None
) -> None:
    """307 keeps a write a write (requests' policy); it lands once, and the standby never saw it twice."""
    path = f"/v1/secret/data/{vault_prefix}/written"
    with FlakyProxy(openbao.addr) as active, FlakyProxy(openbao.addr) as standby:
        standby.script = [Fault(307, location=active.addr)]
        with connect(settings(standby.addr, openbao.root_token)) as client:
            client.hvac_client.adapter.post(path, json={"data": {"path": "w"}})
        assert standby.seen == [("POST", path)] and active.seen == [("POST", path)]
    assert openbao.client.secrets.kv.v2.read_secret_version(
        path=f"{vault_prefix}/written", mount_point="secret", raise_on_deleted_version=True
    )["data"]["metadata"]["version"] == 1


def test_a_see_other_redirect_is_followed_with_get_as_requests_does(
    openbao: OpenBao, vault_prefix: str, no_proxy_env: None
) -> None:
    """The redirect policies are requests' own: a 303 after a POST is followed by a GET, without the body."""
    openbao.put_data(f"{vault_prefix}/rec", {"path": "x"})
    path = f"/v1/secret/data/{vault_prefix}/rec"
    with FlakyProxy(openbao.addr) as active, FlakyProxy(openbao.addr) as standby:
        standby.script = [Fault(303, location=active.addr)]
        with connect(settings(standby.addr, openbao.root_token)) as client:
            answer = client.hvac_client.adapter.post(path, json={"data": {"path": "never"}})
        assert answer["data"]["data"] == {"path": "x"}
        assert standby.seen == [("POST", path)] and active.seen == [("GET", path)]


def test_an_endless_redirect_stops_at_the_sessions_limit(
    openbao: OpenBao, vault_prefix: str, no_proxy_env: None
) -> None:
    with FlakyProxy(openbao.addr) as loop:
        loop.script = [Fault(307, location=loop.addr)] * 40
        with connect(settings(loop.addr, openbao.root_token, retries=1)) as client:
            client.session.max_redirects = 3
            with pytest.raises(VaultUnavailableError) as err:
                client.read_record("secret", f"{vault_prefix}/rec")
        assert "TooManyRedirects" in str(err.value) and openbao.root_token not in str(err.value)
        assert loop.hits(f"/v1/secret/data/{vault_prefix}/rec") == 4, "the request and 3 follow-ups"


def test_a_new_address_gets_its_own_pool(openbao: OpenBao, vault_prefix: str, no_proxy_env: None) -> None:
    openbao.put_data(f"{vault_prefix}/rec", {"path": "x"})
    with connect(settings(openbao.addr, openbao.root_token)) as client, FlakyProxy(openbao.addr) as other:
        assert client.read_record("secret", f"{vault_prefix}/rec") is not None
        client.hvac_client.url = other.addr
        assert client.read_record("secret", f"{vault_prefix}/rec") is not None
        assert other.hits(f"/v1/secret/data/{vault_prefix}/rec") == 1


def test_dot_segments_are_resolved_before_sending(
    openbao: OpenBao, vault_prefix: str, no_proxy_env: None
) -> None:
    """requests resolves '.' and '..' in the path before sending; a proxy in front must never see them."""
    openbao.put_data(f"{vault_prefix}/rec", {"path": "x"})
    with FlakyProxy(openbao.addr) as front, connect(settings(front.addr, openbao.root_token)) as client:
        answer = client.hvac_client.adapter.get(f"/v1/secret/data/{vault_prefix}/other/../rec")
        assert answer["data"]["data"] == {"path": "x"}
        assert [path for _, path in front.seen] == [f"/v1/secret/data/{vault_prefix}/rec"]


def test_credentials_in_the_address_are_sent_as_requests_sends_them(
    openbao: OpenBao, vault_prefix: str, no_proxy_env: None
) -> None:
    """A VAULT_ADDR with user:password@ (an authenticating proxy in front of Vault) sends Basic auth."""
    openbao.put_data(f"{vault_prefix}/rec", {"path": "x"})
    with FlakyProxy(openbao.addr) as front:
        addr = front.addr.replace("://", "://proxyuser:proxypass@")
        with connect(settings(addr, openbao.root_token)) as client:
            assert client.read_record("secret", f"{vault_prefix}/rec") == ({"path": "x"}, 1)
        assert front.authorizations and all(a and a.startswith("Basic ") for a in front.authorizations)


@pytest.mark.parametrize("token", ["s.CANARY\nTOKEN-pooled", "s.CANARY\rX-Injected: 1"])
def test_a_token_that_is_no_header_value_is_refused_without_echoing_it(
    openbao: OpenBao, no_proxy_env: None, token: str
) -> None:
    """A token with a line break (two lines of a file) is refused with the settings, never quoted."""
    with FlakyProxy(openbao.addr) as front:
        with pytest.raises(VaultError) as err:
            settings(front.addr, token)
        assert "CANARY" not in str(err.value) and "the token contains a line break" in str(err.value)
        assert front.seen == []


def test_a_redirect_from_https_to_plain_http_is_refused_and_the_token_stays_home(
    openbao: OpenBao, vault_prefix: str, certificate: tuple[str, str], no_proxy_env: None
) -> None:
    """requests keeps X-Vault-Token across redirects; a downgrade to http would send it in clear."""
    openbao.put_data(f"{vault_prefix}/rec", {"path": "x"})
    with FlakyProxy(openbao.addr) as plain, FlakyProxy(openbao.addr, tls=certificate) as secure:
        secure.script = [Fault(307, location=plain.addr)]
        with (
            pytest.raises(VaultUnavailableError) as err,
            connect(settings(secure.addr, openbao.root_token, cacert=certificate[0])) as client,
        ):
            client.read_record("secret", f"{vault_prefix}/rec")
        message = str(err.value)
        assert "redirected the request" in message and "plain http at 127.0.0.1" in message
        assert openbao.root_token not in message
        assert plain.seen == [], "nothing reached the plain-http address"
        assert secure.hits(f"/v1/secret/data/{vault_prefix}/rec") == 1, "the request was sent once"
