"""docs/vault-policies/*.hcl do what docs/pipeline.md and docs/security.md say, on a real OpenBao.

Each policy is written verbatim with the root token, a token is created holding only it (plus
'default'), and that token then tries the operations the docs promise or deny. Keys are written
under ``kraken/<unique subaccount>/`` so tests sharing the session server never collide.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import hvac
import hvac.exceptions
import pytest
import requests

from tests.openbao import OpenBao

POLICIES = Path(__file__).resolve().parents[2] / "docs" / "vault-policies"
MOUNT = "secret"
PREFIX = "kraken"
FINGERPRINT = "ab" * 32


def hcl(name: str) -> str:
    return (POLICIES / f"{name}.hcl").read_text()


def parse_paths(text: str) -> dict[str, set[str]]:
    """``path "X" { capabilities = [...] }`` blocks of a policy, comments ignored."""
    text = re.sub(r"#[^\n]*", "", text)
    blocks = re.findall(r'path\s+"([^"]+)"\s*\{\s*capabilities\s*=\s*\[([^\]]*)\]\s*\}', text)
    assert len(blocks) == text.count("path "), "a path block is not of the form this test understands"
    return {path: set(re.findall(r'"([a-z]+)"', caps)) for path, caps in blocks}


# --------------------------------------------------------------------------- static: the files


def test_policies_grant_exactly_the_documented_capabilities() -> None:
    assert parse_paths(hcl("ci-metadata")) == {
        "secret/metadata/kraken/*": {"read", "list"},
        "secret/data/keyfence/ledger/*": {"read"},
        "secret/detailed-metadata/kraken/*": {"list"},
        "secret/detailed-metadata/keyfence/ledger/*": {"list"},
    }
    assert parse_paths(hcl("deploy")) == {
        "secret/data/kraken/*": {"read"},
        "secret/metadata/kraken/*": {"read", "list"},
        "secret/data/keyfence/ledger/*": {"create", "read", "update"},
        "secret/metadata/keyfence/ledger/*": {"update"},
        "secret/detailed-metadata/kraken/*": {"list"},
        "secret/detailed-metadata/keyfence/ledger/*": {"list"},
    }
    assert parse_paths(hcl("key-admin")) == {
        "secret/data/kraken/*": {"create", "update"},
        "secret/metadata/kraken/*": {"create", "read", "update", "patch", "delete", "list"},
        "secret/destroy/kraken/*": {"update"},
        "secret/data/keyfence/ledger/*": {"create", "read", "update"},
        "secret/metadata/keyfence/ledger/*": {"read", "list", "update"},
        "secret/detailed-metadata/kraken/*": {"list"},
        "secret/detailed-metadata/keyfence/ledger/*": {"list"},
        "secret/metadata/*": {"read", "list"},
    }


@pytest.mark.parametrize("name", ["ci-metadata", "deploy", "key-admin"])
def test_each_policy_says_who_holds_it_and_how_to_adapt(name: str) -> None:
    header = re.split(r'^path "', hcl(name), maxsplit=1, flags=re.M)[0]
    assert f"keyfence-{name}" in header
    assert "Held by:" in header
    assert 'mount "secret"' in header and 'prefix "kraken"' in header and "To adapt" in header


# --------------------------------------------------------------------------- live: OpenBao


def client_for(openbao: OpenBao, token: str) -> hvac.Client:
    return hvac.Client(url=openbao.addr, token=token, timeout=10)


@pytest.fixture
def key_path(openbao: OpenBao) -> str:
    """A key with data and keyfence-style custom metadata, written by root."""
    path = f"{PREFIX}/s{uuid.uuid4().hex[:10]}/executor"
    openbao.put_key(
        path,
        "the-api-key",
        "the-api-secret",
        custom_metadata={"fingerprint": FINGERPRINT, "subaccount": "momentum", "permissions": "general-full"},
    )
    return path


@pytest.fixture
def outside_path(openbao: OpenBao) -> str:
    """A key in the same mount but outside the prefix: no policy may reach it."""
    path = f"other/o{uuid.uuid4().hex[:10]}"
    openbao.put_key(path, "k", "s")
    return path


def forbidden(call: Callable[[], Any]) -> None:
    with pytest.raises(hvac.exceptions.Forbidden):
        call()


def parent(path: str) -> str:
    return path.rsplit("/", 1)[0]


def metadata_patch(openbao: OpenBao, token: str, path: str, body: dict[str, Any]) -> requests.Response:
    """What `bao kv metadata patch` sends (hvac has no call for it)."""
    return requests.patch(
        f"{openbao.addr}/v1/{MOUNT}/metadata/{path}",
        json=body,
        headers={"X-Vault-Token": token, "Content-Type": "application/merge-patch+json"},
        timeout=10,
    )


@pytest.mark.vault
def test_ci_metadata_reads_and_lists_metadata_but_never_data(
    openbao: OpenBao, key_path: str, outside_path: str
) -> None:
    kv = client_for(openbao, openbao.token(hcl("ci-metadata"))).secrets.kv.v2
    meta = kv.read_secret_metadata(path=key_path, mount_point=MOUNT)["data"]
    assert meta["custom_metadata"]["fingerprint"] == FINGERPRINT
    assert meta["current_version"] == 1
    subaccount = parent(key_path).split("/")[-1]
    assert f"{subaccount}/" in kv.list_secrets(path=PREFIX, mount_point=MOUNT)["data"]["keys"]
    assert kv.list_secrets(path=parent(key_path), mount_point=MOUNT)["data"]["keys"] == ["executor"]

    forbidden(
        lambda: kv.read_secret_version(path=key_path, mount_point=MOUNT, raise_on_deleted_version=False)
    )
    forbidden(
        lambda: kv.read_secret_version(
            path=key_path, version=1, mount_point=MOUNT, raise_on_deleted_version=False
        )
    )
    forbidden(
        lambda: kv.create_or_update_secret(path=key_path, secret={"api_key": "x"}, cas=1, mount_point=MOUNT)
    )
    forbidden(
        lambda: kv.update_metadata(path=key_path, custom_metadata={"fingerprint": "0"}, mount_point=MOUNT)
    )
    forbidden(lambda: kv.destroy_secret_versions(path=key_path, versions=[1], mount_point=MOUNT))
    forbidden(lambda: kv.delete_metadata_and_all_versions(path=key_path, mount_point=MOUNT))
    forbidden(lambda: kv.read_secret_metadata(path=outside_path, mount_point=MOUNT))
    forbidden(lambda: kv.list_secrets(path="", mount_point=MOUNT))


@pytest.mark.vault
def test_deploy_reads_data_and_metadata_but_cannot_write(
    openbao: OpenBao, key_path: str, outside_path: str
) -> None:
    kv = client_for(openbao, openbao.token(hcl("deploy"))).secrets.kv.v2
    data = kv.read_secret_version(path=key_path, mount_point=MOUNT, raise_on_deleted_version=False)["data"][
        "data"
    ]
    assert data == {"api_key": "the-api-key", "api_secret": "the-api-secret"}
    assert kv.read_secret_metadata(path=key_path, mount_point=MOUNT)["data"]["custom_metadata"][
        "fingerprint"
    ] == (FINGERPRINT)
    assert kv.list_secrets(path=parent(key_path), mount_point=MOUNT)["data"]["keys"] == ["executor"]

    new_key = f"{parent(key_path)}/new"
    forbidden(
        lambda: kv.create_or_update_secret(path=key_path, secret={"api_key": "x"}, cas=1, mount_point=MOUNT)
    )
    forbidden(
        lambda: kv.create_or_update_secret(path=new_key, secret={"api_key": "x"}, cas=0, mount_point=MOUNT)
    )
    forbidden(
        lambda: kv.update_metadata(path=key_path, custom_metadata={"fingerprint": "0"}, mount_point=MOUNT)
    )
    forbidden(lambda: kv.delete_latest_version_of_secret(path=key_path, mount_point=MOUNT))
    forbidden(lambda: kv.destroy_secret_versions(path=key_path, versions=[1], mount_point=MOUNT))
    forbidden(lambda: kv.delete_metadata_and_all_versions(path=key_path, mount_point=MOUNT))
    forbidden(
        lambda: kv.read_secret_version(path=outside_path, mount_point=MOUNT, raise_on_deleted_version=False)
    )
    # Nothing changed.
    root = openbao.client.secrets.kv.v2
    assert root.read_secret_metadata(path=key_path, mount_point=MOUNT)["data"]["current_version"] == 1


@pytest.mark.vault
def test_key_admin_writes_with_cas_revokes_and_cannot_read_material(
    openbao: OpenBao, outside_path: str
) -> None:
    token = openbao.token(hcl("key-admin"))
    kv = client_for(openbao, token).secrets.kv.v2
    path = f"{PREFIX}/s{uuid.uuid4().hex[:10]}/risk"

    # register: create only if absent (cas=0), then the custom metadata with cas_required.
    created = kv.create_or_update_secret(
        path=path, secret={"api_key": "k1", "api_secret": "s1"}, cas=0, mount_point=MOUNT
    )
    assert created["data"]["version"] == 1
    kv.update_metadata(
        path=path,
        cas_required=True,
        custom_metadata={"fingerprint": FINGERPRINT},
        delete_version_after=None,
        mount_point=MOUNT,
    )
    # With cas_required, KV v2 itself refuses a blind write and a stale check-and-set.
    with pytest.raises(hvac.exceptions.InvalidRequest, match="check-and-set"):
        kv.create_or_update_secret(path=path, secret={"api_key": "k2", "api_secret": "s2"}, mount_point=MOUNT)
    with pytest.raises(hvac.exceptions.InvalidRequest, match="check-and-set"):
        kv.create_or_update_secret(
            path=path, secret={"api_key": "k2", "api_secret": "s2"}, cas=0, mount_point=MOUNT
        )
    # register --rotate: a new version at the current one.
    rotated = kv.create_or_update_secret(
        path=path, secret={"api_key": "k2", "api_secret": "s2"}, cas=1, mount_point=MOUNT
    )
    assert rotated["data"]["version"] == 2

    # list / metadata: yes; material: never, not even its own.
    meta = kv.read_secret_metadata(path=path, mount_point=MOUNT)["data"]
    assert meta["current_version"] == 2 and meta["cas_required"] is True
    assert kv.list_secrets(path=parent(path), mount_point=MOUNT)["data"]["keys"] == ["risk"]
    forbidden(lambda: kv.read_secret_version(path=path, mount_point=MOUNT, raise_on_deleted_version=False))

    # `bao kv metadata patch -custom-metadata=fingerprint=...` (docs/pipeline.md troubleshooting).
    patched = metadata_patch(openbao, token, path, {"custom_metadata": {"fingerprint": "cd" * 32}})
    assert patched.status_code in (200, 204), patched.text
    assert (
        kv.read_secret_metadata(path=path, mount_point=MOUNT)["data"]["custom_metadata"]["fingerprint"]
        == "cd" * 32
    )

    # revoke: destroy a version, then every version and the metadata.
    kv.destroy_secret_versions(path=path, versions=[1], mount_point=MOUNT)
    assert kv.read_secret_metadata(path=path, mount_point=MOUNT)["data"]["versions"]["1"]["destroyed"] is True
    kv.delete_metadata_and_all_versions(path=path, mount_point=MOUNT)
    with pytest.raises(hvac.exceptions.InvalidPath):
        openbao.client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=MOUNT)

    # Nothing outside the prefix.
    forbidden(
        lambda: kv.create_or_update_secret(path=outside_path, secret={"a": "b"}, cas=1, mount_point=MOUNT)
    )
    forbidden(lambda: kv.destroy_secret_versions(path=outside_path, versions=[1], mount_point=MOUNT))
    forbidden(lambda: kv.delete_metadata_and_all_versions(path=outside_path, mount_point=MOUNT))


CAPABILITY_TABLE = {
    # policy: {path: capabilities the token holds there}, as docs/pipeline.md's table states.
    "ci-metadata": {
        "secret/metadata/kraken/a/b": ["list", "read"],
        "secret/data/kraken/a/b": ["deny"],
        "secret/destroy/kraken/a/b": ["deny"],
        "secret/delete/kraken/a/b": ["deny"],
        "secret/metadata/other/a": ["deny"],
        "secret/data/keyfence/ledger/ab": ["read"],
        "secret/metadata/keyfence/ledger/ab": ["deny"],
        "secret/detailed-metadata/kraken/a/": ["list"],
        "secret/detailed-metadata/keyfence/ledger/": ["list"],
        "secret/detailed-metadata/other/": ["deny"],
    },
    "deploy": {
        "secret/metadata/kraken/a/b": ["list", "read"],
        "secret/data/kraken/a/b": ["read"],
        "secret/destroy/kraken/a/b": ["deny"],
        "secret/delete/kraken/a/b": ["deny"],
        "secret/undelete/kraken/a/b": ["deny"],
        "secret/data/other/a": ["deny"],
        "secret/data/keyfence/ledger/ab": ["create", "read", "update"],
        "secret/metadata/keyfence/ledger/ab": ["update"],
        "secret/detailed-metadata/kraken/a/": ["list"],
        "secret/detailed-metadata/keyfence/ledger/": ["list"],
    },
    "key-admin": {
        "secret/metadata/kraken/a/b": ["create", "delete", "list", "patch", "read", "update"],
        "secret/data/kraken/a/b": ["create", "update"],
        "secret/destroy/kraken/a/b": ["update"],
        "secret/delete/kraken/a/b": ["deny"],
        "secret/data/other/a": ["deny"],
        "secret/data/keyfence/ledger/ab": ["create", "read", "update"],
        "secret/metadata/keyfence/ledger/ab": ["list", "read", "update"],
        "secret/detailed-metadata/kraken/a/": ["list"],
        "secret/detailed-metadata/keyfence/ledger/": ["list"],
    },
}


@pytest.mark.vault
@pytest.mark.parametrize("name", sorted(CAPABILITY_TABLE))
def test_capabilities_match_the_documented_table(openbao: OpenBao, name: str) -> None:
    token = openbao.token(hcl(name))
    paths = CAPABILITY_TABLE[name]
    response = openbao.client.adapter.post(
        "/v1/sys/capabilities", json={"token": token, "paths": list(paths)}
    )
    body = response.json() if isinstance(response, requests.Response) else response
    got = {path: sorted(body["data"][path]) for path in paths}
    assert got == paths


@pytest.mark.vault
def test_adapting_mount_and_prefix_as_documented(openbao: OpenBao) -> None:
    """Replacing "secret" and "kraken" in the files is all it takes for another mount and prefix."""
    mount = openbao.enable_secrets("kv", f"kv{uuid.uuid4().hex[:8]}", options={"version": "2"})
    prefix = "exchange-keys"
    path = f"{prefix}/basis/feed"
    openbao.put_key(path, "k", "s", custom_metadata={"fingerprint": FINGERPRINT}, mount=mount)

    def adapted(name: str) -> str:
        return hcl(name).replace('"secret/', f'"{mount}/').replace("/kraken/", f"/{prefix}/")

    ci = client_for(openbao, openbao.token(adapted("ci-metadata"))).secrets.kv.v2
    assert ci.read_secret_metadata(path=path, mount_point=mount)["data"]["custom_metadata"][
        "fingerprint"
    ] == (FINGERPRINT)
    forbidden(lambda: ci.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=False))
    deploy = client_for(openbao, openbao.token(adapted("deploy"))).secrets.kv.v2
    assert deploy.read_secret_version(path=path, mount_point=mount, raise_on_deleted_version=False)["data"][
        "data"
    ] == {"api_key": "k", "api_secret": "s"}
    # The unadapted files grant nothing on the other mount.
    unadapted = client_for(openbao, openbao.token(hcl("deploy"))).secrets.kv.v2
    forbidden(lambda: unadapted.read_secret_metadata(path=path, mount_point=mount))


@pytest.mark.vault
def test_approle_for_ci_yields_a_metadata_only_token(openbao: OpenBao, key_path: str) -> None:
    """The AppRole recipe of docs/pipeline.md: a login whose token carries ci-metadata."""
    role_id, secret_id = openbao.approle(hcl("ci-metadata"))
    login = hvac.Client(url=openbao.addr, timeout=10)
    login.auth.approle.login(role_id=role_id, secret_id=secret_id)
    kv = login.secrets.kv.v2
    assert kv.read_secret_metadata(path=key_path, mount_point=MOUNT)["data"]["current_version"] == 1
    forbidden(
        lambda: kv.read_secret_version(path=key_path, mount_point=MOUNT, raise_on_deleted_version=False)
    )
    # The 'default' policy stays: keyfence looks the token up to tell 'expired' from 'forbidden'.
    assert login.auth.token.lookup_self()["data"]["policies"]


# --------------------------------------------------------------------------- the guide's CLI commands


BAO_CLI = Path(sys.executable).parent / "bao"


def bao(openbao: OpenBao, token: str, *args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """Run the `bao` CLI as docs/pipeline.md does, against the test server only."""
    env = {
        "PATH": os.environ.get("PATH", ""),
        "HOME": str(home),
        "BAO_ADDR": openbao.addr,
        "BAO_TOKEN": token,
    }
    return subprocess.run(
        [str(BAO_CLI), *args], env=env, capture_output=True, text=True, timeout=30, check=False
    )


@pytest.mark.vault
def test_pipeline_guide_cli_commands_work(openbao: OpenBao, key_path: str, tmp_path: Path) -> None:
    root = openbao.root_token
    suffix = uuid.uuid4().hex[:8]

    def ok(token: str, *args: str) -> str:
        result = bao(openbao, token, *args, home=tmp_path)
        assert result.returncode == 0, f"bao {' '.join(args)}: {result.stderr}"
        return result.stdout.strip()

    ci_policy, admin_policy = f"keyfence-ci-metadata-{suffix}", f"keyfence-key-admin-{suffix}"
    ok(root, "policy", "write", ci_policy, str(POLICIES / "ci-metadata.hcl"))
    ok(root, "policy", "write", admin_policy, str(POLICIES / "key-admin.hcl"))

    # Static periodic token for CI: metadata yes, data 403, as `bao token capabilities` shows.
    ci = ok(
        root,
        "token",
        "create",
        "-orphan",
        "-display-name=keyfence-ci",
        f"-policy={ci_policy}",
        "-period=768h",
        "-field=token",
    )
    assert ok(ci, "token", "capabilities", f"secret/data/{key_path}") == "deny"
    assert ok(ci, "token", "capabilities", f"secret/metadata/{key_path}") == "list, read"
    assert FINGERPRINT in ok(ci, "kv", "metadata", "get", "-mount=secret", key_path)
    denied = bao(openbao, ci, "kv", "get", "-mount=secret", key_path, home=tmp_path)
    assert denied.returncode != 0 and "403" in denied.stderr
    assert "the-api-secret" not in denied.stdout + denied.stderr

    # The troubleshooting fix: add a fingerprint with the key-admin token.
    admin = ok(
        root,
        "token",
        "create",
        "-display-name=alice-keys",
        f"-policy={admin_policy}",
        "-ttl=1h",
        "-field=token",
    )
    ok(
        admin,
        "kv",
        "metadata",
        "patch",
        "-mount=secret",
        f"-custom-metadata=fingerprint={'ef' * 32}",
        key_path,
    )
    custom = openbao.client.secrets.kv.v2.read_secret_metadata(path=key_path, mount_point=MOUNT)["data"]
    assert custom["custom_metadata"]["fingerprint"] == "ef" * 32
    assert custom["custom_metadata"]["subaccount"] == "momentum", "patch must keep the other entries"

    # AppRole for CI, exactly as written in the guide.
    openbao.enable_auth("approle")
    role = f"keyfence-ci-{suffix}"
    ok(
        root,
        "write",
        f"auth/approle/role/{role}",
        f"token_policies={ci_policy}",
        "token_ttl=15m",
        "token_max_ttl=30m",
        "secret_id_ttl=720h",
    )
    role_id = ok(root, "read", "-field=role_id", f"auth/approle/role/{role}/role-id")
    secret_id = ok(root, "write", "-f", "-field=secret_id", f"auth/approle/role/{role}/secret-id")
    login = hvac.Client(url=openbao.addr, timeout=10)
    login.auth.approle.login(role_id=role_id, secret_id=secret_id)
    assert ci_policy in login.auth.token.lookup_self()["data"]["policies"]

    # Kubernetes auth role for in-cluster deploys (the role definition; a login needs a cluster).
    openbao.enable_auth("kubernetes")
    ok(
        root,
        "write",
        f"auth/kubernetes/role/keyfence-deploy-{suffix}",
        "bound_service_account_names=keyfence-deployer",
        "bound_service_account_namespaces=keyfence-system",
        f"token_policies={ci_policy}",
        "token_ttl=20m",
    )


@pytest.mark.vault
def test_ledger_roles_register_claim_and_check_with_the_documented_policies(openbao: OpenBao) -> None:
    """key-admin registers (creating the record), deploy claims and releases, CI reads the holder."""
    import base64
    import secrets

    from keyfence.keys import resolve_keys
    from keyfence.keystore import plan_registration, register_key
    from keyfence.keystore.claims import claim_key, release_claim
    from keyfence.material import KeyMaterial
    from keyfence.spec import load_spec_text
    from keyfence.vault import Ledger, VaultSettings, connect

    sub = f"s{uuid.uuid4().hex[:10]}"
    material = KeyMaterial(
        f"POLICYKEY{secrets.token_hex(8)}", base64.b64encode(secrets.token_bytes(32)).decode()
    )

    def client(name: str) -> Any:
        return connect(VaultSettings(addr=openbao.addr, token=openbao.token(hcl(name)), timeout=10.0))

    with client("key-admin") as admin:
        plan = plan_registration(f"{sub}/executor", venue="futures", permissions="general-full")
        register_key(admin, plan, material)
    spec = load_spec_text(
        f"version: 1\nsubaccounts:\n  - name: {sub}\n    venue: futures\n    processes:\n"
        "      - {name: executor, role: trader, image: 'ghcr.io/acme/bot:1.0.0'}\n",
        "fleet.yaml",
    )
    with client("deploy") as deploy:
        (key,) = resolve_keys(spec, deploy, "deploy", "organization/desk/prod")
        ledger = Ledger(deploy, MOUNT)
        claim_key(ledger, material.fingerprint, key.path, "organization/desk/prod", f"{sub}/executor")
    with client("ci-metadata") as ci:
        (seen,) = resolve_keys(spec, ci, "check", "organization/desk/staging")
        assert seen.ledger_conflict is not None and "organization/desk/prod" in seen.ledger_conflict
        # The deploy token mirrored its claim, and the CI token may list it: no record read needed.
        mirrored = Ledger(ci, MOUNT).snapshot().mirrored.get(material.fingerprint)
        assert mirrored is not None and mirrored.stack == "organization/desk/prod"
    with client("deploy") as deploy:
        assert release_claim(
            Ledger(deploy, MOUNT), material.fingerprint, "organization/desk/prod", f"{sub}/executor"
        )
