"""``keyfence check`` and ``keyfence plan`` end to end, through the command line.

Offline mode needs no Vault, so these run the real program on real specs and a real
policy pack process: the test pack (``tests/fixtures/testpack``) for exact expectations,
and the keyfence pack shipped in ``policies/``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import urllib.parse
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from typer.testing import CliRunner

from keyfence.check import runner as check_module
from keyfence.check.harness import collect
from keyfence.check.output import ReportFile, render_check, write_reports
from keyfence.check.report import CHECK_FORMATS, check_rich, plan_json
from keyfence.check.results import PlannedResource, PlanResult
from keyfence.check.runner import _result, process_rows
from keyfence.check.verdict import Analysis, PolicyMeta, Violation
from keyfence.cli.app import app
from keyfence.errors import EXIT_INVALID, EXIT_OK, EXIT_VIOLATION, KeyfenceError
from keyfence.fleet import NOT_FETCHED, declare_fleet
from keyfence.spec import load_spec, locate, parse_yaml
from tests.fleet_fixtures import EXAMPLE_SPEC, ROOT, canary_strings, example_spec, resolved_keys

TESTPACK = str(ROOT / "tests" / "fixtures" / "testpack")
TESTPACK_POLICIES = [
    "advisory-image-digest",
    "config-echo",
    "mandatory-forbidden-registry",
    "remediate-container-limits",
    "stack-deployments-per-namespace",
    "stack-summary",
]

FORBIDDEN_SPEC = """\
version: 1
subaccounts:
  - name: alpha
    venue: futures
    processes:
      - name: good
        role: trader
        image: ghcr.io/acme/good:1.0
      - name: bad
        role: market-data
        image: forbidden.example/feed:1.0
"""

INVALID_SPEC = """\
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


def invoke(*args: str) -> Any:
    return CliRunner().invoke(app, list(args))


def check(*args: str, spec: str = EXAMPLE_SPEC, pack: str = TESTPACK) -> Any:
    return invoke("check", "--offline", "--spec", spec, "--policy-pack", pack, *args)


def entry_lines(spec_path: str) -> dict[str, int]:
    """Line of every process entry and every subaccount in the spec."""
    spec = load_spec(spec_path)
    lines = {e.ref: e.location.line for e in spec.entries()}
    data = parse_yaml(Path(spec_path).read_text(), spec_path)
    for index, sub in enumerate(spec.subaccounts):
        lines[sub.name] = locate(data, ("subaccounts", index))[0]
    return lines


def write(tmp_path: Path, name: str, text: str) -> str:
    path = tmp_path / name
    path.write_text(text)
    return str(path)


@pytest.fixture(scope="module")
def json_report() -> dict[str, Any]:
    result = check("--format", "json")
    assert result.exit_code == EXIT_OK, result.stderr
    report: dict[str, Any] = json.loads(result.stdout)
    return report


# --------------------------------------------------------------------------- formats


def test_json_report_has_exactly_the_documented_keys(json_report: dict[str, Any]) -> None:
    assert set(json_report) == {
        "ok",
        "verdict",
        "resources",
        "policies",
        "levels",
        "disabled",
        "advisory_only",
        "weakened",
        "violations",
        "offline",
        "spec",
    }
    assert json_report["ok"] is True and json_report["offline"] is True
    assert json_report["spec"] == EXAMPLE_SPEC
    assert json_report["policies"] == TESTPACK_POLICIES
    spec = example_spec()
    # Per subaccount a component, Namespace and NetworkPolicy; per process a component,
    # ServiceAccount, Secret, Deployment and the key's ledger claim (a component and its record);
    # and, as the engine sends them to a pack, the root stack and the default providers
    # (Kubernetes, and the dynamic provider of the claims).
    assert json_report["resources"] == 3 * len(spec.subaccounts) + 6 * len(spec.entries()) + 3
    for violation in json_report["violations"]:
        assert set(violation) == {"policy", "level", "urn", "message", "file", "line"}
        assert violation["level"] in ("advisory", "mandatory")
    digests = [v for v in json_report["violations"] if v["policy"] == "advisory-image-digest"]
    assert len(digests) == len(spec.entries())
    assert all(v["urn"].startswith("urn:pulumi:dev::keyfence::") for v in digests)


SARIF_SUBSET = {
    "type": "object",
    "required": ["version", "runs"],
    "properties": {
        "version": {"const": "2.1.0"},
        "runs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["tool", "results"],
                "properties": {
                    "tool": {
                        "type": "object",
                        "required": ["driver"],
                        "properties": {
                            "driver": {
                                "type": "object",
                                "required": ["name", "rules"],
                                "properties": {
                                    "name": {"const": "keyfence"},
                                    "rules": {
                                        "type": "array",
                                        "items": {
                                            "type": "object",
                                            "required": ["id", "shortDescription", "defaultConfiguration"],
                                        },
                                    },
                                },
                            }
                        },
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["ruleId", "level", "message", "locations"],
                            "properties": {
                                "level": {"enum": ["error", "warning", "note", "none"]},
                                "message": {"type": "object", "required": ["text"]},
                                "locations": {
                                    "type": "array",
                                    "minItems": 1,
                                    "items": {
                                        "type": "object",
                                        "required": ["physicalLocation"],
                                        "properties": {
                                            "physicalLocation": {
                                                "type": "object",
                                                "required": ["artifactLocation", "region"],
                                                "properties": {
                                                    "region": {
                                                        "type": "object",
                                                        "required": ["startLine"],
                                                        "properties": {
                                                            "startLine": {"type": "integer", "minimum": 1}
                                                        },
                                                    }
                                                },
                                            }
                                        },
                                    },
                                },
                            },
                        },
                    },
                },
            },
        },
    },
}


def artifact_path(uri: str) -> Path:
    """A SARIF artifact URI: relative to the working directory when the spec is inside it."""
    if uri.startswith("file:"):
        return Path(urllib.parse.unquote(urllib.parse.urlparse(uri).path)).resolve()
    assert not uri.startswith("/")
    return (Path.cwd() / uri).resolve()


def sarif_of(result: Any) -> dict[str, Any]:
    sarif: dict[str, Any] = json.loads(result.stdout)
    jsonschema.validate(sarif, SARIF_SUBSET)
    return sarif


def test_sarif_points_each_violation_at_its_spec_entry() -> None:
    result = check("--format", "sarif")
    assert result.exit_code == EXIT_OK, result.stderr
    [run] = sarif_of(result)["runs"]
    assert [r["id"] for r in run["tool"]["driver"]["rules"]] == TESTPACK_POLICIES
    lines = entry_lines(EXAMPLE_SPEC)
    by_rule: dict[str, list[dict[str, Any]]] = {}
    for item in run["results"]:
        by_rule.setdefault(item["ruleId"], []).append(item)
        [location] = item["locations"]
        assert (
            artifact_path(location["physicalLocation"]["artifactLocation"]["uri"])
            == Path(EXAMPLE_SPEC).resolve()
        )
        assert run["tool"]["driver"]["rules"][item["ruleIndex"]]["id"] == item["ruleId"]
    # Deployments map to their process entry, Namespaces to their subaccount, stack-wide to line 1.
    for rule in ("advisory-image-digest", "config-echo"):
        assert by_rule[rule], rule
        for item in by_rule[rule]:
            [location] = item["locations"]
            ref = location["logicalLocations"][0]["name"]
            assert location["physicalLocation"]["region"]["startLine"] == lines[ref], ref
            assert item["level"] == "warning"
    [summary] = by_rule["stack-summary"]
    assert summary["locations"][0]["physicalLocation"]["region"]["startLine"] == 1
    assert run["properties"]["offline"] is True


def test_mandatory_violation_exits_1_and_sarif_marks_it_an_error(tmp_path: Path) -> None:
    spec = write(tmp_path, "fleet.yaml", FORBIDDEN_SPEC)
    result = check("--format", "sarif", spec=spec)
    assert result.exit_code == EXIT_VIOLATION, result.stderr
    [run] = sarif_of(result)["runs"]
    [bad] = [r for r in run["results"] if r["ruleId"] == "mandatory-forbidden-registry"]
    assert bad["level"] == "error"
    assert (
        bad["locations"][0]["physicalLocation"]["region"]["startLine"] == entry_lines(spec)["alpha/bad"] == 9
    )

    report = json.loads(check("--format", "json", spec=spec).stdout)
    assert report["ok"] is False
    assert [v["level"] for v in report["violations"] if v["policy"] == "mandatory-forbidden-registry"] == [
        "mandatory"
    ]


def test_markdown_is_a_pull_request_comment(tmp_path: Path) -> None:
    passed = check("--format", "markdown")
    assert passed.exit_code == EXIT_OK
    text = passed.stdout
    assert text.startswith("## ✅ keyfence check passed\n")
    assert "| subaccount | process | namespace | workload | key |" in text
    assert "| momentum | risk | momentum | risk | secret/kraken/momentum/risk-v2 |" in text
    assert "identities compared by Vault path only; fingerprints and key permissions" in text
    assert "> **Offline check**" in text
    assert "#### ⚠️ `advisory-image-digest` (advisory, 7)" in text

    failed = check("--format", "markdown", spec=write(tmp_path, "fleet.yaml", FORBIDDEN_SPEC))
    assert failed.exit_code == EXIT_VIOLATION
    assert failed.stdout.startswith("## ❌ keyfence check failed: 1 mandatory violation\n")
    assert "`mandatory-forbidden-registry` (mandatory, 1)" in failed.stdout


def test_text_report_is_plain_when_piped() -> None:
    result = check()
    assert result.exit_code == EXIT_OK
    out = result.stdout
    assert "\x1b[" not in out, "no terminal escapes when stdout is not a terminal"
    assert "subaccount momentum" in out
    assert "PROCESS" in out and "PERMISSIONS" in out
    assert "risk      momentum   risk      secret/kraken/momentum/risk-v2" in out
    assert "note: offline check: identities compared by Vault path only; fingerprints and key" in out
    assert out.rstrip().splitlines()[-1].startswith("PASSED: no mandatory policy violations (11 advisory)")


def test_output_file_gets_the_report_and_stdout_the_verdict(tmp_path: Path) -> None:
    target = tmp_path / "report.sarif"
    result = check("--format", "sarif", "--output", str(target))
    assert result.exit_code == EXIT_OK
    assert json.loads(target.read_text())["version"] == "2.1.0"
    assert result.stdout.startswith("PASSED:") and result.stdout.count("\n") == 1


REPORT_FILES = {"text": "report.txt", "json": "report.json", "markdown": "report.md", "sarif": "report.sarif"}


def report_args(folder: Path) -> list[str]:
    return [arg for fmt, name in REPORT_FILES.items() for arg in ("--report", f"{fmt}={folder / name}")]


def assert_reports(folder: Path, verdict: str, heading: str) -> dict[str, Any]:
    """Every report file is there, each of its own format, and all tell the same verdict."""
    report = json.loads((folder / REPORT_FILES["json"]).read_text())
    assert report["verdict"].startswith(verdict)
    sarif: dict[str, Any] = json.loads((folder / REPORT_FILES["sarif"]).read_text())
    jsonschema.validate(sarif, SARIF_SUBSET)
    assert sarif["runs"][0]["properties"]["verdict"] == report["verdict"]
    markdown = (folder / REPORT_FILES["markdown"]).read_text()
    assert markdown.startswith(heading) and markdown.rstrip().endswith(f"**{report['verdict']}**")
    text = (folder / REPORT_FILES["text"]).read_text()
    assert "\x1b[" not in text and text.rstrip().splitlines()[-1] == report["verdict"]
    return sarif


@pytest.mark.parametrize("outcome", ["pass", "violation"])
def test_one_run_writes_every_report(tmp_path: Path, outcome: str) -> None:
    spec = EXAMPLE_SPEC if outcome == "pass" else write(tmp_path, "fleet.yaml", FORBIDDEN_SPEC)
    result = check(*report_args(tmp_path), spec=spec)
    assert result.exit_code == (EXIT_OK if outcome == "pass" else EXIT_VIOLATION), result.stderr
    if outcome == "pass":
        assert_reports(tmp_path, "PASSED", "## ✅ keyfence check passed")
    else:
        sarif = assert_reports(tmp_path, "FAILED", "## ❌ keyfence check failed: 1 mandatory violation")
        [bad] = [r for r in sarif["runs"][0]["results"] if r["ruleId"] == "mandatory-forbidden-registry"]
        assert bad["locations"][0]["physicalLocation"]["region"]["startLine"] == 9
    # stdout is what it would be without --report: the plain text report, ending with the verdict.
    assert result.stdout == (tmp_path / REPORT_FILES["text"]).read_text()


def test_report_adds_to_format_and_output(tmp_path: Path) -> None:
    main = tmp_path / "main.sarif"
    result = check("--format", "sarif", "--output", str(main), "--report", f"JSON={tmp_path / 'r.json'}")
    assert result.exit_code == EXIT_OK, result.stderr
    assert result.stdout.startswith("PASSED:") and result.stdout.count("\n") == 1
    assert json.loads(main.read_text())["version"] == "2.1.0"
    assert json.loads((tmp_path / "r.json").read_text())["ok"] is True


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (["--report", "pdf=out.pdf"], "--report pdf=out.pdf: unknown report format 'pdf'"),
        (["--report", "out.sarif"], "--report out.sarif: expected FORMAT=FILE"),
        (["--report", "json="], "--report json=: expected FORMAT=FILE"),
        (
            ["--report", "json=same", "--report", "text=same"],
            "--report json=same and --report text=same name the same file same",
        ),
        (
            ["--output", "same", "--report", "json=./same"],
            "--output same and --report json=./same name the same file",
        ),
        (
            ["--report", "json=missing/r.json"],
            "--report json=missing/r.json: cannot write the report: folder",
        ),
        (["--report", "json=."], "--report json=.: cannot write the report: . is a folder"),
        (
            ["--details-url", "javascript:alert(1)"],
            "--details-url 'javascript:alert(1)': expected an http(s) URL",
        ),
    ],
    ids=[
        "unknown-format",
        "no-equals",
        "no-file",
        "duplicate",
        "duplicate-output",
        "no-folder",
        "folder",
        "url",
    ],
)
def test_report_options_are_checked_before_the_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, args: list[str], expected: str
) -> None:
    monkeypatch.chdir(tmp_path)
    result = check(*args)
    assert result.exit_code == EXIT_INVALID
    assert f"error: {expected}" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stdout == ""  # nothing ran, nothing reported
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_a_report_that_fails_to_write_does_not_stop_the_others(tmp_path: Path) -> None:
    gone = ReportFile("json", tmp_path / "removed" / "r.json", "--report json=removed/r.json")
    kept = ReportFile("text", tmp_path / "r.txt", "--report text=r.txt")
    with pytest.raises(KeyfenceError) as caught:
        write_reports([gone, kept], lambda fmt: f"{fmt} body\n")
    assert kept.path.read_text() == "text body\n"
    assert caught.value.exit_code == EXIT_INVALID
    assert caught.value.problems[0].startswith("--report json=removed/r.json: ")


def test_policy_pack_config_reaches_the_pack(tmp_path: Path) -> None:
    config = write(tmp_path, "config.json", json.dumps({"config-echo": {"greeting": "hej"}}))
    report = json.loads(check("--format", "json", "--policy-pack-config", config).stdout)
    echoes = [v["message"] for v in report["violations"] if v["policy"] == "config-echo"]
    assert echoes and all("greeting=hej limit=3" in m for m in echoes)

    strict = write(tmp_path, "strict.json", json.dumps({"all": "mandatory"}))
    assert check("--policy-pack-config", strict).exit_code == EXIT_VIOLATION


def test_rich_rendering_has_the_same_content() -> None:
    from rich.console import Console

    collected = collect(lambda: declare_fleet(example_spec(), resolved_keys(example_spec())))
    result = _result(EXAMPLE_SPEC, "dev", True, example_spec(), collected, _fake_analysis(collected))
    console = Console(record=True, width=200, force_terminal=True)
    console.print(check_rich(result))
    text = console.export_text()
    assert "subaccount momentum" in text and "FAILED: 1 mandatory policy violation" in text


# --------------------------------------------------------------------------- exit codes and errors


def test_invalid_spec_exits_2_with_file_and_line_and_no_traceback(tmp_path: Path) -> None:
    spec = write(tmp_path, "fleet.yaml", INVALID_SPEC)
    result = check(spec=spec)
    assert result.exit_code == EXIT_INVALID
    assert f"{spec}:9:9: subaccounts[0].processes[0].replicas: unknown field 'replicas'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_broken_policy_pack_exits_2_with_its_stderr(tmp_path: Path) -> None:
    pack = tmp_path / "broken-pack"
    pack.mkdir()
    (pack / "PulumiPolicy.yaml").write_text("runtime: python\n")
    (pack / "__main__.py").write_text("import no_such_module_for_keyfence_tests\n")
    result = check(pack=str(pack))
    assert result.exit_code == EXIT_INVALID
    assert "policy pack 'broken-pack' exited before it started serving" in result.stderr
    assert "No module named 'no_such_module_for_keyfence_tests'" in result.stderr
    assert "Traceback (most recent call last)" in result.stderr, "the pack's own stderr is shown"
    assert "infra/" not in result.stderr, "but never keyfence's own traceback"

    not_a_pack = check(pack=str(tmp_path))
    assert not_a_pack.exit_code == EXIT_INVALID and "not a policy pack" in not_a_pack.stderr


def test_invalid_policy_pack_config_exits_2_naming_policy_and_property(tmp_path: Path) -> None:
    config = write(tmp_path, "config.json", json.dumps({"config-echo": {"limit": "three"}}))
    result = check("--policy-pack-config", config)
    assert result.exit_code == EXIT_INVALID
    assert "config-echo.limit: 'three' is not of type 'integer'" in result.stderr
    missing = check("--policy-pack-config", str(tmp_path / "nope.json"))
    assert missing.exit_code == EXIT_INVALID and "no such policy pack config file" in missing.stderr


def test_unexpected_errors_are_one_line_unless_debugging(monkeypatch: pytest.MonkeyPatch) -> None:
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("unexpected\nboom")

    monkeypatch.setattr(check_module, "run_check", explode)
    monkeypatch.delenv("KEYFENCE_DEBUG", raising=False)
    quiet = check()
    assert quiet.exit_code == EXIT_INVALID
    assert "internal error: RuntimeError: unexpected boom" in quiet.stderr
    assert "Traceback" not in quiet.stderr

    for loud in (invoke("--debug", "check", "--offline", "--spec", EXAMPLE_SPEC), check("--debug")):
        assert loud.exit_code == EXIT_INVALID
        assert (
            "Traceback (most recent call last)" in loud.stderr and "RuntimeError: unexpected" in loud.stderr
        )

    monkeypatch.setenv("KEYFENCE_DEBUG", "1")
    assert "Traceback" in check().stderr


def test_stack_config_names_the_spec(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    project = tmp_path / "project"
    (project / "specs").mkdir(parents=True)
    (project / "deep" / "er").mkdir(parents=True)
    shutil.copy(EXAMPLE_SPEC, project / "specs" / "fleet.yaml")
    (project / "Pulumi.yaml").write_text("name: tradingfleet\nruntime: python\n")
    (project / "Pulumi.ci.yaml").write_text("config:\n  keyfence:spec: specs/fleet.yaml\n")
    monkeypatch.chdir(project / "deep" / "er")

    result = invoke("check", "--stack", "ci", "--offline", "--policy-pack", TESTPACK, "--format", "json")
    assert result.exit_code == EXIT_OK, result.stderr
    report = json.loads(result.stdout)
    assert Path(report["spec"]).resolve() == (project / "specs" / "fleet.yaml").resolve()
    assert all(v["urn"].startswith("urn:pulumi:ci::tradingfleet::") for v in report["violations"] if v["urn"])

    missing_stack = invoke("check", "--stack", "prod", "--offline", "--policy-pack", TESTPACK)
    assert missing_stack.exit_code == EXIT_INVALID
    assert "Pulumi.prod.yaml: no such stack config" in missing_stack.stderr

    (project / "Pulumi.dev.yaml").write_text("config:\n  other:thing: 1\n")
    no_key = invoke("check", "--offline", "--policy-pack", TESTPACK)
    assert no_key.exit_code == EXIT_INVALID and "no keyfence:spec in its config" in no_key.stderr

    monkeypatch.chdir(tmp_path)
    nowhere = invoke("check", "--offline", "--policy-pack", TESTPACK)
    assert nowhere.exit_code == EXIT_INVALID and "no Pulumi.yaml" in nowhere.stderr


# --------------------------------------------------------------------------- plan


def test_plan_json_lists_every_resource_with_secrets_redacted() -> None:
    result = invoke("plan", "--offline", "--spec", EXAMPLE_SPEC, "--format", "json")
    assert result.exit_code == EXIT_OK, result.stderr
    plan = json.loads(result.stdout)
    assert set(plan) == {"resources"}
    spec = example_spec()
    # What the program registers, plus the root stack and the default providers the engine adds.
    assert len(plan["resources"]) == 3 * len(spec.subaccounts) + 6 * len(spec.entries()) + 3
    types = [r["type"] for r in plan["resources"]]
    assert types.count("pulumi:pulumi:Stack") == 1 and types.count("pulumi:providers:kubernetes") == 1
    for resource in plan["resources"]:
        assert set(resource) == {"type", "name", "urn", "inputs"}
    secrets = [r for r in plan["resources"] if r["type"] == "kubernetes:core/v1:Secret"]
    assert len(secrets) == len(spec.entries())
    assert all(s["inputs"]["stringData"] == "[secret]" for s in secrets)
    assert NOT_FETCHED not in result.stdout, "not even the stand-in for key material is shown"


def test_plan_text_is_a_compact_table() -> None:
    result = invoke("plan", "--offline", "--spec", EXAMPLE_SPEC)
    assert result.exit_code == EXIT_OK
    assert "kubernetes:apps/v1:Deployment" in result.stdout and "momentum/risk/key" in result.stdout
    assert result.stdout.rstrip().endswith("54 resources")


# --------------------------------------------------------------------------- key material never printed


def _fake_analysis(collected: Any) -> Analysis:
    deployment = next(r for r in collected.resources if r.type == "kubernetes:apps/v1:Deployment")
    return Analysis(
        pack="fake",
        version="1",
        policies=[PolicyMeta("p", "desc", "mandatory", "stack", None)],
        config={},
        violations=[Violation("p", "mandatory", deployment.urn, "desc\nsomething is wrong", "fake", "desc")],
    )


def test_reports_never_show_key_material_even_when_declarations_hold_it() -> None:
    spec = example_spec()
    keys = resolved_keys(spec)
    canaries = canary_strings(keys)
    collected = collect(lambda: declare_fleet(spec, keys))
    result = _result(EXAMPLE_SPEC, "dev", False, spec, collected, _fake_analysis(collected))
    rendered = [render_check(result, fmt) for fmt in CHECK_FORMATS]
    plan = json.dumps(
        plan_json(
            PlanResult(
                EXAMPLE_SPEC,
                "dev",
                False,
                [PlannedResource(r.type, r.name, r.urn, r.parent, r.inputs()) for r in collected.resources],
            )
        )
    )
    for text in [*rendered, plan]:
        for canary in canaries:
            assert canary not in text
    assert "[secret]" in plan
    rows = process_rows(collected.resources)
    assert {r.fingerprint for r in rows} == {k.fingerprint for k in keys}, "fingerprints are not secret"


# --------------------------------------------------------------------------- the real CLI and pack


def test_console_entry_point_in_a_subprocess(tmp_path: Path) -> None:
    spec = write(tmp_path, "fleet.yaml", INVALID_SPEC)
    command = [sys.executable, "-c", "from keyfence.cli.app import main; main()"]
    bad = subprocess.run(
        [*command, "check", "--offline", "--spec", spec],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert bad.returncode == EXIT_INVALID
    assert f"{spec}:9:9:" in bad.stderr and "Traceback" not in bad.stderr
    good = subprocess.run(
        [*command, "check", "--offline", "--spec", EXAMPLE_SPEC, "--policy-pack", TESTPACK, "-f", "json"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=False,
        timeout=120,
    )
    assert good.returncode == EXIT_OK, good.stderr
    assert json.loads(good.stdout)["ok"] is True


def test_keyfence_pack_checks_the_example_fleet_offline() -> None:
    result = invoke("check", "--offline", "--spec", EXAMPLE_SPEC, "--format", "json")
    assert result.exit_code in (EXIT_OK, EXIT_VIOLATION), result.stderr
    report = json.loads(result.stdout)
    assert set(report["policies"]) == {
        "no-duplicate-key-assignment",
        "single-writer-per-key",
        "subaccount-tag-required",
        "least-privilege-key",
        "key-not-in-env",
        "hardened-workload",
    }
    # Offline there are no fingerprints; keyfence configures the pack not to demand them.
    assert not [v for v in report["violations"] if "fingerprint" in v["message"].lower()]
    assert report["ok"] is (result.exit_code == EXIT_OK)


def test_keyfence_pack_passes_the_example_fleet_offline() -> None:
    result = invoke("check", "--offline", "--spec", EXAMPLE_SPEC, "--format", "json")
    assert result.exit_code == EXIT_OK, result.stdout


def test_sub_apps_inherit_the_error_handling() -> None:
    import typer

    from keyfence.errors import RefusedError

    sub = typer.Typer()

    @sub.command()
    def refuse() -> None:
        raise RefusedError("refused: that key is already assigned")

    @sub.command()
    def crash() -> None:
        raise ValueError("bug")

    app.add_typer(sub, name="testsub")
    try:
        refused = invoke("testsub", "refuse")
        assert refused.exit_code == EXIT_VIOLATION
        assert refused.stderr == "error: refused: that key is already assigned\n"
        crashed = invoke("testsub", "crash")
        assert crashed.exit_code == EXIT_INVALID and "internal error: ValueError: bug" in crashed.stderr
        assert "Traceback" not in crashed.stderr
    finally:
        app.registered_groups.pop()


def test_odd_yaml_tag_in_pulumi_project_is_a_clean_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "Pulumi.yaml").write_text("name: !!int abc\nruntime: python\n")
    monkeypatch.chdir(tmp_path)
    result = invoke("check", "--offline")
    assert result.exit_code == EXIT_INVALID
    assert "Pulumi.yaml: invalid YAML (ValueError)" in result.stderr and "internal error" not in result.stderr
