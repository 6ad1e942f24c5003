"""The key ledger against a real OpenBao: one key, one holder, across paths, prefixes and stacks."""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keyfence.check.runner import run_check
from keyfence.claims import ClaimProvider
from keyfence.cli.app import app
from keyfence.errors import EXIT_OK, EXIT_VIOLATION, KeyfenceError, KeyVerificationError, RefusedError
from keyfence.keys import resolve_keys
from keyfence.keystore import Placement, inventory, plan_registration, register_key
from keyfence.keystore.claims import ClaimRefusedError, claim_key, release_claim
from keyfence.material import KeyMaterial
from keyfence.spec import FleetSpec, load_spec_text
from keyfence.vault import KV2Client, Ledger, LedgerAccessError, VaultSettings, connect
from tests.openbao import OpenBao

pytestmark = pytest.mark.vault

ISSUED: list[KeyMaterial] = []
STACK_A = "organization/desk/prod"
STACK_B = "organization/desk/staging"


def new_material(*, padded: bool = True) -> KeyMaterial:
    raw = secrets.token_bytes(47 if padded else 48)  # 47 bytes encode with one '=' of padding
    material = KeyMaterial(
        api_key=f"LEDGERKEY{secrets.token_hex(16)}", api_secret=base64.b64encode(raw).decode()
    )
    ISSUED.append(material)
    return material


def assert_no_material(text: str) -> None:
    for material in ISSUED:
        assert material.api_key not in text and material.api_secret not in text


def spec_for(mount: str, *processes: str, name: str = "fleet.yaml") -> FleetSpec:
    procs = "".join(
        f"      - {{name: {p}, role: trader, image: 'ghcr.io/acme/bot:1.0.0'}}\n" for p in processes
    )
    text = (
        f"version: 1\nvault: {{mount: {mount}, prefix: kraken}}\n"
        f"subaccounts:\n  - name: momentum\n    venue: futures\n    processes:\n{procs}"
    )
    return load_spec_text(text, name)


def register(
    client: KV2Client,
    mount: str,
    name: str,
    material: KeyMaterial,
    *,
    prefix: str = "kraken",
    rotate: bool = False,
) -> Any:
    plan = plan_registration(
        name, venue="futures", permissions="general-full", mount=mount, prefix=prefix, rotate=rotate
    )
    return register_key(client, plan, material)


# --------------------------------------------------------------------------- registration races


def test_racing_registrations_of_one_key_at_two_prefixes_have_one_winner(
    openbao: OpenBao, mount: str
) -> None:
    """Threads register the same key at different paths under different prefixes: one wins, every time."""
    settings = VaultSettings(addr=openbao.addr, token=openbao.root_token, timeout=10.0)
    for trial in range(15):
        material = new_material()
        barrier = threading.Barrier(3)
        outcomes: list[object] = [None] * 3

        def race(
            index: int,
            trial: int = trial,
            material: KeyMaterial = material,
            barrier: Any = barrier,
            outcomes: list[object] = outcomes,
        ) -> None:
            with connect(settings) as client:
                barrier.wait()
                try:
                    outcomes[index] = register(
                        client, mount, f"s{trial}/p{index}", material, prefix=f"desk{index}"
                    )
                except RefusedError as exc:
                    outcomes[index] = exc

        threads = [threading.Thread(target=race, args=(i,)) for i in range(3)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        won = [o for o in outcomes if not isinstance(o, RefusedError)]
        assert len(won) == 1, f"trial {trial}: {outcomes}"
        for lost in (o for o in outcomes if isinstance(o, RefusedError)):
            assert_no_material(str(lost))
        with connect(settings) as client:
            record = Ledger(client, mount).read(material.fingerprint)
            assert record is not None and record.path == won[0].path  # type: ignore[attr-defined]
            stored = [p for p in client.list_keys(mount, "") if not p.startswith("keyfence/")]
            holders = [
                p
                for p in stored
                if client.read_metadata(mount, p).custom_metadata.get("fingerprint") == material.fingerprint
            ]
            assert holders == [won[0].path]  # type: ignore[attr-defined]


def test_racing_registrations_in_separate_processes_have_one_winner(openbao: OpenBao, mount: str) -> None:
    env = {**os.environ, "VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token}
    for trial in range(3):
        material = new_material()
        procs = [
            subprocess.Popen(
                [
                    sys.executable,
                    "-c",
                    "from keyfence.cli import main; main()",
                    "keys",
                    "register",
                    f"r{trial}/p{index}",
                    "--venue",
                    "futures",
                    "--permissions",
                    "general-full",
                    "--mount",
                    mount,
                    "--prefix",
                    f"proc{index}",
                ],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                env=env,
                text=True,
            )
            for index in range(2)
        ]
        results = [p.communicate(f"{material.api_key}\n{material.api_secret}\n", timeout=120) for p in procs]
        codes = sorted(p.returncode for p in procs)
        assert codes == [EXIT_OK, EXIT_VIOLATION], results
        for out, err in results:
            assert_no_material(out + err)


# --------------------------------------------------------------------------- claims across stacks


def _register_spec_keys(root: KV2Client, mount: str, spec: FleetSpec) -> dict[str, KeyMaterial]:
    out = {}
    for entry in spec.entries():
        out[entry.ref] = new_material()
        register(root, mount, entry.ref, out[entry.ref])
    return out


def test_two_stacks_claim_one_key_one_wins_and_the_other_is_named(root: KV2Client, mount: str) -> None:
    spec = spec_for(mount, "executor")
    material = _register_spec_keys(root, mount, spec)["momentum/executor"]
    ledger = Ledger(root, mount)
    results: list[object] = [None, None]
    barrier = threading.Barrier(2)

    def claim(index: int, stack: str) -> None:
        barrier.wait()
        try:
            results[index] = claim_key(
                ledger, material.fingerprint, "kraken/momentum/executor", stack, "momentum/executor"
            )
        except ClaimRefusedError as exc:
            results[index] = exc

    threads = [threading.Thread(target=claim, args=(i, s)) for i, s in enumerate((STACK_A, STACK_B))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    refused = [r for r in results if isinstance(r, ClaimRefusedError)]
    assert len(refused) == 1
    record = ledger.read(material.fingerprint)
    assert record is not None and record.stack in (STACK_A, STACK_B)
    loser = STACK_B if record.stack == STACK_A else STACK_A
    assert record.stack in str(refused[0])

    # The loser's pre-flight (preview and up) names the holder, its process and since when.
    with pytest.raises(KeyVerificationError) as info:
        resolve_keys(spec, root, "deploy", loser)
    text = str(info.value) + " ".join(info.value.problems)
    assert record.stack in text and "momentum/executor" in text and record.claimed_at in text
    assert_no_material(text)
    # The holder itself resolves fine.
    (key,) = resolve_keys(spec, root, "deploy", record.stack)
    assert key.fingerprint == material.fingerprint


def test_check_reports_another_stacks_claim_as_mandatory(
    openbao: OpenBao, root: KV2Client, mount: str, tmp_path: Path
) -> None:
    spec = spec_for(mount, "executor")
    material = _register_spec_keys(root, mount, spec)["momentum/executor"]
    claim_key(
        Ledger(root, mount), material.fingerprint, "kraken/momentum/executor", STACK_A, "momentum/executor"
    )
    path = tmp_path / "fleet.yaml"
    path.write_text(_spec_text(mount))
    settings = VaultSettings(addr=openbao.addr, token=openbao.root_token, timeout=10.0)
    theirs = run_check(path, stack="staging", project="desk", offline=False, vault_settings=settings)
    ledger_findings = [f for f in theirs.mandatory if f.violation.policy == "key-ledger"]
    assert len(ledger_findings) == 1 and not theirs.ok
    assert STACK_A in ledger_findings[0].violation.message
    assert ledger_findings[0].ref == "momentum/executor"
    ours = run_check(path, stack="prod", project="desk", offline=False, vault_settings=settings)
    assert not [f for f in ours.mandatory if f.violation.policy == "key-ledger"]


def _spec_text(mount: str) -> str:
    return (
        f"version: 1\nvault: {{mount: {mount}, prefix: kraken}}\nsubaccounts:\n  - name: momentum\n"
        "    venue: futures\n    processes:\n"
        "      - {name: executor, role: trader, image: 'ghcr.io/acme/bot:1.0.0'}\n"
    )


# --------------------------------------------------------------------------- the claim resource


def test_claim_resource_create_and_delete_follow_the_process(
    openbao: OpenBao, root: KV2Client, mount: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in list(os.environ):
        if name.startswith(("VAULT_", "KEYFENCE_VAULT_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("VAULT_ADDR", openbao.addr)
    monkeypatch.setenv("VAULT_TOKEN", openbao.root_token)
    spec = spec_for(mount, "executor")
    material = _register_spec_keys(root, mount, spec)["momentum/executor"]
    ledger = Ledger(root, mount)
    props = {
        "mount": mount,
        "ledger": "keyfence/ledger",
        "fingerprint": material.fingerprint,
        "path": "kraken/momentum/executor",
        "stack": STACK_A,
        "process": "momentum/executor",
    }
    provider = ClaimProvider()
    created = provider.create(dict(props))
    assert created.id == ledger.ref(material.fingerprint)
    record = ledger.read(material.fingerprint)
    assert record is not None and (record.stack, record.process) == (STACK_A, "momentum/executor")
    # Creating again (a retried 'up') is idempotent; another stack's claim is refused.
    provider.create(dict(props))
    with pytest.raises(ClaimRefusedError, match=STACK_A):
        provider.create({**props, "stack": STACK_B})
    # A renamed process of the same stack takes the key over before the old claim is deleted...
    assert provider.diff("x", props, {**props, "process": "momentum/exec2"}).replaces == ["process"]
    provider.create({**props, "process": "momentum/exec2"})
    provider.delete("x", dict(props))  # ...so deleting the old claim leaves the new one alone.
    record = ledger.read(material.fingerprint)
    assert record is not None and record.process == "momentum/exec2"
    # The process leaves the spec / the stack is destroyed: the claim is released, the record stays.
    provider.delete("x", {**props, "process": "momentum/exec2"})
    record = ledger.read(material.fingerprint)
    assert record is not None and not record.claimed and record.path == "kraken/momentum/executor"
    # Now another stack may claim it.
    provider.create({**props, "stack": STACK_B})


def test_claim_gives_a_key_registered_before_the_ledger_its_record(root: KV2Client, mount: str) -> None:
    material = new_material()
    path = "kraken/momentum/old"
    root.write_key(mount, path, material, cas=0)
    root.update_custom_metadata(mount, path, {"fingerprint": material.fingerprint})
    ledger = Ledger(root, mount)
    assert ledger.read(material.fingerprint) is None
    record = claim_key(ledger, material.fingerprint, path, STACK_A, "momentum/old")
    assert record.version == 1 and record.stack == STACK_A
    assert release_claim(ledger, material.fingerprint, STACK_B, "momentum/old") is None
    freed = release_claim(ledger, material.fingerprint, STACK_A, "momentum/old")
    assert freed is not None and freed.stack == STACK_A


def test_release_command_refuses_another_stacks_claim_unless_forced(
    openbao: OpenBao, root: KV2Client, mount: str, vault_env: dict[str, str]
) -> None:
    material = new_material()
    register(root, mount, "momentum/executor", material)
    claim_key(
        Ledger(root, mount), material.fingerprint, "kraken/momentum/executor", STACK_A, "momentum/executor"
    )
    runner = CliRunner()
    args = ["keys", "release", "momentum/executor", "--mount", mount]
    refused = runner.invoke(app, [*args, "--stack", STACK_B])
    assert refused.exit_code == EXIT_VIOLATION and STACK_A in refused.output
    assert Ledger(root, mount).read(material.fingerprint).claimed  # type: ignore[union-attr]
    done = runner.invoke(app, [*args, "--stack", STACK_A])
    assert done.exit_code == EXIT_OK, done.output
    assert "released" in done.output and STACK_A in done.output
    assert not Ledger(root, mount).read(material.fingerprint).claimed  # type: ignore[union-attr]
    claim_key(
        Ledger(root, mount), material.fingerprint, "kraken/momentum/executor", STACK_A, "momentum/executor"
    )
    forced = runner.invoke(app, [*args, "--stack", "staging", "--force"])
    assert forced.exit_code == EXIT_OK and STACK_A in forced.output


# --------------------------------------------------------------------------- key identity


def test_rollback_breaks_the_fingerprint_and_is_caught(openbao: OpenBao, root: KV2Client, mount: str) -> None:
    a, b = new_material(), new_material()
    register(root, mount, "basis/executor", a)
    register(root, mount, "basis/executor", b, rotate=True)
    register(root, mount, "basis/risk", a)  # A's record went with the rotation; A may live elsewhere now
    # The rollback, as 'bao kv rollback -version=1' does it: version 1's data written as a new version.
    old = openbao.client.secrets.kv.v2.read_secret_version(
        path="kraken/basis/executor", version=1, mount_point=mount, raise_on_deleted_version=True
    )
    openbao.client.secrets.kv.v2.create_or_update_secret(
        path="kraken/basis/executor", secret=old["data"]["data"], cas=2, mount_point=mount
    )
    text = (
        "version: 1\nvault: {mount: " + mount + ", prefix: kraken}\nsubaccounts:\n  - name: basis\n"
        "    venue: futures\n    processes:\n"
        "      - {name: executor, role: trader, image: 'ghcr.io/acme/bot:1.0.0'}\n"
    )
    spec = load_spec_text(text, "fleet.yaml")
    # A metadata-only token cannot tell which key version 3 holds: the check stops, it never passes.
    token = openbao.token(
        f'path "{mount}/metadata/*" {{ capabilities = ["read", "list"] }}\n'
        f'path "{mount}/data/keyfence/ledger/*" {{ capabilities = ["read"] }}'
    )
    ci = connect(VaultSettings(addr=openbao.addr, token=token, timeout=10.0))
    with ci, pytest.raises(KeyVerificationError) as info:
        resolve_keys(spec, ci, "check", STACK_A)
    assert "describes version 2, but the current version is 3" in " ".join(info.value.problems)
    # Deploy reads the material: it holds A, which the ledger records at basis/risk.
    with pytest.raises(KeyVerificationError) as info:
        resolve_keys(spec, root, "deploy", STACK_A)
    problems = " ".join(info.value.problems)
    assert "metadata fingerprint does not match" in problems and "basis/risk" in problems
    # keys list calls it a problem too.
    result = inventory(root, Placement(mount, "kraken"))
    assert not result.clean
    assert any(
        p.path == "kraken/basis/executor" and "current version is 3" in p.problem for p in result.problems
    )


def test_rotation_merges_custom_metadata(openbao: OpenBao, root: KV2Client, mount: str) -> None:
    register(root, mount, "momentum/executor", new_material())
    meta = root.read_metadata(mount, "kraken/momentum/executor").custom_metadata
    root.update_custom_metadata(
        mount, "kraken/momentum/executor", {**meta, "owner": "desk-a", "ticket": "OPS-1"}
    )
    new = new_material()
    register(root, mount, "momentum/executor", new, rotate=True)
    custom = root.read_metadata(mount, "kraken/momentum/executor").custom_metadata
    assert custom["owner"] == "desk-a" and custom["ticket"] == "OPS-1"
    assert custom["fingerprint"] == new.fingerprint and custom["fingerprint_version"] == "2"


def test_preflight_refuses_a_hand_written_version_without_padding(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    good = new_material()
    register(root, mount, "momentum/executor", good)
    unpadded = good.api_secret.rstrip("=")
    assert unpadded != good.api_secret
    openbao.client.secrets.kv.v2.create_or_update_secret(
        path="kraken/momentum/executor",
        secret={"api_key": good.api_key, "api_secret": unpadded},
        cas=1,
        mount_point=mount,
    )
    spec = spec_for(mount, "executor")
    with pytest.raises(KeyVerificationError) as info:
        resolve_keys(spec, root, "deploy", STACK_A)
    text = " ".join(info.value.problems)
    assert "not valid base64" in text and "padding" in text
    assert_no_material(text + str(info.value))


def test_list_reports_unfingerprinted_keys_copies_anywhere_and_repairs_records(
    root: KV2Client, mount: str
) -> None:
    bare, copied = new_material(), new_material()
    root.write_key(mount, "kraken/momentum/bare", bare, cas=0)
    register(root, mount, "momentum/executor", copied)
    # A copy outside the prefix, written by hand with a (correct) fingerprint.
    root.write_key(mount, "elsewhere/copy", copied, cas=0)
    root.update_custom_metadata(mount, "elsewhere/copy", {"fingerprint": copied.fingerprint})
    result = inventory(root, Placement(mount, "kraken"))
    assert not result.clean
    assert any(p.path == "kraken/momentum/bare" and "no fingerprint" in p.problem for p in result.problems)
    assert [d.paths for d in result.duplicates] == [("elsewhere/copy", "kraken/momentum/executor")]

    # A key registered before the ledger gets its record with --repair (create-only).
    legacy = new_material()
    root.write_key(mount, "kraken/momentum/legacy", legacy, cas=0)
    root.update_custom_metadata(mount, "kraken/momentum/legacy", {"fingerprint": legacy.fingerprint})
    ledger = Ledger(root, mount)
    assert ledger.read(legacy.fingerprint) is None
    repaired = inventory(root, Placement(mount, "kraken"), repair=True)
    assert any("kraken/momentum/legacy" in line for line in repaired.repaired)
    record = ledger.read(legacy.fingerprint)
    assert record is not None and record.path == "kraken/momentum/legacy"
    assert_no_material(json.dumps(repaired.to_json()))


def test_list_reports_a_record_whose_path_lost_its_key(root: KV2Client, mount: str) -> None:
    material = new_material()
    register(root, mount, "momentum/executor", material)
    claim_key(
        Ledger(root, mount), material.fingerprint, "kraken/momentum/executor", STACK_A, "momentum/executor"
    )
    root.destroy_all_versions(mount, "kraken/momentum/executor")
    result = inventory(root, Placement(mount, "kraken"))
    assert any("no longer does" in p.problem and STACK_A in p.problem for p in result.problems)
    # Claimed: --repair leaves it (a stack still runs that key) and it stays a problem.
    assert not inventory(root, Placement(mount, "kraken"), repair=True).clean
    release_claim(Ledger(root, mount), material.fingerprint, STACK_A, "momentum/executor")
    assert inventory(root, Placement(mount, "kraken"), repair=True).repaired
    assert inventory(root, Placement(mount, "kraken")).clean


def test_revoke_refuses_a_claimed_key_or_one_the_spec_uses(
    root: KV2Client, mount: str, vault_env: dict[str, str], tmp_path: Path
) -> None:
    material = new_material()
    register(root, mount, "momentum/executor", material)
    ledger = Ledger(root, mount)
    claim_key(ledger, material.fingerprint, "kraken/momentum/executor", STACK_A, "momentum/executor")
    runner = CliRunner()
    args = ["keys", "revoke", "momentum/executor", "--mount", mount, "--yes"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == EXIT_VIOLATION and STACK_A in refused.output
    assert root.read_metadata(mount, "kraken/momentum/executor").current_version == 1
    release_claim(ledger, material.fingerprint, STACK_A, "momentum/executor")
    spec = tmp_path / "fleet.yaml"
    spec.write_text(_spec_text(mount))
    used = runner.invoke(app, ["keys", "revoke", "momentum/executor", "--spec", str(spec), "--yes"])
    assert used.exit_code == EXIT_VIOLATION and "momentum/executor" in used.output
    forced = runner.invoke(
        app, ["keys", "revoke", "momentum/executor", "--spec", str(spec), "--yes", "--force"]
    )
    assert forced.exit_code == EXIT_OK, forced.output
    assert ledger.read(material.fingerprint) is None


def test_a_vault_that_refuses_the_ledger_names_the_policy_to_add(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    spec = spec_for(mount, "executor")
    _register_spec_keys(root, mount, spec)
    token = openbao.token(
        f'path "{mount}/data/kraken/*" {{ capabilities = ["read"] }}\n'
        f'path "{mount}/metadata/kraken/*" {{ capabilities = ["read", "list"] }}'
    )
    deploy = connect(VaultSettings(addr=openbao.addr, token=token, timeout=10.0))
    with deploy, pytest.raises(LedgerAccessError) as info:
        resolve_keys(spec, deploy, "deploy", STACK_A)
    message = str(info.value)
    assert f'path "{mount}/data/keyfence/ledger/*"' in message and "docs/vault-policies/" in message
    assert "permission denied" in message
    assert isinstance(info.value, KeyfenceError)
