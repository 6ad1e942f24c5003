"""Key material appears only inside Pulumi secret values: never in anything else keyfence emits.

Every process of examples/fleet.yaml has a canary key in a real OpenBao (``tests/leaks/canary.py``);
every test runs with every logger at DEBUG and ``KEYFENCE_DEBUG=1``, and every text it gets back
(command output in every format, report files, log records, exception messages, reprs and
tracebacks, Pulumi inputs and stack outputs, the demo's screen) is searched for each key and
secret, whole, decoded and by their first or last 12 characters. Each test also checks it looked
at the real thing (a fingerprint, a path, the material inside the Secret), so a clean result means
"not leaked", not "not there".
"""

from __future__ import annotations

import io
import json
import os
import re
import traceback
from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime import rpc
from rich.console import Console

import keyfence.cli.app
import keyfence.demo as demo
from keyfence.check.harness import Collected, collect
from keyfence.check.report import CHECK_FORMATS, PLAN_FORMATS
from keyfence.errors import EXIT_OK, EXIT_VIOLATION, KeyfenceError, KeyVerificationError
from keyfence.material import fingerprint_of
from keyfence.program import ProgramOptions, prepare, run
from keyfence.vault import VaultRequestError, VaultSettings, connect
from tests.leaks.canary import PARTIAL, CanaryFleet, LogCapture, find_leaks, forms
from tests.leaks.conftest import NO_FINGERPRINT

pytestmark = pytest.mark.vault


def exception_texts(exc: BaseException) -> list[str]:
    """What a person or a log could ever see of an exception: message, repr, traceback, its chain."""
    out = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, KeyfenceError):
        out += [exc.headline, *exc.problems, exc.render()]
    return out


# --------------------------------------------------------------------------- keyfence keys


def test_registering_every_key_printed_and_logged_no_material(canary_fleet: CanaryFleet) -> None:
    registered = [text for what, text in canary_fleet.emitted if what.startswith("keyfence keys register")]
    assert len(registered) == 2 * len(canary_fleet.materials), "stdout and stderr of every registration"
    for ref, material in canary_fleet.materials.items():
        stored = canary_fleet.openbao.client.secrets.kv.v2.read_secret_version(
            path=canary_fleet.path_of(ref), mount_point=canary_fleet.mount, raise_on_deleted_version=True
        )["data"]["data"]
        assert stored == {"api_key": material.api_key, "api_secret": material.api_secret}, (
            "the canary is real"
        )


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_keys_list_shows_identities_not_material(canary_fleet: CanaryFleet, fmt: str) -> None:
    result = canary_fleet.invoke("keys", "list", "--spec", str(canary_fleet.spec_path), "--format", fmt)
    # The fleet holds a key without a fingerprint on purpose: list reports it (exit 1), never its material.
    assert result.exit_code == EXIT_VIOLATION, result.stdout + result.stderr
    for ref, fingerprint in canary_fleet.fingerprints().items():
        assert canary_fleet.path_of(ref) in result.stdout
        if ref != NO_FINGERPRINT:
            assert fingerprint[:PARTIAL] in result.stdout


def test_refused_and_rejected_registrations_echo_nothing(canary_fleet: CanaryFleet) -> None:
    spec = str(canary_fleet.spec_path)
    executor = canary_fleet.materials["momentum/executor"]
    again = canary_fleet.invoke(
        "keys", "register", "momentum/executor-b", "--venue", "futures", "--permissions", "general-full",
        "--mount", canary_fleet.mount, stdin=f"{executor.api_key}\n{executor.api_secret}\n",
    )  # fmt: skip
    assert again.exit_code == EXIT_VIOLATION and "refused" in again.stderr
    assert canary_fleet.path_of("momentum/executor") in again.stderr
    books = canary_fleet.materials[NO_FINGERPRINT]
    for stdin in (
        f"{books.api_key} \n{books.api_secret}\n",  # a blank pasted along
        f"{books.api_key}\n{books.api_secret[:-2]}\n",  # a truncated secret: not base64 any more
        f"{books.api_key}\n{books.api_key}\n",
        f"{books.api_key}\n",
    ):
        bad = canary_fleet.invoke("keys", "register", NO_FINGERPRINT, "--spec", spec, "--rotate", stdin=stdin)
        assert bad.exit_code != EXIT_OK, bad.stdout


# --------------------------------------------------------------------------- keyfence check and plan


@pytest.mark.parametrize("fmt", CHECK_FORMATS)
def test_check_reports_in_every_format_and_file_carry_no_material(
    canary_fleet: CanaryFleet, fmt: str, tmp_path: Path
) -> None:
    """Check mode reads Vault metadata, and the material of the one key whose metadata has no fingerprint."""
    report = tmp_path / f"report.{fmt}"
    spec = str(canary_fleet.spec_path)
    result = canary_fleet.invoke("check", "--spec", spec, "--format", fmt, "--output", str(report))
    assert result.exit_code == EXIT_OK, result.stdout + result.stderr
    assert result.stdout.startswith("PASSED"), result.stdout
    body = report.read_text(encoding="utf-8")
    canary_fleet.assert_clean(f"check --format {fmt} --output", body)
    if fmt in ("text", "markdown"):
        for fingerprint in canary_fleet.fingerprints().values():
            assert fingerprint[:PARTIAL] in body, (
                "every key identified, the unfingerprinted one from its material"
            )
    if fmt in ("json", "sarif"):
        json.loads(body)


def test_check_on_stdout_on_a_terminal_and_offline_carry_no_material(
    canary_fleet: CanaryFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = str(canary_fleet.spec_path)
    piped = canary_fleet.invoke("check", "--spec", spec)
    assert piped.exit_code == EXIT_OK and "subaccount momentum" in piped.stdout
    offline = canary_fleet.invoke("check", "--offline", "--spec", spec, "--format", "json")
    assert offline.exit_code == EXIT_OK and json.loads(offline.stdout)["offline"] is True
    monkeypatch.setattr(keyfence.cli.app, "_stdout_is_terminal", lambda: True)
    rich = canary_fleet.invoke("check", "--spec", spec)
    assert rich.exit_code == EXIT_OK and "PASSED" in rich.stdout


@pytest.mark.parametrize("fmt", PLAN_FORMATS)
def test_plan_redacts_every_secret(canary_fleet: CanaryFleet, fmt: str, tmp_path: Path) -> None:
    spec = str(canary_fleet.spec_path)
    result = canary_fleet.invoke("plan", "--spec", spec, "--format", fmt)
    assert result.exit_code == EXIT_OK, result.stderr
    written = tmp_path / "plan.out"
    to_file = canary_fleet.invoke("plan", "--spec", spec, "--format", fmt, "--output", str(written))
    canary_fleet.assert_clean(f"plan --format {fmt} --output", written.read_text(encoding="utf-8"))
    assert to_file.exit_code == EXIT_OK
    if fmt == "json":
        secrets = [
            r for r in json.loads(result.stdout)["resources"] if r["type"] == "kubernetes:core/v1:Secret"
        ]
        assert len(secrets) == len(canary_fleet.materials)
        assert all(s["inputs"]["stringData"] == "[secret]" for s in secrets)


# --------------------------------------------------------------------------- the Pulumi program, deploy mode


def split_by_secrecy(value: Any, inside: bool = False) -> tuple[list[str], list[str]]:
    """Every string leaf of a deserialised property tree: (outside any secret, inside one)."""
    if rpc.is_rpc_secret(value):
        return split_by_secrecy(rpc.unwrap_rpc_secret(value), True)
    plain: list[str] = []
    secret: list[str] = []
    children = value.values() if isinstance(value, dict) else value if isinstance(value, list) else None
    if children is None:
        if isinstance(value, str):
            (secret if inside else plain).append(value)
        return plain, secret
    for child in list(children) + (list(value.keys()) if isinstance(value, dict) else []):
        p, s = split_by_secrecy(child, inside)
        plain += p
        secret += s
    return plain, secret


def deploy(canary_fleet: CanaryFleet, monkeypatch: pytest.MonkeyPatch) -> Collected:
    for name, value in canary_fleet.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    return collect(lambda: run(ProgramOptions(spec_path=str(canary_fleet.spec_path), mode="deploy")))


def test_deploy_mode_holds_material_only_inside_pulumi_secrets(
    canary_fleet: CanaryFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    collected = deploy(canary_fleet, monkeypatch)
    inside_secrets: list[str] = []
    for resource in collected.resources:
        plain, secret = split_by_secrecy(rpc.deserialize_properties(resource.properties, keep_unknowns=True))
        canary_fleet.assert_clean(f"plain properties of {resource.type} {resource.name}", *plain)
        canary_fleet.assert_clean(f"inputs() of {resource.name}", json.dumps(resource.inputs()))
        canary_fleet.assert_clean(f"repr of {resource.name}", repr(resource))
        if secret:
            assert resource.type == "kubernetes:core/v1:Secret", resource.type
            inside_secrets += secret
    for ref, material in canary_fleet.materials.items():
        assert material.api_key in inside_secrets and material.api_secret in inside_secrets, ref
    outputs_plain, outputs_secret = split_by_secrecy(collected.stack_outputs)
    canary_fleet.assert_clean("stack outputs", *outputs_plain, *outputs_secret)
    assert set(collected.stack_outputs["processes"]) == set(canary_fleet.materials)
    for ref, fingerprint in canary_fleet.fingerprints().items():
        assert collected.stack_outputs["processes"][ref]["fingerprint"] == fingerprint


def test_key_objects_and_settings_never_show_what_they_hold(
    canary_fleet: CanaryFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy(canary_fleet, monkeypatch)  # the environment of a deploy
    settings = VaultSettings.from_env()
    options = ProgramOptions(spec_path=str(canary_fleet.spec_path), mode="deploy", vault=settings)
    _, keys = prepare(options)
    assert all(k.material is not None for k in keys), "deploy mode holds the material"
    texts = [repr(settings), str(settings), repr(options), repr(keys)]
    texts += [t for k in keys for t in (repr(k), str(k), repr(k.material), str(k.material), f"{k.material}")]
    canary_fleet.assert_clean("reprs of keys, key material, options and Vault settings", *texts)
    token = canary_fleet.openbao.root_token
    assert not any(token in t or token[:PARTIAL] in t for t in texts), "the Vault token is not shown either"


def test_a_fingerprint_mismatch_stops_deploy_with_a_message_free_of_material(
    canary_fleet: CanaryFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    """basis/feed's metadata claims momentum/executor's fingerprint: deploy refuses, naming no material."""
    client = canary_fleet.openbao.client.secrets.kv.v2
    path = canary_fleet.path_of("basis/feed")
    custom = client.read_secret_metadata(path=path, mount_point=canary_fleet.mount)["data"]["custom_metadata"]
    wrong = {**custom, "fingerprint": canary_fleet.fingerprints()["momentum/executor"]}
    canary_fleet.openbao.set_custom_metadata(path, wrong, mount=canary_fleet.mount)
    try:
        with pytest.raises(KeyVerificationError) as err:
            deploy(canary_fleet, monkeypatch)
        assert any("basis/feed" in p and "fingerprint does not match" in p for p in err.value.problems)
        canary_fleet.assert_clean("KeyVerificationError", *exception_texts(err.value))
        # The same stack in check mode: the metadata now says two processes share a key.
        checked = canary_fleet.invoke("check", "--spec", str(canary_fleet.spec_path), "--format", "sarif")
        assert checked.exit_code == EXIT_VIOLATION
        assert "no-duplicate-key-assignment" in checked.stdout
    finally:
        canary_fleet.openbao.set_custom_metadata(path, custom, mount=canary_fleet.mount)


def test_a_malformed_stored_key_is_reported_without_its_values(
    canary_fleet: CanaryFleet, monkeypatch: pytest.MonkeyPatch
) -> None:
    deploy(canary_fleet, monkeypatch)
    material = canary_fleet.materials["momentum/risk"]
    scratch = "scratch/malformed"
    stored: list[dict[str, Any]] = [
        {"api_key": material.api_key},
        {"api_key": material.api_key, "api_secret": 7},
        {"api_key": material.api_key, "api_secret": material.api_secret, "extra": material.api_secret},
        {"key": material.api_key, "secret": material.api_secret},
    ]
    with connect(VaultSettings.from_env()) as client:
        for data in stored:
            version = canary_fleet.openbao.put_data(scratch, data, mount=canary_fleet.mount)
            try:
                client.read_version(canary_fleet.mount, scratch, version)
            except VaultRequestError as exc:
                canary_fleet.assert_clean(f"reading {sorted(data)}", *exception_texts(exc))
            else:
                assert set(data) == {"api_key", "api_secret", "extra"}, f"{sorted(data)} was accepted"


# --------------------------------------------------------------------------- the demo

BASE64_RUN = re.compile(r"[A-Za-z0-9+/_=-]{20,}")


def test_the_demo_shows_none_of_the_keys_it_generates(
    monkeypatch: pytest.MonkeyPatch, logs: LogCapture
) -> None:
    """The demo generates its own keys and keeps them (``Demo.materials``): its whole screen is searched."""
    for name in [n for n in os.environ if n.startswith(("VAULT_", "BAO_", "KEYFENCE_VAULT_"))]:
        monkeypatch.delenv(name)
    sink = io.StringIO()
    run_ = demo.Demo(demo.Screen(Console(file=sink, width=200)))
    assert run_.run() == EXIT_OK, sink.getvalue()
    out = sink.getvalue()
    assert len(run_.materials) >= 7, "the demo exposes what it generated"
    assert not find_leaks(out, run_.materials), find_leaks(out, run_.materials)
    values = [v for m in run_.materials.values() for v in forms(m).values()]
    for word in BASE64_RUN.findall(out):
        assert not any(word in value for value in values), f"{word!r} is part of a generated key"
    for material in run_.materials.values():
        assert fingerprint_of(material.api_key)[:PARTIAL] in out, "the keys it registered are the ones shown"
    assert not find_leaks(logs.text, run_.materials), "nor do the log records of its own process"


# --------------------------------------------------------------------------- operator delivery modes


@pytest.mark.parametrize("delivery", ["vault-secrets-operator", "external-secrets"])
def test_operator_delivered_keys_are_nowhere_in_state_or_plan(
    canary_fleet: CanaryFleet, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, delivery: str
) -> None:
    """momentum/risk delivered by an operator: its material is in no property, secret or plan."""
    text = canary_fleet.spec_path.read_text(encoding="utf-8")
    marker = "        key: kraken/momentum/risk-v2\n"
    assert marker in text
    variant = text.replace(marker, f"{marker}        delivery: {delivery}\n        workload: statefulset\n")
    variant = variant.replace(
        "subaccounts:\n", "operators:\n  vault_address: https://vault.example.com:8200\nsubaccounts:\n", 1
    )
    spec_path = tmp_path / "operators.yaml"
    spec_path.write_text(variant, encoding="utf-8")
    for name, value in canary_fleet.env.items():
        if value is None:
            monkeypatch.delenv(name, raising=False)
        else:
            monkeypatch.setenv(name, value)
    collected = collect(lambda: run(ProgramOptions(spec_path=str(spec_path), mode="deploy")))
    risk = {"momentum/risk": canary_fleet.materials["momentum/risk"]}
    everything: list[str] = []
    for resource in collected.resources:
        plain, secret = split_by_secrecy(rpc.deserialize_properties(resource.properties, keep_unknowns=True))
        everything += plain + secret
        canary_fleet.assert_clean(f"plain properties of {resource.name}", *plain)
    everything += [json.dumps(collected.stack_outputs, default=str)]
    found = find_leaks("\n".join(everything), risk)
    assert not found, f"operator-delivered key in Pulumi state: {found}"
    others = {ref: m for ref, m in canary_fleet.materials.items() if ref != "momentum/risk"}
    assert all(m.api_key in everything for m in others.values()), "the pulumi-secret keys are still there"
    plan = canary_fleet.invoke("plan", "--spec", str(spec_path), "--format", "json")
    assert plan.exit_code == EXIT_OK, plan.stderr
    assert not find_leaks(plan.stdout, risk)
