"""keyfence.vault: settings from the environment (no server), and the KV v2 client against real OpenBao."""

from __future__ import annotations

import base64
import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import certifi
import hvac
import pytest
import requests

from keyfence.errors import EXIT_VIOLATION, KeyfenceError, RefusedError, VaultError
from keyfence.material import KeyMaterial, fingerprint_of
from keyfence.vault import (
    KeyAccessDeniedError,
    KeyMetadata,
    KeyNotFoundError,
    KeyVersionGoneError,
    KV2Client,
    MalformedKeyError,
    VaultRequestError,
    VaultSettings,
    VaultUnavailableError,
    connect,
    read_many,
)
from keyfence.vault import metadata as vault_metadata
from keyfence.vault import settings as vault_settings
from tests.openbao import Fault, FlakyProxy, OpenBao, free_port, wait_for_kv2

BASE_ENV = {"VAULT_ADDR": "https://vault.example.com:8200", "VAULT_TOKEN": "s.supersecrettoken"}


def settings_for(openbao: OpenBao | FlakyProxy, token: str, **overrides: Any) -> VaultSettings:
    return VaultSettings(addr=openbao.addr, token=token, **{"timeout": 5.0, **overrides})


def material(prefix: str, name: str) -> KeyMaterial:
    return KeyMaterial(api_key=f"CANARYKEY-{prefix}-{name}", api_secret=f"CANARYSECRET-{prefix}-{name}")


def assert_clean(message: str, *secrets: str) -> None:
    for secret in secrets:
        assert secret not in message


# =========================================================================== settings (no server)


class TestSettingsFromEnv:
    def test_defaults_with_token(self) -> None:
        s = VaultSettings.from_env(BASE_ENV)
        assert s.addr == "https://vault.example.com:8200"
        assert s.token == "s.supersecrettoken"
        assert (s.auth, s.timeout, s.retries, s.concurrency) == ("token", 10.0, 4, 16)
        assert s.verify is True
        assert s.mount_for_auth is None

    def test_missing_addr_says_what_to_set(self) -> None:
        with pytest.raises(VaultError) as info:
            VaultSettings.from_env({"VAULT_TOKEN": "x"})
        assert "VAULT_ADDR is not set" in str(info.value)
        assert "export VAULT_ADDR=" in str(info.value)

    @pytest.mark.parametrize("addr", ["vault.example.com:8200", "ftp://vault", "https://", "http://h:99999"])
    def test_bad_addr(self, addr: str) -> None:
        with pytest.raises(VaultError, match="VAULT_ADDR"):
            VaultSettings.from_env({**BASE_ENV, "VAULT_ADDR": addr})

    def test_trailing_slash_dropped(self) -> None:
        assert VaultSettings.from_env({**BASE_ENV, "VAULT_ADDR": "http://127.0.0.1:8200/"}).addr == (
            "http://127.0.0.1:8200"
        )

    def test_every_bad_number_named_at_once(self) -> None:
        env = {
            **BASE_ENV,
            "KEYFENCE_VAULT_TIMEOUT": "soon",
            "KEYFENCE_VAULT_RETRIES": "0",
            "KEYFENCE_VAULT_CONCURRENCY": "100000",
        }
        with pytest.raises(VaultError) as info:
            VaultSettings.from_env(env)
        text = str(info.value)
        for name in ("KEYFENCE_VAULT_TIMEOUT", "KEYFENCE_VAULT_RETRIES", "KEYFENCE_VAULT_CONCURRENCY"):
            assert name in text
        assert len(info.value.problems) == 3

    def test_numbers_parsed(self) -> None:
        env = {
            **BASE_ENV,
            "KEYFENCE_VAULT_TIMEOUT": "2.5",
            "KEYFENCE_VAULT_RETRIES": "1",
            "KEYFENCE_VAULT_CONCURRENCY": "3",
        }
        s = VaultSettings.from_env(env)
        assert (s.timeout, s.retries, s.concurrency) == (2.5, 1, 3)

    def test_unknown_auth_method(self) -> None:
        with pytest.raises(VaultError, match="KEYFENCE_VAULT_AUTH='ldap' is not one of"):
            VaultSettings.from_env({**BASE_ENV, "KEYFENCE_VAULT_AUTH": "ldap"})

    def test_token_auth_needs_token(self) -> None:
        with pytest.raises(VaultError, match="VAULT_TOKEN is not set"):
            VaultSettings.from_env({"VAULT_ADDR": BASE_ENV["VAULT_ADDR"]})

    def test_approle_from_files(self, tmp_path: Path) -> None:
        (tmp_path / "role").write_text("role-123\n")
        (tmp_path / "secret").write_text("  secret-456 \n")
        env = {
            "VAULT_ADDR": BASE_ENV["VAULT_ADDR"],
            "KEYFENCE_VAULT_AUTH": "AppRole",
            "KEYFENCE_VAULT_ROLE_ID_FILE": str(tmp_path / "role"),
            "KEYFENCE_VAULT_SECRET_ID_FILE": str(tmp_path / "secret"),
        }
        s = VaultSettings.from_env(env)
        assert (s.auth, s.role_id, s.secret_id, s.token) == ("approle", "role-123", "secret-456", None)
        assert s.mount_for_auth == "approle"
        s = VaultSettings.from_env({**env, "KEYFENCE_VAULT_AUTH_MOUNT": "/approle-prod/"})
        assert s.mount_for_auth == "approle-prod"

    def test_approle_inline_and_file_conflict(self, tmp_path: Path) -> None:
        (tmp_path / "role").write_text("role-123")
        env = {
            "VAULT_ADDR": BASE_ENV["VAULT_ADDR"],
            "KEYFENCE_VAULT_AUTH": "approle",
            "KEYFENCE_VAULT_ROLE_ID": "role-123",
            "KEYFENCE_VAULT_ROLE_ID_FILE": str(tmp_path / "role"),
        }
        with pytest.raises(VaultError) as info:
            VaultSettings.from_env(env)
        assert "KEYFENCE_VAULT_ROLE_ID and KEYFENCE_VAULT_ROLE_ID_FILE are both set" in str(info.value)
        assert len(info.value.problems) == 1

    def test_approle_needs_role_id(self) -> None:
        env = {"VAULT_ADDR": BASE_ENV["VAULT_ADDR"], "KEYFENCE_VAULT_AUTH": "approle"}
        with pytest.raises(VaultError, match="KEYFENCE_VAULT_ROLE_ID"):
            VaultSettings.from_env(env)

    def test_unreadable_and_empty_credential_files(self, tmp_path: Path) -> None:
        (tmp_path / "empty").write_text("\n")
        env = {
            "VAULT_ADDR": BASE_ENV["VAULT_ADDR"],
            "KEYFENCE_VAULT_AUTH": "approle",
            "KEYFENCE_VAULT_ROLE_ID_FILE": str(tmp_path / "nope"),
            "KEYFENCE_VAULT_SECRET_ID_FILE": str(tmp_path / "empty"),
        }
        with pytest.raises(VaultError) as info:
            VaultSettings.from_env(env)
        assert any("KEYFENCE_VAULT_ROLE_ID_FILE" in p and "cannot read" in p for p in info.value.problems)
        assert any("KEYFENCE_VAULT_SECRET_ID_FILE" in p and "empty" in p for p in info.value.problems)

    def test_kubernetes_default_token_file_missing(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        monkeypatch.setattr(vault_settings, "KUBERNETES_TOKEN_FILE", str(tmp_path / "absent"))
        env = {
            "VAULT_ADDR": BASE_ENV["VAULT_ADDR"],
            "KEYFENCE_VAULT_AUTH": "kubernetes",
            "KEYFENCE_VAULT_ROLE": "r",
        }
        with pytest.raises(VaultError) as info:
            VaultSettings.from_env(env)
        assert "KEYFENCE_VAULT_JWT_FILE" in str(info.value)
        assert str(tmp_path / "absent") in str(info.value)

    def test_kubernetes_reads_default_token_file(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
    ) -> None:
        token = tmp_path / "token"
        token.write_text("eyJhbGciOi.service-account.jwt\n")
        monkeypatch.setattr(vault_settings, "KUBERNETES_TOKEN_FILE", str(token))
        env = {
            "VAULT_ADDR": BASE_ENV["VAULT_ADDR"],
            "KEYFENCE_VAULT_AUTH": "kubernetes",
            "KEYFENCE_VAULT_ROLE": "r",
        }
        s = VaultSettings.from_env(env)
        assert (s.auth, s.role, s.jwt, s.mount_for_auth) == (
            "kubernetes",
            "r",
            "eyJhbGciOi.service-account.jwt",
            "kubernetes",
        )

    def test_jwt_needs_role_and_jwt(self) -> None:
        with pytest.raises(VaultError) as info:
            VaultSettings.from_env({"VAULT_ADDR": BASE_ENV["VAULT_ADDR"], "KEYFENCE_VAULT_AUTH": "jwt"})
        text = str(info.value)
        assert "KEYFENCE_VAULT_ROLE" in text and "KEYFENCE_VAULT_JWT" in text
        s = VaultSettings.from_env(
            {
                "VAULT_ADDR": BASE_ENV["VAULT_ADDR"],
                "KEYFENCE_VAULT_AUTH": "jwt",
                "KEYFENCE_VAULT_ROLE": "ci",
                "KEYFENCE_VAULT_JWT": "a.b.c",
            }
        )
        assert (s.jwt, s.mount_for_auth) == ("a.b.c", "jwt")

    def test_tls_variables(self, tmp_path: Path) -> None:
        with pytest.raises(VaultError, match=r"VAULT_CACERT=.*no such file"):
            VaultSettings.from_env({**BASE_ENV, "VAULT_CACERT": str(tmp_path / "ca.pem")})
        (tmp_path / "ca.pem").write_text("-----BEGIN CERTIFICATE-----\n")
        assert VaultSettings.from_env({**BASE_ENV, "VAULT_CACERT": str(tmp_path / "ca.pem")}).verify == str(
            tmp_path / "ca.pem"
        )
        assert VaultSettings.from_env({**BASE_ENV, "VAULT_SKIP_VERIFY": "true"}).verify is False
        assert VaultSettings.from_env({**BASE_ENV, "VAULT_SKIP_VERIFY": "0"}).verify is True
        with pytest.raises(VaultError, match="VAULT_SKIP_VERIFY"):
            VaultSettings.from_env({**BASE_ENV, "VAULT_SKIP_VERIFY": "maybe"})

    def test_namespace(self) -> None:
        assert VaultSettings.from_env({**BASE_ENV, "VAULT_NAMESPACE": "/team/"}).namespace == "team"

    def test_repr_never_shows_credentials(self, tmp_path: Path) -> None:
        s = VaultSettings.from_env(BASE_ENV)
        assert "supersecrettoken" not in repr(s) and "supersecrettoken" not in str(s)
        assert "token='<set>'" in repr(s)
        approle = VaultSettings(
            addr="http://127.0.0.1:1", auth="approle", role_id="ROLEIDVALUE", secret_id="SECRETIDVALUE"
        )
        jwt = VaultSettings(addr="http://127.0.0.1:1", auth="jwt", role="ci", jwt="JWTVALUE")
        for text in (repr(approle), repr(jwt), f"{[approle, jwt]}"):
            assert_clean(text, "ROLEIDVALUE", "SECRETIDVALUE", "JWTVALUE")

    def test_direct_construction_is_checked(self) -> None:
        with pytest.raises(VaultError, match="retries"):
            VaultSettings(addr="http://127.0.0.1:1", token="t", retries=0)
        with pytest.raises(VaultError, match="approle auth needs a role id"):
            VaultSettings(addr="http://127.0.0.1:1", auth="approle")

    def test_reads_only_the_given_mapping(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("VAULT_ADDR", "http://127.0.0.1:1")
        with pytest.raises(VaultError, match="VAULT_ADDR is not set"):
            VaultSettings.from_env({})


@pytest.mark.parametrize(
    ("text", "micro"),
    [
        ("2026-11-24T00:04:56.435844949Z", 435844),
        ("2026-11-24T00:04:56.4Z", 400000),
        ("2026-11-24T00:04:56Z", 0),
        ("2026-11-24T02:04:56.5+02:00", 500000),
    ],
)
def test_vault_times_parse(text: str, micro: int) -> None:
    parsed = vault_metadata.parse_time(text)
    assert parsed is not None and parsed.microsecond == micro and parsed.utcoffset() is not None
    assert vault_metadata.parse_time("") is None and vault_metadata.parse_time("yesterday") is None


class TestLoginCallPath:
    """Each auth method reaches the matching hvac login with the configured role, JWT and mount."""

    @pytest.fixture
    def calls(self, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
        recorded: list[tuple[str, dict[str, Any]]] = []

        def recorder(name: str) -> Any:
            def login(self: Any, **kwargs: Any) -> dict[str, Any]:
                recorded.append((name, kwargs))
                return {"auth": {"client_token": "issued"}}

            return login

        monkeypatch.setattr(hvac.api.auth_methods.Kubernetes, "login", recorder("kubernetes"))
        monkeypatch.setattr(hvac.api.auth_methods.JWT, "jwt_login", recorder("jwt"))
        monkeypatch.setattr(hvac.api.auth_methods.AppRole, "login", recorder("approle"))
        return recorded

    def test_kubernetes(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        s = VaultSettings(addr="http://127.0.0.1:1", auth="kubernetes", role="trader", jwt="sa.jwt")
        with connect(s):
            pass
        assert calls == [("kubernetes", {"role": "trader", "jwt": "sa.jwt", "mount_point": "kubernetes"})]

    def test_jwt_custom_mount(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        s = VaultSettings(addr="http://127.0.0.1:1", auth="jwt", role="ci", jwt="a.b.c", auth_mount="gitlab")
        with connect(s):
            pass
        assert calls == [("jwt", {"role": "ci", "jwt": "a.b.c", "path": "gitlab"})]

    def test_approle(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        s = VaultSettings(addr="http://127.0.0.1:1", auth="approle", role_id="r", secret_id="s")
        with connect(s):
            pass
        assert calls == [("approle", {"role_id": "r", "secret_id": "s", "mount_point": "approle"})]

    def test_token_needs_no_login(self, calls: list[tuple[str, dict[str, Any]]]) -> None:
        with connect(VaultSettings(addr="http://127.0.0.1:1", token="t")):
            pass
        assert calls == []


class TestBackoff:
    """KEYFENCE_VAULT_BACKOFF caps every wait between attempts (values, not clocks, are checked)."""

    def test_default_and_from_env(self) -> None:
        assert VaultSettings.from_env(BASE_ENV).backoff == vault_settings.BACKOFF_MAX
        assert VaultSettings.from_env({**BASE_ENV, "KEYFENCE_VAULT_BACKOFF": "0.25"}).backoff == 0.25
        assert VaultSettings.from_env({**BASE_ENV, "KEYFENCE_VAULT_BACKOFF": "0"}).backoff == 0

    @pytest.mark.parametrize("value", ["-0.1", "61", "nan", "later"])
    def test_bad_values_named(self, value: str) -> None:
        with pytest.raises(VaultError, match=f"KEYFENCE_VAULT_BACKOFF='{value}' must be a number of seconds"):
            VaultSettings.from_env({**BASE_ENV, "KEYFENCE_VAULT_BACKOFF": value})

    @pytest.mark.parametrize("cap", [0.0, 0.05, 0.3])
    def test_every_wait_is_within_the_cap(self, cap: float) -> None:
        waits: list[float] = []
        settings = VaultSettings(addr=f"http://127.0.0.1:{free_port()}", token="t", retries=8, backoff=cap)
        session = requests.Session()
        client = hvac.Client(url=settings.addr, token="t", timeout=2, session=session)
        with (
            KV2Client(client, settings, session, sleep=waits.append) as kv,
            pytest.raises(VaultUnavailableError),
        ):
            kv.read_metadata("secret", "k")
        assert len(waits) == 7
        assert all(0 <= w <= cap for w in waits), waits
        if cap >= 0.3:
            assert waits[-1] == cap, "waits grow until they reach the cap"


class TestReadMany:
    def test_order_kept_and_every_error_collected(self) -> None:
        def fn(n: int) -> int:
            time.sleep(0.001 * (10 - n))
            if n % 3 == 0:
                raise VaultRequestError("http://v", f"secret/k{n}", "boom")
            return n * 10

        results = read_many(fn, range(10), 4)
        assert [r if isinstance(r, int) else "err" for r in results] == [
            "err", 10, 20, "err", 40, 50, "err", 70, 80, "err",
        ]  # fmt: skip
        assert [r.ref for r in results if isinstance(r, KeyfenceError)] == [  # type: ignore[attr-defined]
            "secret/k0", "secret/k3", "secret/k6", "secret/k9",
        ]  # fmt: skip

    def test_unavailable_aborts_and_cancels_the_rest(self) -> None:
        started: list[int] = []

        def fn(n: int) -> int:
            started.append(n)
            if n == 0:
                raise VaultUnavailableError("cannot reach Vault at http://v")
            time.sleep(0.05)
            return n

        with pytest.raises(VaultUnavailableError):
            read_many(fn, range(100), 2)
        assert len(started) < 100

    def test_empty(self) -> None:
        assert read_many(lambda n: n, [], 4) == []


# =========================================================================== against OpenBao


@pytest.fixture
def root(openbao: OpenBao) -> Iterator[KV2Client]:
    with connect(settings_for(openbao, openbao.root_token)) as client:
        yield client


@pytest.mark.vault
class TestKV2Client:
    def test_metadata_is_typed(self, openbao: OpenBao, root: KV2Client, vault_prefix: str) -> None:
        m = material(vault_prefix, "a")
        path = f"{vault_prefix}/a"
        openbao.put_key(path, m.api_key, m.api_secret, custom_metadata={"fingerprint": m.fingerprint})
        openbao.put_key(path, m.api_key + "2", m.api_secret)
        meta = root.read_metadata("secret", f"/{path}/")
        assert isinstance(meta, KeyMetadata)
        assert (meta.mount, meta.path, meta.ref) == ("secret", path, f"secret/{path}")
        assert meta.current_version == 2
        assert sorted(meta.versions) == [1, 2]
        assert meta.current is not None and meta.current.available
        assert dict(meta.custom_metadata) == {"fingerprint": m.fingerprint}
        assert meta.updated_time is not None and meta.updated_time.tzinfo is not None
        assert meta.cas_required is False

    def test_read_version_exactly(self, openbao: OpenBao, root: KV2Client, vault_prefix: str) -> None:
        path = f"{vault_prefix}/a"
        openbao.put_key(path, "K1", "S1")
        openbao.put_key(path, "K2", "S2")
        assert root.read_version("secret", path, 1) == KeyMaterial("K1", "S1")
        assert root.read_version("secret", path, 2).fingerprint == fingerprint_of("K2")
        with pytest.raises(KeyNotFoundError, match="version 3 does not exist"):
            root.read_version("secret", path, 3)

    def test_read_version_emits_no_deprecation_warning(
        self, openbao: OpenBao, root: KV2Client, vault_prefix: str, recwarn: pytest.WarningsRecorder
    ) -> None:
        openbao.put_key(f"{vault_prefix}/a", "K", "S")
        root.read_version("secret", f"{vault_prefix}/a", 1)
        assert not [w for w in recwarn if issubclass(w.category, DeprecationWarning)]

    def test_deleted_and_destroyed_versions(
        self, openbao: OpenBao, root: KV2Client, vault_prefix: str
    ) -> None:
        kv = openbao.client.secrets.kv.v2
        openbao.put_key(f"{vault_prefix}/del", "KD", "SD")
        kv.delete_latest_version_of_secret(f"{vault_prefix}/del")
        openbao.put_key(f"{vault_prefix}/gone", "KG", "SG")
        kv.destroy_secret_versions(f"{vault_prefix}/gone", [1])
        with pytest.raises(KeyVersionGoneError) as deleted:
            root.read_version("secret", f"{vault_prefix}/del", 1)
        assert "version 1 is deleted" in str(deleted.value) and "vault kv undelete" in str(deleted.value)
        with pytest.raises(KeyVersionGoneError, match="version 1 is destroyed"):
            root.read_version("secret", f"{vault_prefix}/gone", 1)
        meta = root.read_metadata("secret", f"{vault_prefix}/del")
        assert meta.current is not None and meta.current.deleted and not meta.current.available
        assert root.read_metadata("secret", f"{vault_prefix}/gone").versions[1].destroyed

    def test_scheduled_deletion_is_not_deletion(
        self, openbao: OpenBao, root: KV2Client, vault_prefix: str
    ) -> None:
        path = f"{vault_prefix}/ttl"
        openbao.put_key(path, "K", "S")
        openbao.client.secrets.kv.v2.update_metadata(path=path, delete_version_after="1h")
        openbao.put_key(path, "K", "S")
        current = root.read_metadata("secret", path).current
        assert current is not None and current.deletion_time is not None and current.available

    @pytest.mark.parametrize(
        ("data", "expected"),
        [
            ({"api_key": "CANARYKEY-only"}, "field 'api_secret' is missing"),
            ({"api_key": "", "api_secret": "CANARYSECRET-x"}, "field 'api_key' is empty"),
            ({"api_key": 12, "api_secret": "CANARYSECRET-x"}, "field 'api_key' is not a string"),
            ({"api_key": "CANARYKEY-x\n", "api_secret": "CANARYSECRET-x"}, "leading or trailing whitespace"),
            (
                {"key": "CANARYKEY-x", "secret": "CANARYSECRET-x"},
                "field 'api_key' is missing; field 'api_secret'",
            ),
        ],
    )
    def test_malformed_data(
        self, openbao: OpenBao, root: KV2Client, vault_prefix: str, data: dict[str, Any], expected: str
    ) -> None:
        openbao.put_data(f"{vault_prefix}/bad", data)
        with pytest.raises(MalformedKeyError) as info:
            root.read_version("secret", f"{vault_prefix}/bad", 1)
        assert expected in str(info.value)
        assert f"secret/{vault_prefix}/bad" in str(info.value)
        assert "CANARY" not in str(info.value)

    def test_missing_key(self, root: KV2Client, vault_prefix: str, openbao: OpenBao) -> None:
        with pytest.raises(KeyNotFoundError) as info:
            root.read_metadata("secret", f"{vault_prefix}/nothing")
        text = str(info.value)
        assert f"secret/{vault_prefix}/nothing" in text
        assert "no key is stored here" in text and openbao.addr in text

    def test_write_key_check_and_set(self, openbao: OpenBao, root: KV2Client, vault_prefix: str) -> None:
        path = f"{vault_prefix}/w"
        first, second = material(vault_prefix, "1"), material(vault_prefix, "2")
        assert root.write_key("secret", path, first, cas=0) == 1
        with pytest.raises(RefusedError) as created:
            root.write_key("secret", path, second, cas=0)
        assert created.value.exit_code == EXIT_VIOLATION
        assert "changed concurrently" in str(created.value) and f"secret/{path}" in str(created.value)
        assert root.write_key("secret", path, second, cas=1) == 2
        with pytest.raises(RefusedError, match="changed concurrently"):
            root.write_key("secret", path, first, cas=1)
        assert root.read_version("secret", path, 2) == second
        for exc in (created.value,):
            assert_clean(str(exc), first.api_key, first.api_secret, second.api_key, second.api_secret)

    def test_custom_metadata_update_keeps_other_settings(
        self, openbao: OpenBao, root: KV2Client, vault_prefix: str
    ) -> None:
        path = f"{vault_prefix}/m"
        openbao.put_key(path, "K", "S")
        openbao.client.secrets.kv.v2.update_metadata(path=path, max_versions=7, delete_version_after="2h")
        root.update_custom_metadata("secret", path, {"fingerprint": fingerprint_of("K"), "venue": "spot"})
        meta = root.read_metadata("secret", path)
        assert dict(meta.custom_metadata) == {"fingerprint": fingerprint_of("K"), "venue": "spot"}
        assert meta.max_versions == 7 and meta.delete_version_after == "2h0m0s"

    def test_list_keys_recursive(self, openbao: OpenBao, root: KV2Client, vault_prefix: str) -> None:
        for path in ("a/x", "a/y/z", "a/y", "b", "a/y/deep/er/k"):
            openbao.put_key(f"{vault_prefix}/{path}", "K", "S")
        assert root.list_keys("secret", vault_prefix) == sorted(
            f"{vault_prefix}/{p}" for p in ("a/x", "a/y", "a/y/z", "a/y/deep/er/k", "b")
        )
        assert root.list_keys("secret", f"{vault_prefix}/a/y/") == [
            f"{vault_prefix}/a/y/deep/er/k",
            f"{vault_prefix}/a/y/z",
        ]
        assert root.list_keys("secret", f"{vault_prefix}/none") == []

    def test_destroy_all_versions(self, openbao: OpenBao, root: KV2Client, vault_prefix: str) -> None:
        path = f"{vault_prefix}/d"
        openbao.put_key(path, "K", "S")
        openbao.put_key(path, "K2", "S2")
        root.destroy_all_versions("secret", path)
        with pytest.raises(KeyNotFoundError):
            root.read_metadata("secret", path)
        root.destroy_all_versions("secret", path)

    def test_forbidden_names_the_capability(self, openbao: OpenBao, vault_prefix: str) -> None:
        path = f"{vault_prefix}/f"
        openbao.put_key(path, "K", "S")
        token = openbao.token(f'path "secret/data/{vault_prefix}/*" {{ capabilities = ["read"] }}')
        with connect(settings_for(openbao, token)) as client:
            cases: list[tuple[Callable[[], object], str, str]] = [
                (lambda: client.read_metadata("secret", path), "read", f"secret/metadata/{path}"),
                (
                    lambda: client.list_keys("secret", vault_prefix),
                    "list",
                    f"secret/metadata/{vault_prefix}/",
                ),
                (
                    lambda: client.write_key("secret", path, KeyMaterial("K3", "S3"), cas=1),
                    "update",
                    f"secret/data/{path}",
                ),
                (
                    lambda: client.write_key("secret", f"{path}x", KeyMaterial("K3", "S3"), cas=0),
                    "create",
                    f"secret/data/{path}x",
                ),
                (
                    lambda: client.update_custom_metadata("secret", path, {}),
                    "update",
                    f"secret/metadata/{path}",
                ),
                (lambda: client.destroy_all_versions("secret", path), "delete", f"secret/metadata/{path}"),
            ]
            for call, capability, api_path in cases:
                with pytest.raises(KeyAccessDeniedError) as info:
                    call()
                text = str(info.value)
                assert f"'{capability}' capability on '{api_path}'" in text, text
                assert openbao.addr in text
                assert_clean(text, token, "K3", "S3")
            assert client.read_version("secret", path, 1) == KeyMaterial("K", "S")

    def test_dead_token(self, openbao: OpenBao, vault_prefix: str) -> None:
        token = openbao.token('path "secret/*" { capabilities = ["read"] }')
        openbao.revoke(token)
        with connect(settings_for(openbao, token)) as client, pytest.raises(VaultUnavailableError) as info:
            client.read_metadata("secret", f"{vault_prefix}/x")
        assert "rejected the token" in str(info.value) and "expired, revoked" in str(info.value)
        assert openbao.addr in str(info.value)
        assert token not in str(info.value)

    def test_kv1_mount_and_missing_mount(self, openbao: OpenBao, root: KV2Client, vault_prefix: str) -> None:
        mount = openbao.enable_secrets("kv", f"kv1-{vault_prefix}", {"version": "1"})
        openbao.client.secrets.kv.v1.create_or_update_secret(path="k", secret={"a": "b"}, mount_point=mount)
        with pytest.raises(KeyNotFoundError, match="KV version 1 mount; keyfence needs KV version 2"):
            root.read_metadata(mount, "k")
        with pytest.raises(KeyNotFoundError, match=f"no secrets engine is mounted at 'nope-{vault_prefix}/'"):
            root.read_metadata(f"nope-{vault_prefix}", "k")
        with pytest.raises(KeyNotFoundError, match="is not a mount but a path inside the mount 'secret'"):
            root.read_metadata(f"secret/{vault_prefix}", "k")

    def test_unknown_mount_kind_when_token_cannot_look(self, openbao: OpenBao, vault_prefix: str) -> None:
        token = openbao.token(f'path "secret/metadata/{vault_prefix}/*" {{ capabilities = ["read"] }}')
        with connect(settings_for(openbao, token)) as client, pytest.raises(KeyNotFoundError) as info:
            client.read_metadata("secret", f"{vault_prefix}/missing")
        assert "no key is stored here" in str(info.value)

    def test_unreachable(self) -> None:
        addr = f"http://127.0.0.1:{free_port()}"
        with (
            connect(VaultSettings(addr=addr, token="t", retries=2)) as client,
            pytest.raises(VaultUnavailableError) as info,
        ):
            client.read_metadata("secret", "k")
        assert f"cannot reach Vault at {addr}" in str(info.value) and "(2 attempts)" in str(info.value)

    def test_sealed_is_reported_and_not_retried(self, openbao: OpenBao, root: KV2Client) -> None:
        with openbao.sealed():
            started = time.monotonic()
            with pytest.raises(VaultUnavailableError, match=f"Vault at {openbao.addr} is sealed"):
                root.read_metadata("secret", "anything")
            assert time.monotonic() - started < 1.0

    def test_one_session_sized_to_concurrency(self, openbao: OpenBao) -> None:
        with connect(settings_for(openbao, openbao.root_token, concurrency=5)) as client:
            assert client.hvac_client.adapter.session is client.session
            adapter = client.session.get_adapter(openbao.addr)
            assert adapter._pool_maxsize == 5
            assert "hvac" not in repr(client) and openbao.root_token not in repr(client)


@pytest.mark.vault
class TestLogin:
    POLICY = 'path "secret/*" {{ capabilities = ["read"] }}'

    def test_approle(self, openbao: OpenBao, vault_prefix: str) -> None:
        openbao.put_key(f"{vault_prefix}/a", "K", "S")
        role_id, secret_id = openbao.approle(
            f'path "secret/+/{vault_prefix}/*" {{ capabilities = ["read"] }}'
        )
        s = VaultSettings(addr=openbao.addr, auth="approle", role_id=role_id, secret_id=secret_id)
        with connect(s) as client:
            assert client.read_version("secret", f"{vault_prefix}/a", 1) == KeyMaterial("K", "S")

    def test_approle_refused(self, openbao: OpenBao) -> None:
        role_id, _ = openbao.approle('path "secret/*" { capabilities = ["read"] }')
        s = VaultSettings(addr=openbao.addr, auth="approle", role_id=role_id, secret_id="WRONGSECRETID")
        with pytest.raises(VaultUnavailableError) as info:
            connect(s)
        text = str(info.value)
        assert f"approle login to Vault at {openbao.addr} (auth/approle/login) failed" in text
        assert "KEYFENCE_VAULT_SECRET_ID" in text
        assert_clean(text, "WRONGSECRETID", role_id)

    def test_auth_method_not_mounted(self, openbao: OpenBao) -> None:
        s = VaultSettings(
            addr=openbao.addr, auth="kubernetes", role="r", jwt="x.y.z", auth_mount="k8s-absent"
        )
        with pytest.raises(
            VaultUnavailableError, match="no kubernetes auth method is mounted at auth/k8s-absent"
        ):
            connect(s)

    def test_kubernetes_login_reaches_vault(self, openbao: OpenBao) -> None:
        mount = openbao.enable_auth("kubernetes", "k8s-test")
        some_ca = Path(certifi.where()).read_text().split("-----END CERTIFICATE-----")[0]
        openbao.client.adapter.post(
            f"/v1/auth/{mount}/config",
            json={
                "kubernetes_host": "http://127.0.0.1:1",
                "kubernetes_ca_cert": some_ca + "-----END CERTIFICATE-----\n",
                "disable_local_ca_jwt": True,
            },
        )
        s = VaultSettings(
            addr=openbao.addr, auth="kubernetes", role="r", jwt="NOTAJWTVALUE", auth_mount=mount
        )
        with pytest.raises(VaultUnavailableError) as info:
            connect(s)
        assert "kubernetes login to Vault" in str(info.value) and "refused" in str(info.value)
        assert "NOTAJWTVALUE" not in str(info.value)

    def test_jwt_for_real(self, openbao: OpenBao, vault_prefix: str) -> None:
        """A JWT signed by OpenBao's transit engine (no crypto library needed) logs in for real."""
        openbao.put_key(f"{vault_prefix}/j", "KJ", "SJ")
        openbao.enable_secrets("transit", "transit")
        transit = openbao.client.secrets.transit
        transit.create_key(name="jwt-signer", key_type="rsa-2048")
        public_pem = transit.read_key(name="jwt-signer")["data"]["keys"]["1"]["public_key"]
        mount = openbao.enable_auth("jwt", "jwt-test")
        policy = openbao.policy(f'path "secret/+/{vault_prefix}/*" {{ capabilities = ["read"] }}')
        openbao.client.adapter.post(
            f"/v1/auth/{mount}/config",
            json={"jwt_validation_pubkeys": [public_pem], "bound_issuer": "keyfence-tests"},
        )
        openbao.client.adapter.post(
            f"/v1/auth/{mount}/role/deployer",
            json={
                "role_type": "jwt",
                "user_claim": "sub",
                "bound_audiences": ["keyfence"],
                "token_policies": [policy],
                "token_ttl": "5m",
            },
        )
        now = int(time.time())
        claims = {
            "iss": "keyfence-tests",
            "sub": "ci",
            "aud": "keyfence",
            "iat": now,
            "nbf": now - 5,
            "exp": now + 300,
        }
        token = _transit_signed_jwt(openbao, claims)
        s = VaultSettings(addr=openbao.addr, auth="jwt", role="deployer", jwt=token, auth_mount=mount)
        with connect(s) as client:
            assert client.read_version("secret", f"{vault_prefix}/j", 1) == KeyMaterial("KJ", "SJ")
            assert client.hvac_client.adapter.token not in ("", None)


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _transit_signed_jwt(openbao: OpenBao, claims: dict[str, Any]) -> str:
    header = _b64url(json.dumps({"alg": "RS256", "typ": "JWT"}).encode())
    payload = _b64url(json.dumps(claims).encode())
    signing_input = f"{header}.{payload}"
    signed = openbao.client.secrets.transit.sign_data(
        name="jwt-signer",
        hash_input=base64.b64encode(signing_input.encode()).decode(),
        hash_algorithm="sha2-256",
        signature_algorithm="pkcs1v15",
    )
    signature = base64.b64decode(signed["data"]["signature"].split(":", 2)[2])
    return f"{signing_input}.{_b64url(signature)}"


@pytest.mark.vault
class TestRetries:
    @pytest.fixture
    def proxy(self, openbao: OpenBao) -> Iterator[FlakyProxy]:
        with FlakyProxy(openbao.addr, match="/v1/secret/") as proxy:
            yield proxy

    def test_transient_5xx_then_success(
        self, openbao: OpenBao, proxy: FlakyProxy, vault_prefix: str, caplog: pytest.LogCaptureFixture
    ) -> None:
        openbao.put_key(f"{vault_prefix}/r", "CANARYKEY-r", "CANARYSECRET-r")
        proxy.script = [503, 502]
        with (
            caplog.at_level(logging.WARNING, logger="keyfence.vault"),
            connect(settings_for(proxy, openbao.root_token)) as client,
        ):
            assert client.read_version("secret", f"{vault_prefix}/r", 1).api_key == "CANARYKEY-r"
        assert proxy.hits(f"/v1/secret/data/{vault_prefix}/r") == 3
        assert len(caplog.records) == 2 and "HTTP 503" in caplog.records[0].getMessage()
        assert all("CANARY" not in r.getMessage() for r in caplog.records)

    def test_other_5xx_retried_too(self, openbao: OpenBao, proxy: FlakyProxy, vault_prefix: str) -> None:
        openbao.put_key(f"{vault_prefix}/r", "K", "S")
        proxy.script = [500, 504]
        with connect(settings_for(proxy, openbao.root_token)) as client:
            assert client.read_metadata("secret", f"{vault_prefix}/r").current_version == 1
        assert proxy.hits(f"/v1/secret/metadata/{vault_prefix}/r") == 3

    def test_budget_exhausted(self, openbao: OpenBao, proxy: FlakyProxy, vault_prefix: str) -> None:
        proxy.script = [500] * 10
        with (
            connect(settings_for(proxy, openbao.root_token, retries=3)) as client,
            pytest.raises(VaultUnavailableError) as info,
        ):
            client.read_metadata("secret", f"{vault_prefix}/r")
        assert proxy.hits("/v1/secret/") == 3
        text = str(info.value)
        assert f"Vault at {proxy.addr} failed" in text and "HTTP 500" in text and "(3 attempts)" in text
        assert f"secret/{vault_prefix}/r" in text

    @pytest.mark.parametrize(("status", "error"), [(400, VaultRequestError), (403, KeyAccessDeniedError)])
    def test_4xx_never_retried(
        self, openbao: OpenBao, proxy: FlakyProxy, vault_prefix: str, status: int, error: type[Exception]
    ) -> None:
        openbao.put_key(f"{vault_prefix}/r", "K", "S")
        proxy.script = [status]
        with connect(settings_for(proxy, openbao.root_token)) as client, pytest.raises(error):
            client.read_metadata("secret", f"{vault_prefix}/r")
        assert proxy.hits(f"/v1/secret/metadata/{vault_prefix}/r") == 1

    def test_rate_limit_not_retried(self, openbao: OpenBao, proxy: FlakyProxy, vault_prefix: str) -> None:
        proxy.script = [429]
        with (
            connect(settings_for(proxy, openbao.root_token)) as client,
            pytest.raises(VaultUnavailableError, match="KEYFENCE_VAULT_CONCURRENCY"),
        ):
            client.read_metadata("secret", f"{vault_prefix}/r")
        assert proxy.hits("/v1/secret/") == 1

    def test_server_comes_up_a_moment_later(self, openbao: OpenBao, vault_prefix: str) -> None:
        openbao.put_key(f"{vault_prefix}/late", "K", "S")
        proxy = FlakyProxy(openbao.addr)
        timer = threading.Timer(0.3, proxy.start)
        timer.start()
        try:
            with connect(settings_for(proxy, openbao.root_token, retries=8)) as client:
                assert client.read_metadata("secret", f"{vault_prefix}/late").current_version == 1
        finally:
            timer.join()
            proxy.stop()

    def test_restarted_server(self, tmp_path: Path) -> None:
        """A real server going away and coming back on the same port: the read rides it out."""
        server = OpenBao(tmp_path)
        server.start()
        try:
            with connect(settings_for(server, server.root_token, retries=10)) as client:
                server.stop()
                timer = threading.Timer(0.3, server.restart)
                timer.start()
                with pytest.raises(KeyNotFoundError):
                    client.read_metadata("secret", "gone-with-the-restart")
                timer.join()
                assert server.running
        finally:
            server.stop()

    def test_retried_write_that_landed_is_not_a_conflict(
        self, openbao: OpenBao, proxy: FlakyProxy, vault_prefix: str
    ) -> None:
        path = f"{vault_prefix}/w"
        m = material(vault_prefix, "w")
        proxy.script = [Fault(502, forward=True)]
        with connect(settings_for(proxy, openbao.root_token)) as client:
            assert client.write_key("secret", path, m, cas=0) == 1
            other = material(vault_prefix, "other")
            proxy.script = [Fault(502, forward=True)]
            with pytest.raises(RefusedError):
                client.write_key("secret", path, other, cas=0)
        assert proxy.hits(f"/v1/secret/data/{path}") >= 4

    def test_retried_write_by_a_write_only_token_says_it_cannot_tell(
        self, openbao: OpenBao, proxy: FlakyProxy, vault_prefix: str
    ) -> None:
        """The key-admin token may write material but not read it back, so a landed retry is unknowable."""
        path = f"{vault_prefix}/w"
        token = openbao.token(
            f'path "secret/data/{vault_prefix}/*" {{ capabilities = ["create", "update"] }}\n'
            f'path "secret/metadata/{vault_prefix}/*" {{ capabilities = ["read"] }}'
        )
        m = material(vault_prefix, "w")
        proxy.script = [Fault(502, forward=True)]
        with connect(settings_for(proxy, token)) as client, pytest.raises(RefusedError) as info:
            client.write_key("secret", path, m, cas=0)
        assert "wrote version 1 after all, or the key changed concurrently" in str(info.value)
        assert_clean(str(info.value), m.api_key, m.api_secret, token)
        assert openbao.client.secrets.kv.v2.read_secret_metadata(path)["data"]["current_version"] == 1


def test_skip_verify_warns(caplog: pytest.LogCaptureFixture) -> None:
    settings = VaultSettings(addr="https://127.0.0.1:1", token="t", skip_verify=True)
    with caplog.at_level(logging.WARNING, logger="keyfence.vault"), connect(settings) as client:
        assert client.session.verify is False
    assert "VAULT_SKIP_VERIFY is set" in caplog.text and "https://127.0.0.1:1" in caplog.text


@pytest.mark.vault
def test_namespace(openbao: OpenBao, vault_prefix: str) -> None:
    """VAULT_NAMESPACE reaches Vault: the key exists only inside the namespace."""
    namespace = f"ns{vault_prefix}"
    openbao.client.adapter.post(f"/v1/sys/namespaces/{namespace}")
    inside = hvac.Client(url=openbao.addr, token=openbao.root_token, namespace=namespace)
    inside.sys.enable_secrets_engine(backend_type="kv", path="secret", options={"version": "2"})
    wait_for_kv2(inside, "secret")
    inside.secrets.kv.v2.create_or_update_secret(path="k", secret={"api_key": "KN", "api_secret": "SN"})
    env = {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token, "VAULT_NAMESPACE": namespace}
    with connect(VaultSettings.from_env(env)) as client:
        assert client.read_version("secret", "k", 1) == KeyMaterial("KN", "SN")
    with connect(settings_for(openbao, openbao.root_token)) as client, pytest.raises(KeyNotFoundError):
        client.read_metadata("secret", "k")


@pytest.mark.vault
def test_a_path_in_vault_addr_that_vault_does_not_serve_is_named(openbao: OpenBao, vault_prefix: str) -> None:
    """VAULT_ADDR=http://host:port/vault (a proxy prefix that is not there): every key looks missing,
    so the message names the address's path as the likely cause instead of only 'register it'."""
    settings = VaultSettings(addr=openbao.addr + "/vault", token=openbao.root_token, timeout=5.0)
    with connect(settings) as client, pytest.raises(KeyNotFoundError) as err:
        client.read_metadata("secret", f"{vault_prefix}/momentum/executor")
    said = str(err.value)
    assert "VAULT_ADDR" in said and "'/vault'" in said and f"VAULT_ADDR={openbao.addr}" in said
