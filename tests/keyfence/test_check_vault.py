"""``keyfence check`` against a real OpenBao and the keyfence pack: metadata only, never material."""

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
from keyfence.spec import ProcessEntry, load_spec
from tests.openbao import OpenBao, free_port

pytestmark = pytest.mark.vault


def write_spec(tmp_path: Path, prefix: str, *, shared_key: bool = False) -> Path:
    """A small fleet whose every key declares its exact permissions (what least-privilege wants)."""

    def proc(name: str, role: str, permissions: list[str]) -> dict[str, Any]:
        return {"name": name, "role": role, "image": f"ghcr.io/acme/{name}:1.0.0", "permissions": permissions}

    data = {
        "version": 1,
        "vault": {"mount": "secret", "prefix": prefix},
        "subaccounts": [
            {
                "name": "momentum",
                "venue": "futures",
                "processes": [
                    proc("executor", "trader", ["general-full"]),
                    proc("feed", "market-data", ["general-read"]),
                ],
            },
            {
                "name": "basis",
                "venue": "futures",
                "processes": [proc("executor", "trader", ["general-full"])],
            },
        ],
    }
    path = tmp_path / ("shared.yaml" if shared_key else "fleet.yaml")
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


def run(*args: str) -> Any:
    return CliRunner().invoke(app, ["check", *args])


def assert_no_material(*texts: str) -> None:
    for text in texts:
        assert "CANARYKEY" not in text and "CANARYSECRET" not in text


def test_check_with_vault_passes_and_shows_fingerprints(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, tmp_path: Path
) -> None:
    spec_path = write_spec(tmp_path, vault_prefix)
    spec = load_spec(spec_path)
    keys = {e.ref: material(vault_prefix, e.ref) for e in spec.entries()}
    for entry in spec.entries():
        register(openbao, entry, keys[entry.ref])

    result = run("--spec", str(spec_path), "--format", "json")
    assert_no_material(result.stdout, result.stderr)
    assert result.exit_code == EXIT_OK, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["ok"] is True and report["offline"] is False

    text = run("--spec", str(spec_path))
    assert text.exit_code == EXIT_OK
    assert_no_material(text.stdout, text.stderr)
    for entry in spec.entries():
        assert keys[entry.ref].fingerprint[:12] in text.stdout
    assert "offline" not in text.stdout


def test_one_key_under_two_paths_fails_at_both_entries(
    openbao: OpenBao, vault_env: dict[str, str], vault_prefix: str, tmp_path: Path
) -> None:
    spec_path = write_spec(tmp_path, vault_prefix, shared_key=True)
    spec = load_spec(spec_path)
    shared = material(vault_prefix, "shared")
    for entry in spec.entries():
        key = shared if entry.process.role == "trader" else material(vault_prefix, entry.ref)
        register(openbao, entry, key)
    traders = {e.ref: e.location.line for e in spec.entries() if e.process.role == "trader"}

    result = run("--spec", str(spec_path), "--format", "sarif")
    assert_no_material(result.stdout, result.stderr)
    assert result.exit_code == EXIT_VIOLATION, result.stdout + result.stderr
    [sarif_run] = json.loads(result.stdout)["runs"]
    duplicates = [r for r in sarif_run["results"] if r["ruleId"] == "no-duplicate-key-assignment"]
    assert duplicates and all(r["level"] == "error" for r in duplicates)
    lines = {r["locations"][0]["physicalLocation"]["region"]["startLine"] for r in duplicates}
    assert lines == set(traders.values())


def test_unreachable_vault_exits_2_without_traceback(
    vault_env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("VAULT_ADDR", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("KEYFENCE_VAULT_RETRIES", "1")
    monkeypatch.setenv("KEYFENCE_VAULT_TIMEOUT", "2")
    result = run("--spec", str(write_spec(tmp_path, "kraken")))
    assert result.exit_code == EXIT_INVALID
    assert result.stderr.startswith("error: ") and "Traceback" not in result.stderr
