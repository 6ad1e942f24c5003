"""``keyfence check`` end to end on stacks that break the invariants in every way issue #3 lists.

Hand-written resources come from a wrapping Pulumi program (``--program``) whose stack
config picks the scenario; Vault-side faults come from key metadata in a real OpenBao.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from keyfence.cli.app import app
from keyfence.errors import EXIT_INVALID, EXIT_OK, EXIT_VIOLATION
from keyfence.keys import (
    METADATA_FINGERPRINT,
    METADATA_PERMISSIONS,
    METADATA_SUBACCOUNT,
    METADATA_VENUE,
)
from keyfence.material import KeyMaterial
from keyfence.spec import load_spec
from tests.fleet_fixtures import EXAMPLE_SPEC, ROOT
from tests.openbao import OpenBao

SCENARIOS = str(ROOT / "tests" / "fixtures" / "programs" / "scenarios")


def check(*args: str) -> tuple[int, dict[str, Any], str]:
    result = CliRunner().invoke(app, ["check", "--format", "json", *args])
    report = json.loads(result.stdout) if result.stdout.startswith("{") else {}
    return result.exit_code, report, result.stdout + result.stderr


def scenario(name: str | None = None) -> tuple[int, dict[str, Any], str]:
    extra = ["--config", f"scenario={name}"] if name else []
    return check("--offline", "--spec", EXAMPLE_SPEC, "--program", SCENARIOS, *extra)


def violated(report: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = {}
    for v in report["violations"]:
        if v["level"] == "mandatory":
            out.setdefault(v["policy"], []).append(v)
    return out


def test_the_wrapping_program_alone_passes() -> None:
    code, report, out = scenario()
    assert code == EXIT_OK, out
    code, with_sidecar, out = scenario("compliant-sidecar")
    assert code == EXIT_OK, out
    assert with_sidecar["resources"] == report["resources"] + 2


@pytest.mark.parametrize(
    ("name", "policies", "offender"),
    [
        ("rogue-mount", {"no-duplicate-key-assignment"}, "shadow"),
        ("env-from", {"no-duplicate-key-assignment", "key-not-in-env"}, "leaky"),
        ("replicas", {"single-writer-per-key"}, "sidecar"),
        ("rolling-update", {"single-writer-per-key"}, "sidecar"),
        ("hpa", {"single-writer-per-key"}, "sidecar-hpa"),
    ],
)
def test_hand_written_resources_are_blocked(name: str, policies: set[str], offender: str) -> None:
    code, report, out = scenario(name)
    assert code == EXIT_VIOLATION, out
    found = violated(report)
    assert set(found) == policies
    urns = {v["urn"] for vs in found.values() for v in vs}
    assert any(urn.endswith(f"::hand-written/{offender}") for urn in urns), urns
    if "no-duplicate-key-assignment" in policies:
        # Every holder is reported, each naming the other: the executor's own Deployment too.
        duplicates = found["no-duplicate-key-assignment"]
        assert any(v["urn"].endswith("Deployment::momentum/executor") for v in duplicates)
        assert all(offender in v["message"] or "executor" in v["message"] for v in duplicates)


def mandatory_for(report: dict[str, Any], offender: str) -> dict[str, list[str]]:
    """Mandatory violations against ``hand-written/<offender>`` (or a fleet resource), by policy."""
    out: dict[str, list[str]] = {}
    for v in report["violations"]:
        if v["level"] == "mandatory" and v["urn"].endswith(f"::{offender}"):
            out.setdefault(v["policy"], []).append(v["message"])
    return out


# Issue #10: each kind of way around the invariants, offline (no Vault needed).
ISSUE_10 = [
    ("replication-controller", "hand-written/twin", {"no-duplicate-key-assignment", "single-writer-per-key"}),
    ("deployment-patch", "hand-written/executor-patch", {"single-writer-per-key"}),
    ("argo-rollout", "hand-written/rollout", {"no-duplicate-key-assignment", "single-writer-per-key"}),
    ("unknown-kind", "hand-written/clone", {"no-duplicate-key-assignment", "single-writer-per-key"}),
    ("vault-agent", "hand-written/injected", {"no-duplicate-key-assignment"}),
    ("csi-provider", "hand-written/vault-keys", {"no-duplicate-key-assignment"}),
    ("csi-provider", "hand-written/csi", {"no-duplicate-key-assignment"}),
    ("vault-static-secret", "hand-written/vso", {"no-duplicate-key-assignment"}),
    ("vault-static-secret", "hand-written/synced", {"no-duplicate-key-assignment"}),
    ("external-secret", "hand-written/eso", {"no-duplicate-key-assignment"}),
    ("second-container", "momentum/executor", {"single-writer-per-key"}),
    ("role-binding", "hand-written/key-reader", {"no-duplicate-key-assignment"}),
    ("role-binding", "hand-written/key-reader-binding", {"no-duplicate-key-assignment"}),
    ("strip-labels", "hand-written/shadow", {"no-duplicate-key-assignment"}),
    ("strip-labels", "momentum/executor", {"no-duplicate-key-assignment"}),
    ("rewrite-subaccount", "momentum/executor", {"subaccount-tag-required"}),
    ("undeclared-secret", "hand-written/stray", {"no-duplicate-key-assignment"}),
    ("literal-credential", "hand-written/config", {"key-not-in-env"}),
]


@pytest.mark.parametrize(("name", "offender", "policies"), ISSUE_10, ids=[f"{n}:{o}" for n, o, _ in ISSUE_10])
def test_every_path_to_a_key_is_blocked(name: str, offender: str, policies: set[str]) -> None:
    code, report, out = scenario(name)
    assert code == EXIT_VIOLATION, out
    found = mandatory_for(report, offender)
    assert policies <= set(found), (policies, found)
    assert "Traceback" not in out


def test_the_messages_name_resource_channel_and_other_holder() -> None:
    _, report, _ = scenario("csi-provider")
    (route,) = mandatory_for(report, "hand-written/vault-keys")["no-duplicate-key-assignment"]
    assert (
        "SecretProviderClass momentum/vault-keys names exchange key secret/kraken/momentum/executor" in route
    )
    assert "spec.parameters.objects" in route and "Secret momentum/executor-key" in route
    _, report, _ = scenario("second-container")
    (pod,) = mandatory_for(report, "momentum/executor")["single-writer-per-key"]
    assert (
        'container executor (via volume "exchange-key"); container metrics (via volume "exchange-key")' in pod
    )
    _, report, _ = scenario("rewrite-subaccount")
    messages = " ".join(mandatory_for(report, "momentum/executor")["subaccount-tag-required"])
    assert "(subaccount main) holds the key of subaccount momentum" in messages
    assert "the fleet spec says the key belongs to subaccount momentum" in messages


def test_a_program_that_fails_exits_2_without_traceback(tmp_path: Path) -> None:
    code, _, out = scenario("bogus")
    assert code == EXIT_INVALID
    assert "unknown scenario 'bogus'" in out and "Traceback" not in out
    code, _, out = check("--offline", "--spec", EXAMPLE_SPEC, "--program", str(tmp_path))
    assert code == EXIT_INVALID and "no Pulumi program here" in out


def test_bad_config_pair_is_an_error() -> None:
    code, _, out = check("--offline", "--spec", EXAMPLE_SPEC, "--config", "scenario")
    assert code == EXIT_INVALID and "expected KEY=VALUE" in out


# --------------------------------------------------------------------------- Vault-side faults


def small_spec(tmp_path: Path, prefix: str, executor_permissions: list[str]) -> Path:
    def proc(name: str, role: str, permissions: list[str]) -> dict[str, Any]:
        return {"name": name, "role": role, "image": f"ghcr.io/acme/{name}:1.0.0", "permissions": permissions}

    data = {
        "version": 1,
        "vault": {"mount": "secret", "prefix": prefix},
        "subaccounts": [
            {
                "name": "main",
                "master": True,
                "venue": "futures",
                "processes": [proc("treasury", "treasury", ["general-read"])],
            },
            {
                "name": "momentum",
                "venue": "futures",
                "processes": [proc("executor", "trader", executor_permissions)],
            },
        ],
    }
    path = tmp_path / "fleet.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def seed(openbao: OpenBao, spec_path: Path, prefix: str, executor: dict[str, str] | None = None) -> None:
    """Register every key with truthful metadata, except what ``executor`` overrides for that process."""
    for entry in load_spec(spec_path).entries():
        key = KeyMaterial(f"CANARYKEY-{prefix}-{entry.ref}", f"CANARYSECRET-{prefix}-{entry.ref}")
        custom = {
            METADATA_FINGERPRINT: key.fingerprint,
            METADATA_SUBACCOUNT: entry.subaccount.name,
            METADATA_VENUE: entry.subaccount.venue,
            METADATA_PERMISSIONS: ",".join(entry.process.permissions or []),
        }
        if entry.process.name == "executor":
            custom.update(executor or {})
        openbao.put_key(entry.key_path, key.api_key, key.api_secret, custom_metadata=custom)


@pytest.mark.vault
def test_clean_fleet_passes_with_vault(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, tmp_path: Path
) -> None:
    spec_path = small_spec(tmp_path, vault_prefix, ["general-full"])
    seed(openbao, spec_path, vault_prefix)
    code, report, out = check("--spec", str(spec_path))
    assert code == EXIT_OK, out
    assert report["ok"] and not report["offline"]
    assert "CANARY" not in out


@pytest.mark.vault
def test_key_registered_for_another_subaccount_is_blocked(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, tmp_path: Path
) -> None:
    spec_path = small_spec(tmp_path, vault_prefix, ["general-full"])
    seed(openbao, spec_path, vault_prefix, executor={METADATA_SUBACCOUNT: "main"})
    code, report, out = check("--spec", str(spec_path))
    assert code == EXIT_VIOLATION, out
    found = violated(report)
    assert set(found) == {"subaccount-tag-required"}
    (violation,) = found["subaccount-tag-required"]
    assert violation["urn"].endswith("Deployment::momentum/executor")
    assert "main" in violation["message"] and "CANARY" not in out


@pytest.mark.vault
def test_subaccount_key_with_withdrawal_rights_is_blocked(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, tmp_path: Path
) -> None:
    # The spec says nothing about withdrawals; the key in Vault carries them anyway.
    spec_path = small_spec(tmp_path, vault_prefix, ["general-full"])
    seed(openbao, spec_path, vault_prefix, executor={METADATA_PERMISSIONS: "general-full,withdrawal"})
    code, report, out = check("--spec", str(spec_path))
    assert code == EXIT_VIOLATION, out
    found = violated(report)
    assert "least-privilege-key" in found
    (violation,) = found["least-privilege-key"]
    assert violation["urn"].endswith("Deployment::momentum/executor")
    assert "withdrawal" in violation["message"] and "subaccounts" in violation["message"]


COPIES = [
    ("copied-secret", "hand-written/bot-creds"),
    ("copied-secret", "hand-written/bot"),
    ("copied-secret-data", "hand-written/bot-creds"),
    ("copied-config-map", "hand-written/bot-config"),
    ("copied-env", "hand-written/bot"),
    ("copied-arg", "hand-written/bot"),
]


@pytest.mark.vault
@pytest.mark.parametrize(("name", "offender"), COPIES, ids=[f"{n}:{o}" for n, o in COPIES])
def test_a_copy_of_the_key_material_is_blocked_and_never_shown(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, tmp_path: Path, name: str, offender: str
) -> None:
    """The wrapping program reads the executor's key from Vault and puts it somewhere else."""
    spec_path = small_spec(tmp_path, vault_prefix, ["general-full"])
    seed(openbao, spec_path, vault_prefix)
    code, report, out = check(
        "--spec", str(spec_path), "--program", SCENARIOS, "--config", f"scenario={name}"
    )
    assert code == EXIT_VIOLATION, out
    found = mandatory_for(report, offender)
    assert "no-duplicate-key-assignment" in found, report["violations"]
    assert "CANARY" not in out
    if name == "copied-secret" and offender.endswith("/bot"):
        assert any("Deployment momentum/executor" in m for m in found["no-duplicate-key-assignment"])


@pytest.mark.vault
def test_an_invented_fingerprint_is_an_unverifiable_key(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, tmp_path: Path
) -> None:
    """The sidecar's labelled key Secret claims a path and fingerprint Vault has never heard of."""
    spec_path = small_spec(tmp_path, vault_prefix, ["general-full"])
    seed(openbao, spec_path, vault_prefix)
    code, report, out = check(
        "--spec", str(spec_path), "--program", SCENARIOS, "--config", "scenario=compliant-sidecar"
    )
    assert code == EXIT_VIOLATION, out
    (message,) = mandatory_for(report, "hand-written/sidecar-key")["no-duplicate-key-assignment"]
    assert "unverifiable key" in message and "is the fingerprint of no key registered in Vault" in message


# Issue #13: render mode switched on for an explicit provider, which the program's pre-flight cannot read.


def rendered(report: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        v
        for v in report["violations"]
        if v["level"] == "mandatory" and v["policy"] == "key-not-in-env" and "render" in v["message"]
    ]


def test_the_fleet_moved_onto_a_rendering_provider_is_blocked_by_the_pack_process() -> None:
    code, report, out = scenario("render-fleet")
    assert code == EXIT_VIOLATION, out
    found = rendered(report)
    urns = {v["urn"] for v in found}
    assert any(u.endswith("kubernetes:core/v1:Secret::momentum/executor/key") for u in urns), urns
    assert all("kubernetes:core/v1:Secret::" in u for u in urns), urns
    assert all("renders manifests to 'rendered' (renderYamlToDirectory)" in v["message"] for v in found)
    assert "Traceback" not in out


def test_a_key_secret_on_a_rendering_provider_beside_the_fleet_is_blocked() -> None:
    code, report, out = scenario("render-secret")
    assert code == EXIT_VIOLATION, out
    assert [v["urn"].rsplit("::", 1)[1] for v in rendered(report)] == ["hand-written/sidecar-key"]
    assert "rendered-sidecar" not in out


def test_a_rendering_provider_that_declares_no_key_passes() -> None:
    code, _, out = scenario("render-harmless")
    assert code == EXIT_OK, out
