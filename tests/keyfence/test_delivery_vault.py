"""Operator delivery against a real OpenBao and the real pack process.

Metadata-only deploys, a mixed stack through ``keyfence check``, a key shared across modes,
the StatefulSet-only option, the per-process Vault policies, and render mode's refusal.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from keyfence.check.harness import collect
from keyfence.cli.app import app
from keyfence.delivery.vaultpolicy import process_access, render
from keyfence.errors import EXIT_INVALID, EXIT_OK, EXIT_VIOLATION, KeyVerificationError
from keyfence.keys import METADATA_FINGERPRINT, METADATA_PERMISSIONS, METADATA_SUBACCOUNT, METADATA_VENUE
from keyfence.material import KeyMaterial
from keyfence.program import ProgramOptions, run
from keyfence.spec import FleetSpec, ProcessEntry, load_spec
from tests.fleet_fixtures import ROOT
from tests.openbao import OpenBao

pytestmark = pytest.mark.vault


def write_spec(tmp_path: Path, prefix: str, deliveries: dict[str, str], **fleet: Any) -> Path:
    """Three futures processes; ``deliveries`` sets each one's delivery by name."""

    def proc(sub: str, name: str, role: str, permissions: list[str]) -> dict[str, Any]:
        out: dict[str, Any] = {
            "name": name,
            "role": role,
            "image": f"ghcr.io/acme/{name}:1.0.0",
            "permissions": permissions,
        }
        delivery = deliveries.get(f"{sub}/{name}")
        if delivery:
            out["delivery"] = delivery
        return out

    data = {
        "version": 1,
        "vault": {"mount": "secret", "prefix": prefix},
        "operators": {"vault_address": "https://vault.example.com:8200"},
        **fleet,
        "subaccounts": [
            {
                "name": "momentum",
                "venue": "futures",
                "processes": [
                    proc("momentum", "executor", "trader", ["general-full"]),
                    proc("momentum", "feed", "market-data", ["general-read"]),
                ],
            },
            {
                "name": "basis",
                "venue": "futures",
                "processes": [proc("basis", "executor", "trader", ["general-full"])],
            },
        ],
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def material(prefix: str, ref: str) -> KeyMaterial:
    return KeyMaterial(api_key=f"CANARYKEY-{prefix}-{ref}", api_secret=f"CANARYSECRET-{prefix}-{ref}")


def register(openbao: OpenBao, entry: ProcessEntry, key: KeyMaterial) -> None:
    custom = {
        METADATA_FINGERPRINT: key.fingerprint,
        METADATA_SUBACCOUNT: entry.subaccount.name,
        METADATA_VENUE: entry.subaccount.venue,
        METADATA_PERMISSIONS: ",".join(entry.process.permissions or []),
    }
    openbao.put_key(entry.key_path, key.api_key, key.api_secret, custom_metadata=custom)


def register_all(
    openbao: OpenBao, spec: FleetSpec, prefix: str, shared: dict[str, str] | None = None
) -> None:
    """Register a key per process; ``shared`` maps a ref to the ref whose key it gets (a copy)."""
    shared = shared or {}
    for entry in spec.entries():
        register(openbao, entry, material(prefix, shared.get(entry.ref, entry.ref)))


def check(*args: str) -> Any:
    return CliRunner().invoke(app, ["check", "--format", "json", *args])


def no_material(*texts: str) -> None:
    for text in texts:
        assert "CANARYKEY" not in text and "CANARYSECRET" not in text


MIXED = {"momentum/executor": "vault-secrets-operator", "momentum/feed": "external-secrets"}


def test_operator_fleet_deploys_with_a_metadata_only_token(
    openbao: OpenBao,
    vault_env: dict[str, str],
    vault_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    everything = {
        "momentum/executor": "vault-secrets-operator",
        "momentum/feed": "external-secrets",
        "basis/executor": "external-secrets",
    }
    spec_path = write_spec(tmp_path, vault_prefix, everything)
    register_all(openbao, load_spec(spec_path), vault_prefix)
    # Key metadata, and the key ledger's claims as deploy.hcl grants them: never a key's data.
    metadata_only = (
        f'path "secret/metadata/{vault_prefix}/*" {{ capabilities = ["read", "list"] }}\n'
        'path "secret/data/keyfence/ledger/*" { capabilities = ["create", "read", "update"] }\n'
        'path "secret/metadata/keyfence/ledger/*" { capabilities = ["delete"] }'
    )
    monkeypatch.setenv("VAULT_TOKEN", openbao.token(metadata_only))

    collected = collect(lambda: run(ProgramOptions(str(spec_path), mode="deploy")))
    dumped = json.dumps([r.properties for r in collected.resources], default=str)
    dumped += json.dumps(collected.stack_outputs, default=str)
    no_material(dumped)
    assert not [r for r in collected.resources if r.type == "kubernetes:core/v1:Secret"]
    fingerprints = {material(vault_prefix, e.ref).fingerprint for e in load_spec(spec_path).entries()}
    assert all(f in dumped for f in fingerprints), "identities come from metadata"

    # The same token cannot deploy a pulumi-secret fleet: that mode reads key data.
    plain = write_spec(tmp_path, vault_prefix, {})
    with pytest.raises(KeyVerificationError):
        collect(lambda: run(ProgramOptions(str(plain), mode="deploy")))


def test_operator_key_without_metadata_fingerprint_is_refused_at_deploy(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, tmp_path: Path
) -> None:
    spec_path = write_spec(tmp_path, vault_prefix, MIXED)
    spec = load_spec(spec_path)
    register_all(openbao, spec, vault_prefix)
    feed = next(e for e in spec.entries() if e.ref == "momentum/feed")
    key = material(vault_prefix, feed.ref)
    openbao.put_key(
        feed.key_path,
        key.api_key,
        key.api_secret,
        custom_metadata={
            METADATA_SUBACCOUNT: "momentum",
            METADATA_VENUE: "futures",
            METADATA_PERMISSIONS: "general-read",
        },
    )
    with pytest.raises(KeyVerificationError) as err:
        collect(lambda: run(ProgramOptions(str(spec_path), mode="deploy")))
    assert "momentum/feed" in err.value.render() and "fingerprint" in err.value.render()


def test_mixed_stack_passes_the_real_pack(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, tmp_path: Path
) -> None:
    spec_path = write_spec(tmp_path, vault_prefix, MIXED, workload="statefulset")
    register_all(openbao, load_spec(spec_path), vault_prefix)
    result = check("--spec", str(spec_path))
    no_material(result.stdout, result.stderr)
    assert result.exit_code == EXIT_OK, result.stdout + result.stderr
    assert json.loads(result.stdout)["ok"] is True


@pytest.mark.parametrize("copier", ["momentum/executor", "momentum/feed"])
def test_one_key_shared_across_modes_is_blocked(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, tmp_path: Path, copier: str
) -> None:
    """basis/executor (pulumi-secret) and an operator-delivered process hold copies of one key."""
    spec_path = write_spec(tmp_path, vault_prefix, MIXED)
    register_all(openbao, load_spec(spec_path), vault_prefix, shared={copier: "basis/executor"})
    result = check("--spec", str(spec_path))
    no_material(result.stdout, result.stderr)
    assert result.exit_code == EXIT_VIOLATION, result.stdout + result.stderr
    duplicates = [
        v for v in json.loads(result.stdout)["violations"] if v["policy"] == "no-duplicate-key-assignment"
    ]
    process = copier.split("/")[1]
    assert any(f"momentum/{process}" in v["message"] and "basis/executor" in v["message"] for v in duplicates)
    with pytest.raises(KeyVerificationError) as err:  # and deploy stops before declaring anything
        collect(lambda: run(ProgramOptions(str(spec_path), mode="deploy")))
    assert "same API key" in err.value.render()


def test_require_statefulset_through_the_pack(tmp_path: Path) -> None:
    config = tmp_path / "pack.json"
    config.write_text(json.dumps({"single-writer-per-key": {"requireStatefulSet": True}}))
    spec_path = write_spec(tmp_path, "kraken", MIXED)
    result = check("--offline", "--spec", str(spec_path), "--policy-pack-config", str(config))
    assert result.exit_code == EXIT_VIOLATION, result.stdout + result.stderr
    writers = [v for v in json.loads(result.stdout)["violations"] if v["policy"] == "single-writer-per-key"]
    assert len(writers) == 3 and all("requireStatefulSet" in v["message"] for v in writers)
    statefulsets = write_spec(tmp_path, "kraken", MIXED, workload="statefulset")
    result = check("--offline", "--spec", str(statefulsets), "--policy-pack-config", str(config))
    assert result.exit_code == EXIT_OK, result.stdout + result.stderr


def test_each_process_policy_reads_only_its_own_key(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, tmp_path: Path
) -> None:
    spec = load_spec(write_spec(tmp_path, vault_prefix, MIXED))
    register_all(openbao, spec, vault_prefix)
    client = openbao.client
    accesses = process_access(spec)
    assert [a.entry.ref for a in accesses] == ["momentum/executor", "momentum/feed"]
    for access in accesses:
        token = openbao.token(access.policy_hcl(), no_default_policy=True)
        import hvac

        own = hvac.Client(url=openbao.addr, token=token)
        read = own.secrets.kv.v2.read_secret_version(
            path=access.entry.key_path, mount_point="secret", raise_on_deleted_version=True
        )
        assert read["data"]["data"]["api_key"] == material(vault_prefix, access.entry.ref).api_key
        for other in spec.entries():
            if other.ref == access.entry.ref:
                continue
            with pytest.raises(hvac.exceptions.Forbidden):
                own.secrets.kv.v2.read_secret_version(
                    path=other.key_path, mount_point="secret", raise_on_deleted_version=True
                )
        with pytest.raises(hvac.exceptions.Forbidden):
            own.secrets.kv.v2.read_secret_metadata(path=access.entry.key_path, mount_point="secret")
    del client


OPERATORS_EXAMPLE = str(ROOT / "examples" / "fleet-operators.yaml")


def test_vault_policies_command_and_docs_agree() -> None:
    result = CliRunner().invoke(app, ["vault-policies", "--spec", OPERATORS_EXAMPLE])
    assert result.exit_code == EXIT_OK, result.stdout
    assert result.stdout == render(load_spec(OPERATORS_EXAMPLE))
    documented = (ROOT / "docs" / "vault-policies" / "operators-example.hcl").read_text(encoding="utf-8")
    regenerate = "regenerate: keyfence vault-policies --spec examples/fleet-operators.yaml"
    assert result.stdout == documented, regenerate
    assert 'path "secret/data/kraken/momentum/risk-v2"' in documented
    assert "bound_service_account_names=risk" in documented


def test_render_mode_is_refused_with_key_material_and_allowed_without(tmp_path: Path) -> None:
    render_config = ["--config", "kubernetes:renderYamlToDirectory=rendered"]
    result = check("--offline", "--spec", str(write_spec(tmp_path, "kraken", MIXED)), *render_config)
    assert result.exit_code == EXIT_INVALID
    said = result.stdout + result.stderr
    assert "renderYamlToDirectory" in said and "basis/executor" in said and "Traceback" not in said
    everything = dict.fromkeys(("momentum/executor", "momentum/feed", "basis/executor"), "external-secrets")
    result = check("--offline", "--spec", str(write_spec(tmp_path, "kraken", everything)), *render_config)
    assert result.exit_code == EXIT_OK, result.stdout + result.stderr


@pytest.mark.parametrize("delivery", ["vault-secrets-operator", "external-secrets"])
def test_same_process_names_in_two_subaccounts_under_an_operator_pass(tmp_path: Path, delivery: str) -> None:
    """momentum/executor and basis/executor both write a Secret 'executor-key', each in its own
    namespace: an operator object's target names a Secret of its own namespace, not the other one."""
    text = (ROOT / "examples" / "fleet.yaml").read_text(encoding="utf-8")
    fleet = f"version: 1\ndelivery: {delivery}\noperators:\n  vault_address: https://vault.example.com:8200\n"
    spec_path = tmp_path / "operators.yaml"
    spec_path.write_text(text.replace("version: 1\n", fleet, 1), encoding="utf-8")
    result = check("--offline", "--spec", str(spec_path))
    assert result.exit_code == EXIT_OK, result.stdout + result.stderr
