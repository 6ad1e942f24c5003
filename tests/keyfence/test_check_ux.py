"""``keyfence check`` as the person reads it: the verdict never misleads, every report is written,
each violation points at its line, and the pull-request comment fits GitHub's limit.

The keyfence pack and the wrapping test program run for real (offline, no Vault needed).
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keyfence.check.failure import CheckFailure, Problem
from keyfence.check.markdown import (
    FULL_REPORT_HINT,
    GITHUB_COMMENT_LIMIT,
    MARKDOWN_BUDGET,
    check_markdown,
    failure_markdown,
)
from keyfence.check.results import CheckResult, Finding, ProcessRow
from keyfence.check.verdict import PolicyMeta, Violation
from keyfence.cli.app import app
from keyfence.errors import EXIT_INVALID, EXIT_OK, EXIT_VIOLATION
from keyfence.spec import Location
from tests.fleet_fixtures import EXAMPLE_SPEC, ROOT

PROGRAM = str(ROOT / "tests" / "fixtures" / "programs" / "scenarios")
PROGRAM_MAIN = Path(PROGRAM) / "__main__.py"
FORMATS = ("text", "json", "markdown", "sarif")


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def check_program(scenario: str, *args: str) -> Any:
    return invoke(
        "check",
        "--offline",
        "--spec",
        EXAMPLE_SPEC,
        "--program",
        PROGRAM,
        "--config",
        f"scenario={scenario}",
        *args,
    )


def line_of(path: Path, needle: str) -> int:
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if needle in line)


# --------------------------------------------------------------------------- disabled policies


@pytest.fixture(scope="module")
def all_disabled(tmp_path_factory: pytest.TempPathFactory) -> str:
    path = tmp_path_factory.mktemp("config") / "all-disabled.json"
    path.write_text('{"all": "disabled"}')
    return str(path)


def test_a_shared_key_is_blocked_when_the_policies_are_on() -> None:
    assert check_program("rogue-mount").exit_code == EXIT_VIOLATION


@pytest.mark.parametrize("fmt", FORMATS)
def test_disabled_mandatory_policies_are_in_the_headline_of_every_format(all_disabled: str, fmt: str) -> None:
    result = check_program("rogue-mount", "--policy-pack-config", all_disabled, "--format", fmt)
    assert result.exit_code == EXIT_OK  # Pulumi honours the config too; the report must say so
    out = result.stdout
    for policy in ("no-duplicate-key-assignment", "single-writer-per-key", "hardened-workload"):
        assert policy in out, f"{fmt}: {policy} not named as disabled"
    if fmt == "json":
        report = json.loads(out)
        assert "DISABLED" in report["verdict"]
        assert "no-duplicate-key-assignment" in report["disabled"]
        assert "no-duplicate-key-assignment" in report["weakened"]
    elif fmt == "sarif":
        run = json.loads(out)["runs"][0]
        assert "DISABLED" in run["properties"]["verdict"]
        notes = run["invocations"][0]["toolExecutionNotifications"]
        assert any("DISABLED" in n["message"]["text"] for n in notes)
    elif fmt == "markdown":
        assert (
            "DISABLED" in out.splitlines()[0] + out.splitlines()[2] or "switched off" in out.splitlines()[0]
        )
        assert "DISABLED" in "\n".join(out.splitlines()[:6])
    else:
        assert "disabled (not evaluated)" in out
        assert "DISABLED" in out.strip().splitlines()[-1]


def test_advisory_only_policies_are_listed_in_every_format() -> None:
    for fmt in FORMATS:
        out = check_program("none", "--format", fmt).stdout
        assert "hardened-workload" in out, fmt  # the keyfence pack's advisory policy
    report = json.loads(check_program("none", "--format", "json").stdout)
    assert report["advisory_only"] == ["hardened-workload"] and report["weakened"] == []


# --------------------------------------------------------------------------- exit 2 still reports


INVALID = """\
version: 1
subaccounts:
  - name: alpha
    venue: futures
    processes:
      - name: good
        role: trader
        image: ghcr.io/acme/good:1.0
        replicas: 2
"""


@pytest.mark.parametrize("fmt", ["sarif", "markdown", "json", "text"])
def test_exit_2_writes_the_requested_report_with_the_spec_locations(tmp_path: Path, fmt: str) -> None:
    spec = tmp_path / "fleet.yaml"
    spec.write_text(INVALID)
    out = tmp_path / f"report.{fmt}"
    result = invoke("check", "--offline", "--spec", str(spec), "--format", fmt, "--output", str(out))
    assert result.exit_code == EXIT_INVALID
    assert "replicas" in result.stderr  # the error is still printed for the person at the terminal
    body = out.read_text()
    if fmt == "sarif":
        sarif = json.loads(body)
        (item,) = sarif["runs"][0]["results"]
        region = item["locations"][0]["physicalLocation"]["region"]
        assert region["startLine"] == 9 and item["level"] == "error"
        assert sarif["runs"][0]["invocations"][0]["executionSuccessful"] is False
    elif fmt == "json":
        report = json.loads(body)
        assert report["ok"] is False and report["exit_code"] == EXIT_INVALID
        assert report["problems"][0]["line"] == 9 and "replicas" in report["problems"][0]["message"]
    elif fmt == "markdown":
        assert "could not run" in body and f"{spec}:9:9" in body and "replicas" in body
    else:
        assert f"{spec}:9:9" in body


RUN = "https://github.com/acme/fleet/actions/runs/42"


def test_exit_2_writes_every_requested_report_from_one_run(tmp_path: Path) -> None:
    spec = tmp_path / "fleet.yaml"
    spec.write_text(INVALID)
    files = {fmt: tmp_path / f"report.{fmt}" for fmt in FORMATS}
    reports = [arg for fmt, path in files.items() for arg in ("--report", f"{fmt}={path}")]
    result = invoke("check", "--offline", "--spec", str(spec), "--details-url", RUN, *reports)
    assert result.exit_code == EXIT_INVALID
    assert "replicas" in result.stderr and result.stdout == ""
    sarif = json.loads(files["sarif"].read_text())
    [run] = sarif["runs"]
    assert run["invocations"][0]["executionSuccessful"] is False
    (item,) = run["results"]
    location = item["locations"][0]["physicalLocation"]
    assert Path(location["artifactLocation"]["uri"]).name == "fleet.yaml"
    assert location["region"] == {"startLine": 9, "startColumn": 9} and item["level"] == "error"
    report = json.loads(files["json"].read_text())
    assert report["exit_code"] == EXIT_INVALID and report["problems"][0]["line"] == 9
    markdown = files["markdown"].read_text()
    assert "could not run" in markdown and f"{spec}:9:9" in markdown and f"Full report: {RUN}" in markdown
    assert f"{spec}:9:9" in files["text"].read_text()


# --------------------------------------------------------------------------- violation locations


def test_hand_written_violations_point_at_the_programs_own_line(tmp_path: Path) -> None:
    report = json.loads(check_program("hpa", "--format", "json").stdout)
    (hpa,) = [v for v in report["violations"] if "HorizontalPodAutoscaler" in v["urn"]]
    assert Path(hpa["file"]).resolve() == PROGRAM_MAIN.resolve()
    assert hpa["line"] == line_of(PROGRAM_MAIN, '"hand-written/sidecar-hpa"') - 1
    for violation in report["violations"]:
        assert set(violation) >= {"policy", "level", "urn", "message", "file", "line"}

    sarif = json.loads(check_program("hpa", "--format", "sarif").stdout)
    results = sarif["runs"][0]["results"]
    located = [
        r
        for r in results
        if "HorizontalPodAutoscaler" in r["locations"][0]["logicalLocations"][0]["fullyQualifiedName"]
    ]
    physical = located[0]["locations"][0]["physicalLocation"]
    assert physical["artifactLocation"]["uri"].endswith("scenarios/__main__.py")
    assert physical["region"]["startLine"] == hpa["line"]


def test_config_keyfence_spec_names_the_spec_for_a_wrapping_program(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # outside any Pulumi project: only the config names the spec
    result = invoke(
        "check",
        "--offline",
        "--program",
        PROGRAM,
        "--config",
        f"keyfence:spec={ROOT / EXAMPLE_SPEC}",
        "--config",
        "scenario=none",
        "--format",
        "json",
    )
    assert result.exit_code == EXIT_OK, result.stderr
    assert json.loads(result.stdout)["spec"].endswith("fleet.yaml")
    clash = invoke("check", "--offline", "--spec", "other.yaml", "--config", "keyfence:spec=fleet.yaml")
    assert clash.exit_code == EXIT_INVALID and "two different specs" in clash.stderr


# --------------------------------------------------------------------------- markdown size


def big_result(processes: int, violations: int, message_chars: int = 300) -> CheckResult:
    policies = [PolicyMeta("p-mandatory", "d", "mandatory", "resource", None)]
    rows = [
        ProcessRow(
            f"sub{i % 20}/proc{i}",
            f"sub{i % 20}",
            f"proc{i}",
            f"sub{i % 20}",
            f"sub{i % 20}-proc{i}",
            "trader",
            f"secret/kraken/sub{i % 20}/proc{i}",
            "ab" * 32,
            "1",
            "query-funds,query-open-orders,modify-orders",
        )
        for i in range(processes)
    ]
    findings = [
        Finding(
            Violation(
                "p-mandatory",
                "mandatory",
                f"urn:pulumi:dev::keyfence::k:v:T::r{i}",
                "x" * message_chars,
                "pack",
            ),
            f"sub0/proc{i}",
            Location("fleet.yaml", i + 1, 7, ""),
        )
        for i in range(violations)
    ]
    return CheckResult(
        spec_path="fleet.yaml",
        stack="dev",
        offline=False,
        pack="keyfence",
        pack_version="1",
        resource_count=processes * 4,
        policies=policies,
        levels={"p-mandatory": "mandatory"},
        processes=rows,
        findings=findings,
    )


def test_violations_come_first_and_a_large_fleet_is_summarised() -> None:
    body = check_markdown(big_result(600, 1))
    assert len(body.encode()) <= MARKDOWN_BUDGET < GITHUB_COMMENT_LIMIT
    assert body.index("### Violations") < body.index("### Fleet")
    assert "600 processes in 20 subaccounts" in body
    assert "proc599" not in body  # summarised per subaccount, not listed


def test_too_many_violations_are_counted_and_the_full_report_named() -> None:
    body = check_markdown(big_result(600, 2000, message_chars=600))
    assert len(body.encode()) <= MARKDOWN_BUDGET
    note = next(line for line in body.splitlines() if line.startswith("> Left out"))
    shown = body.count("- **sub0/proc")
    assert re.search(rf"{2000 - shown} violations", note), note
    assert "--format text" in note
    assert body.rstrip().splitlines()[-1].startswith("**FAILED: 2000 mandatory")


def test_a_huge_single_message_is_clipped_not_the_report() -> None:
    body = check_markdown(big_result(3, 1, message_chars=200_000))
    assert len(body.encode()) <= MARKDOWN_BUDGET and "### Fleet" in body
    note = next(line for line in body.splitlines() if line.startswith("> "))
    assert "1 long message shortened" in note and "--format text" in note


def omission_note(body: str) -> str:
    return next(line for line in body.splitlines() if line.startswith("> Left out"))


def test_a_cut_report_links_the_full_report_wherever_it_left_something_out() -> None:
    result = big_result(600, 2000, message_chars=600)
    body = check_markdown(result, details_url=RUN)
    assert len(body.encode()) <= MARKDOWN_BUDGET
    assert f"Full report: {RUN}" in "\n".join(body.splitlines()[:8])  # at the top
    assert omission_note(body).endswith(f"See the full report: {RUN}.")
    assert f"every process is in the full report: {RUN}" in body  # the summarised fleet
    assert body.rstrip().splitlines()[-1].startswith("**FAILED: 2000 mandatory")

    without = check_markdown(result)
    assert "http" not in without
    assert omission_note(without).endswith(f"See {FULL_REPORT_HINT}.")
    assert "`keyfence check --format text` lists every process" in without


def test_a_forced_small_budget_still_names_what_was_left_out_and_where() -> None:
    body = check_markdown(big_result(30, 50), details_url=RUN, budget=8_000)
    assert len(body.encode()) <= 8_000
    note = omission_note(body)
    assert re.search(r"\d+ violations", note) and RUN in note


def test_exit_2_comment_with_many_problems_links_the_full_report() -> None:
    failure = CheckFailure(
        "dev",
        "fleet.yaml",
        True,
        "invalid spec",
        [Problem("x" * 300, "fleet.yaml", i, 1) for i in range(1, 500)],
    )
    body = failure_markdown(failure, details_url=RUN, budget=20_000)
    assert len(body.encode()) <= 20_000 and f"Full report: {RUN}" in body
    assert re.search(rf"Left out .*: \d+ problems. See the full report: {re.escape(RUN)}\.", body)
    without = failure_markdown(failure, budget=20_000)
    assert "http" not in without and "the output of `keyfence check` for every problem" in without


def test_plan_is_stable_and_shows_whole_numbers_as_integers() -> None:
    args = ("plan", "--offline", "--spec", EXAMPLE_SPEC, "--format", "json")
    first, second = invoke(*args), invoke(*args)
    assert first.exit_code == 0 and first.stdout == second.stdout
    resources = json.loads(first.stdout)["resources"]
    assert [r["urn"] for r in resources] == sorted(r["urn"] for r in resources)
    deployments = [r for r in resources if r["type"] == "kubernetes:apps/v1:Deployment"]
    assert deployments and all(type(d["inputs"]["spec"]["replicas"]) is int for d in deployments)
    assert '"replicas": 1,' in first.stdout
    assert not re.search(r":\s-?\d+\.0\s*[,\n]", first.stdout), "a whole number shown as a float"


# --------------------------------------------------------------------------- the fleet table's columns


def test_the_fleet_table_names_its_workload_column_for_either_kind() -> None:
    """A StatefulSet process sits in the same column as a Deployment: its head says workload."""
    from rich.console import Console

    from keyfence.check.report import check_rich, check_text

    result = big_result(2, 0)
    console = Console(record=True, width=200, force_terminal=True)
    console.print(check_rich(result))
    for shown in (check_text(result), console.export_text(), check_markdown(result)):
        heads = next(line for line in shown.lower().splitlines() if "process" in line and "key" in line)
        assert "workload" in heads and "deployment" not in heads, heads


# --------------------------------------------------------------------------- inline pack config


def test_inline_policy_pack_config_json_is_taken_as_the_config() -> None:
    """``--policy-pack-config '{"all":"disabled"}'``, as the issue writes it: inline JSON, not a path."""
    result = check_program("rogue-mount", "--policy-pack-config", '  {"all":"disabled"}', "--format", "json")
    assert result.exit_code == EXIT_OK, result.stderr
    assert "no-duplicate-key-assignment" in json.loads(result.stdout)["disabled"]


def test_inline_policy_pack_config_errors_say_it_was_inline_json(tmp_path: Path) -> None:
    bad = check_program("none", "--policy-pack-config", '{"all": disabled}')
    assert bad.exit_code == EXIT_INVALID
    assert "inline" in bad.stderr and "invalid JSON" in bad.stderr and "Traceback" not in bad.stderr
    missing = check_program("none", "--policy-pack-config", str(tmp_path / "nope.json"))
    assert missing.exit_code == EXIT_INVALID
    assert "nope.json: no such policy pack config file" in missing.stderr
    empty = check_program("none", "--policy-pack-config", " ")
    assert empty.exit_code == EXIT_INVALID and "--policy-pack-config is empty" in empty.stderr
    folder = check_program("none", "--policy-pack-config", str(tmp_path))
    assert folder.exit_code == EXIT_INVALID and "is a directory, not a policy pack config" in folder.stderr
    # A well-formed object naming no such policy: named as inline JSON, not by echoing the JSON.
    unknown = check_program("none", "--policy-pack-config", '{"no-such-policy": "advisory"}')
    assert unknown.exit_code == EXIT_INVALID
    assert "inline --policy-pack-config JSON" in unknown.stderr and "no-such-policy" in unknown.stderr
    assert '{"no-such-policy"' not in unknown.stderr


# --------------------------------------------------------------------------- outputs never replace inputs


@pytest.mark.parametrize(
    "command",
    [
        ["check", "--offline", "-o", "{spec}"],
        ["check", "--offline", "--report", "markdown={spec}"],
        ["check", "--offline", "--report", "json={config}", "--policy-pack-config", "{config}"],
        ["plan", "--offline", "-o", "{spec}"],
        ["vault-policies", "-o", "{spec}"],
    ],
    ids=["check-output", "check-report", "check-pack-config", "plan-output", "vault-policies-output"],
)
def test_a_report_never_overwrites_the_spec_or_config_it_reads(tmp_path: Path, command: list[str]) -> None:
    """``-o fleet.yaml`` (a typo for ``-f``) must not replace the fleet spec with its own report."""
    spec = tmp_path / "fleet.yaml"
    spec.write_text((ROOT / EXAMPLE_SPEC).read_text())
    config = tmp_path / "pack.json"
    config.write_text('{"all": "mandatory"}')
    before = {spec: spec.read_text(), config: config.read_text()}
    args = [a.format(spec=spec, config=config) for a in command]
    result = invoke(*args, "--spec", str(spec))
    assert result.exit_code == EXIT_INVALID, result.stdout + result.stderr
    assert "is the " in result.stderr and "Traceback" not in result.stderr
    assert {p: p.read_text() for p in before} == before
