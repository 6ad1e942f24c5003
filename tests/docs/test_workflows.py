"""The GitHub workflows: they parse, say what docs/pipeline.md says, and their shell steps behave.

The check step's shell is run for real with a stub ``keyfence`` so the --offline fallback, the
one run that writes every report and the kept exit code are proven, not just grepped for.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
WORKFLOWS = ROOT / ".github" / "workflows"
PR = WORKFLOWS / "pull-request.yml"
DEPLOY = WORKFLOWS / "deploy.yml"
PIPELINE_DOC = ROOT / "docs" / "pipeline.md"
BASH = shutil.which("bash")


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), f"{path.name} is not a mapping"
    # YAML 1.1 reads the bare key `on` as the boolean True.
    data["on"] = data.pop(True, data.get("on"))
    return data


@pytest.fixture(scope="module")
def pr() -> dict[str, Any]:
    return load(PR)


@pytest.fixture(scope="module")
def deploy() -> dict[str, Any]:
    return load(DEPLOY)


def steps(workflow: dict[str, Any], job: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = workflow["jobs"][job]["steps"]
    return result


def step_index(job_steps: list[dict[str, Any]], pattern: str) -> int:
    """Index of the first step whose `run` matches ``pattern``; fails if none does."""
    for index, step in enumerate(job_steps):
        if re.search(pattern, step.get("run", "")):
            return index
    raise AssertionError(f"no step runs {pattern!r}")


def step_by_id(job_steps: list[dict[str, Any]], step_id: str) -> dict[str, Any]:
    return next(s for s in job_steps if s.get("id") == step_id)


def step_using(job_steps: list[dict[str, Any]], action: str) -> dict[str, Any]:
    return next(s for s in job_steps if s.get("uses", "").split("@")[0] == action)


def all_steps(workflow: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for job in workflow["jobs"].values() for s in job.get("steps", [])]


# --------------------------------------------------------------------------- both workflows


@pytest.mark.parametrize("path", [PR, DEPLOY], ids=lambda p: p.name)
def test_every_action_is_pinned_to_a_major_version(path: Path) -> None:
    uses = [s["uses"] for s in all_steps(load(path)) if "uses" in s]
    assert uses
    for ref in uses:
        assert re.fullmatch(r"[\w.-]+/[\w./-]+@v\d+", ref), (
            f"{path.name}: {ref} is not pinned to a major version"
        )


@pytest.mark.parametrize("path", [PR, DEPLOY], ids=lambda p: p.name)
def test_python_is_3_11_and_make_test_runs(path: Path) -> None:
    workflow = load(path)
    setups = [s for s in all_steps(workflow) if s.get("uses", "").startswith("actions/setup-python@")]
    assert setups and all(str(s["with"]["python-version"]) == "3.11" for s in setups)
    assert any(re.search(r"^make test$", s.get("run", ""), re.M) for s in all_steps(workflow))
    assert any(s.get("uses", "").startswith("actions/checkout@") for s in all_steps(workflow))


@pytest.mark.parametrize("path", [PR, DEPLOY], ids=lambda p: p.name)
def test_default_token_permissions_are_read_only(path: Path) -> None:
    assert load(path)["permissions"] == {"contents": "read"}


@pytest.mark.parametrize("path", [PR, DEPLOY], ids=lambda p: p.name)
def test_every_secret_is_documented(path: Path) -> None:
    doc = PIPELINE_DOC.read_text()
    for name in set(re.findall(r"secrets\.([A-Z0-9_]+)", path.read_text())):
        assert f"`{name}`" in doc, f"{path.name} uses secret {name}, docs/pipeline.md does not list it"


# --------------------------------------------------------------------------- pull requests


def test_pr_workflow_runs_on_pull_requests(pr: dict[str, Any]) -> None:
    assert "pull_request" in pr["on"]
    assert "pull_request_target" not in pr["on"], "PR code must never run with the base repository's secrets"


RUN_URL = "${{ github.server_url }}/${{ github.repository }}/actions/runs/${{ github.run_id }}"
REPORTS = {
    "sarif": "keyfence.sarif",
    "markdown": "keyfence.md",
    "json": "keyfence.json",
    "text": "keyfence.txt",
}


def keyfence_calls(script: str) -> list[str]:
    """Each `keyfence` command in a run block, its backslash continuations joined."""
    joined = script.replace("\\\n", " ")
    return [line for line in joined.splitlines() if re.search(r"(^|/)keyfence\s", line.strip())]


def test_check_runs_once_and_writes_every_report_with_offline_fallback(pr: dict[str, Any]) -> None:
    check = step_by_id(steps(pr, "keyfence-check"), "check")
    script = check["run"]
    job_calls = [c for step in steps(pr, "keyfence-check") for c in keyfence_calls(step.get("run", ""))]
    (call,) = job_calls  # one check run: annotations, comment and artifact agree
    for fmt, path in REPORTS.items():
        assert f"--report {fmt}={path}" in call, fmt
    assert "--format" not in call and "--output" not in call
    assert '--details-url "$RUN_URL"' in script
    assert pr["jobs"]["keyfence-check"]["env"]["RUN_URL"] == RUN_URL
    assert "--offline" in script
    assert re.search(r'if \[ -n "\$\{VAULT_ADDR:-\}" \] && \[ -n "\$\{VAULT_TOKEN:-\}" \]', script)
    assert check["env"] == {
        "VAULT_ADDR": "${{ secrets.VAULT_ADDR }}",
        "VAULT_TOKEN": "${{ secrets.VAULT_TOKEN_CI }}",
    }


def test_check_job_never_sees_a_token_that_reads_material(pr: dict[str, Any]) -> None:
    job = pr["jobs"]["keyfence-check"]
    assert "VAULT_TOKEN_DEPLOY" not in yaml.safe_dump(job)
    assert "environment" not in job


def test_sarif_is_uploaded_even_when_the_check_fails(pr: dict[str, Any]) -> None:
    job = pr["jobs"]["keyfence-check"]
    upload = step_using(job["steps"], "github/codeql-action/upload-sarif")
    assert "always()" in upload["if"]
    assert upload["with"]["sarif_file"] == "keyfence.sarif"
    assert job["permissions"]["security-events"] == "write"


def test_full_reports_are_an_artifact_even_when_the_check_fails(pr: dict[str, Any]) -> None:
    job = pr["jobs"]["keyfence-check"]
    upload = step_using(job["steps"], "actions/upload-artifact")
    assert upload["uses"] == "actions/upload-artifact@v4"
    assert upload["if"] == "always()"
    assert upload["with"]["name"] == "${{ env.REPORTS_ARTIFACT }}"
    assert job["env"]["REPORTS_ARTIFACT"] == "keyfence-reports"
    assert set(upload["with"]["path"].split()) == set(REPORTS.values())
    compose = next(s for s in job["steps"] if s.get("name") == "Compose the PR comment")
    assert job["steps"].index(upload) < job["steps"].index(compose)


def test_markdown_report_becomes_a_sticky_pr_comment(pr: dict[str, Any]) -> None:
    job = pr["jobs"]["keyfence-check"]
    comment = step_using(job["steps"], "marocchino/sticky-pull-request-comment")
    assert "always()" in comment["if"]
    assert comment["with"]["path"] == "keyfence-comment.md"
    assert job["permissions"]["pull-requests"] == "write"


def test_the_check_exit_code_is_the_job_result(pr: dict[str, Any]) -> None:
    job_steps = steps(pr, "keyfence-check")
    last = job_steps[-1]
    assert last["if"] == "always()"
    assert last["env"]["CODE"] == "${{ steps.check.outputs.exit-code }}"
    assert job_steps.index(step_using(job_steps, "github/codeql-action/upload-sarif")) < len(job_steps) - 1


def test_pr_preview_runs_the_pack_only_with_pulumi_credentials(pr: dict[str, Any]) -> None:
    job = pr["jobs"]["pulumi-preview"]
    assert job["if"] == "needs.credentials.outputs.pulumi == 'true'"
    detect = pr["jobs"]["credentials"]["steps"][0]
    assert detect["env"]["HAS_PULUMI"] == "${{ secrets.PULUMI_ACCESS_TOKEN != '' }}"
    preview = step_using(job["steps"], "pulumi/actions")
    assert preview["with"]["command"] == "preview"
    assert preview["with"]["policyPacks"] == "policies"
    assert preview["with"]["comment-on-pr"] is True
    assert preview["with"]["stack-name"]
    assert preview["env"]["VAULT_TOKEN"] == "${{ secrets.VAULT_TOKEN_DEPLOY }}"
    assert "secrets.KUBECONFIG" in yaml.safe_dump(job)
    assert job["environment"] == "pulumi-preview"


# --------------------------------------------------------------------------- deploy


def test_deploy_runs_on_main_and_by_hand(deploy: dict[str, Any]) -> None:
    assert deploy["on"]["push"]["branches"] == ["main"]
    assert "workflow_dispatch" in deploy["on"]


def test_deploys_never_overlap(deploy: dict[str, Any]) -> None:
    concurrency = deploy["concurrency"]
    assert concurrency["group"].startswith("keyfence-deploy-")
    assert concurrency["cancel-in-progress"] is False


def test_deploy_tests_then_previews_then_updates_with_the_pack(deploy: dict[str, Any]) -> None:
    job_steps = steps(deploy, "deploy")
    test = step_index(job_steps, r"^make test$")
    preview = step_index(job_steps, r"\bpulumi preview\b")
    up = step_index(job_steps, r"\bpulumi up\b")
    assert test < preview < up
    assert "--policy-pack policies" in job_steps[preview]["run"]
    assert "--policy-pack policies" in job_steps[up]["run"]
    assert "--yes" in job_steps[up]["run"]
    assert "if" not in job_steps[up], "up must run only when preview succeeded"
    assert deploy["jobs"]["deploy"]["if"] == "needs.credentials.outputs.pulumi == 'true'"


# --------------------------------------------------------------------------- the shell steps, run


STUB = """#!/usr/bin/env bash
# Stub keyfence: records its arguments and Vault variables, writes --output and every
# --report FORMAT=FILE, exits $STUB_CODE.
echo "ARGS $*" >> "$STUB_LOG"
echo "ENV VAULT_ADDR=${VAULT_ADDR-<unset>} VAULT_TOKEN=${VAULT_TOKEN-<unset>}" >> "$STUB_LOG"
while [ $# -gt 0 ]; do
  if [ "$1" = "--output" ]; then echo "report $*" > "$2"; fi
  if [ "$1" = "--report" ]; then echo "report ${2%%=*}" > "${2#*=}"; fi
  shift
done
exit "${STUB_CODE:-0}"
"""


def run_step(script: str, workdir: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run a `run:` block the way GitHub's bash shell does (-eo pipefail)."""
    assert BASH
    base = {"PATH": os.environ.get("PATH", ""), "HOME": str(workdir)}
    return subprocess.run(
        [BASH, "--noprofile", "--norc", "-eo", "pipefail", "-c", script],
        cwd=workdir,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


@pytest.fixture
def stub_workdir(tmp_path: Path) -> Path:
    bindir = tmp_path / ".venv" / "bin"
    bindir.mkdir(parents=True)
    stub = bindir / "keyfence"
    stub.write_text(STUB)
    stub.chmod(0o755)
    return tmp_path


def outputs(path: Path) -> dict[str, str]:
    return dict(line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize(
    ("vault_addr", "vault_token", "offline"),
    [
        ("https://vault.example.com", "s.metadata-only", False),
        ("", "", True),  # a fork: GitHub passes missing secrets as empty strings
        ("https://vault.example.com", "", True),
        ("", "s.metadata-only", True),
    ],
    ids=["with-vault", "fork", "no-token", "no-addr"],
)
@pytest.mark.parametrize("code", [0, 1, 2])
def test_check_step_falls_back_to_offline_and_keeps_the_exit_code(
    pr: dict[str, Any], stub_workdir: Path, vault_addr: str, vault_token: str, offline: bool, code: int
) -> None:
    script = step_by_id(steps(pr, "keyfence-check"), "check")["run"]
    log, out = stub_workdir / "stub.log", stub_workdir / "github_output"
    env = {
        "VAULT_ADDR": vault_addr,
        "VAULT_TOKEN": vault_token,
        "KEYFENCE_STACK": "dev",
        "GITHUB_OUTPUT": str(out),
        "STUB_LOG": str(log),
        "STUB_CODE": str(code),
        "RUN_URL": "https://github.com/acme/fleet/actions/runs/42",
    }
    result = run_step(script, stub_workdir, env)
    assert result.returncode == 0, result.stderr  # the step itself never fails; the last step does
    calls = [line.removeprefix("ARGS ") for line in log.read_text().splitlines() if line.startswith("ARGS ")]
    reports = " ".join(f"--report {fmt}={path}" for fmt, path in REPORTS.items())
    assert calls == [
        f"check --stack dev{' --offline' if offline else ''} "
        f"--details-url https://github.com/acme/fleet/actions/runs/42 {reports}"
    ]
    envs = {line for line in log.read_text().splitlines() if line.startswith("ENV ")}
    if offline:
        assert envs == {"ENV VAULT_ADDR=<unset> VAULT_TOKEN=<unset>"}
        assert "::notice" in result.stdout
    else:
        assert envs == {f"ENV VAULT_ADDR={vault_addr} VAULT_TOKEN={vault_token}"}
    for fmt, path in REPORTS.items():
        assert (stub_workdir / path).read_text() == f"report {fmt}\n"
    got = outputs(out)
    assert got["exit-code"] == str(code)
    assert got["mode"].startswith("offline" if offline else "Vault")


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize("code", ["0", "1", "2", ""])
def test_last_step_exits_with_the_check_code(pr: dict[str, Any], tmp_path: Path, code: str) -> None:
    result = run_step(steps(pr, "keyfence-check")[-1]["run"], tmp_path, {"CODE": code})
    assert result.returncode == int(code or 2)


COMPOSE_ENV = {
    "RUN_URL": "https://github.com/acme/fleet/actions/runs/42",
    "REPORTS_ARTIFACT": "keyfence-reports",
}
"""What the job's env gives the compose step."""


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize("has_report", [True, False])
def test_comment_names_code_and_mode_and_falls_back_without_a_report(
    pr: dict[str, Any], tmp_path: Path, has_report: bool
) -> None:
    compose = next(s for s in steps(pr, "keyfence-check") if s.get("name") == "Compose the PR comment")
    if has_report:
        (tmp_path / "keyfence.md").write_text("## keyfence check\n\n1 mandatory violation\n")
    summary = tmp_path / "summary.md"
    env = {
        "CODE": "2" if not has_report else "1",
        "MODE": "offline: test",
        "GITHUB_STEP_SUMMARY": str(summary),
        **COMPOSE_ENV,
    }
    result = run_step(compose["run"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    body = (tmp_path / "keyfence-comment.md").read_text()
    assert "exit code `" in body and "offline: test" in body
    # The comment links to the run and names the artifact that keeps every full report.
    assert "artifact `keyfence-reports` of [this run](https://github.com/acme/fleet/actions/runs/42)" in body
    assert ("1 mandatory violation" in body) is has_report
    assert ("No report was produced" in body) is not has_report
    assert summary.read_text() == body


@pytest.mark.skipif(BASH is None, reason="needs bash")
@pytest.mark.parametrize("report_bytes", [59_000, 70_000])
def test_comment_fits_githubs_limit_and_says_when_it_was_cut(
    pr: dict[str, Any], tmp_path: Path, report_bytes: int
) -> None:
    compose = next(s for s in steps(pr, "keyfence-check") if s.get("name") == "Compose the PR comment")
    body = ("- violation line\n" * (report_bytes // 17 + 1))[:report_bytes]
    (tmp_path / "keyfence.md").write_text(body)
    env = {
        "CODE": "1",
        "MODE": "offline: test",
        "GITHUB_STEP_SUMMARY": str(tmp_path / "summary.md"),
        **COMPOSE_ENV,
    }
    result = run_step(compose["run"], tmp_path, env)
    assert result.returncode == 0, result.stderr
    comment = (tmp_path / "keyfence-comment.md").read_text()
    assert len(comment) <= 65_536
    if report_bytes <= 60_000:
        assert body in comment and "Report cut" not in comment  # a report keyfence wrote is never cut
    else:
        assert "Report cut" in comment and str(report_bytes) in comment
        cut_note = next(line for line in comment.splitlines() if "Report cut" in line)
        assert "`keyfence-reports` artifact" in cut_note and COMPOSE_ENV["RUN_URL"] in cut_note
