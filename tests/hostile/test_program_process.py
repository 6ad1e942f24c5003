"""Nothing a program under check does can change the verdict: it runs in its own process.

The programs are in ``tests/fixtures/programs/``. Each hostile one tries to end the check
early, to pass a blocked stack, to write into the report, or to escape; each must end in
exit 2 with one message naming what happened, or, when the program did complete, in the
verdict the engine's record gives. Refusals (what the hermetic check cannot do) are exit 2
even when the program swallows the error.
"""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keyfence.cli.app import app
from keyfence.errors import EXIT_INVALID, EXIT_VIOLATION
from tests.fleet_fixtures import EXAMPLE_SPEC, ROOT

PROGRAMS = ROOT / "tests" / "fixtures" / "programs"


def check(program: str, *extra: str) -> Any:
    args = [
        "check",
        "--offline",
        "--spec",
        EXAMPLE_SPEC,
        "--program",
        str(PROGRAMS / program),
        "--format",
        "json",
    ]
    return CliRunner().invoke(app, [*args, *extra])


def refused(result: Any, *phrases: str) -> None:
    assert result.exit_code == EXIT_INVALID, (result.exit_code, result.stdout[-500:], result.stderr[-2000:])
    # The report asked for is the check's own failure report (issue 14), never the program's words.
    report = json.loads(result.stdout)
    assert report["ok"] is False and report["exit_code"] == EXIT_INVALID, report
    assert set(report) >= {"ok", "verdict", "error", "exit_code", "problems"}
    assert result.stderr.startswith("error: ")
    assert "Traceback" not in result.stderr.split("program output")[0]
    for phrase in phrases:
        assert phrase in result.stderr, result.stderr[:2000]


@pytest.fixture
def no_helm(monkeypatch: pytest.MonkeyPatch) -> None:
    """A PATH without any ``helm``, whatever the machine has."""
    monkeypatch.setenv(
        "PATH",
        os.pathsep.join(p for p in os.environ["PATH"].split(os.pathsep) if not (Path(p) / "helm").exists()),
    )


def test_sys_exit_zero_before_completing_is_exit_2() -> None:
    refused(check("exit-early"), "exited with status 0 before it completed", "sys.exit(0)")


def test_a_base_exception_is_exit_2_with_one_message() -> None:
    result = check("base-exception")
    refused(result, "raised Abandon: stop here")
    assert result.stderr.count("error:") == 1


def test_a_killed_program_is_exit_2() -> None:
    refused(check("self-kill"), "killed by signal SIGKILL before it completed")


def test_a_program_that_never_ends_is_stopped_at_the_timeout() -> None:
    refused(check("sleeps", "--timeout", "20"), "did not complete within 20 s (--timeout)")


def test_a_logged_error_fails_the_check_as_it_fails_a_preview() -> None:
    refused(check("logs-error"), "logged an error", "replica count could not be determined")


def test_a_forged_completion_signal_is_exit_2() -> None:
    refused(check("forged-shutdown"), "kept calling the engine after it signalled completion")


def test_a_registration_after_completion_is_exit_2() -> None:
    refused(check("late-registration"), "after it signalled completion (RegisterResource)")


def test_an_atexit_os_exit_zero_does_not_pass_a_blocked_stack() -> None:
    result = check("atexit-exit")
    assert result.exit_code == EXIT_VIOLATION, result.stderr[-2000:]
    report = json.loads(result.stdout)
    assert report["ok"] is False
    assert any(v["urn"].endswith("::doubled") for v in report["violations"])


def test_printed_json_is_program_output_never_the_report() -> None:
    result = check("fake-json")
    assert result.exit_code == EXIT_VIOLATION
    report = json.loads(result.stdout)  # the whole of stdout is the one real report
    assert report["ok"] is False and report["violations"]
    assert 'program | stdout: {"ok": true, "violations": []}' in result.stderr
    assert 'program | stderr: {"ok": true, "violations": []}' in result.stderr


@pytest.mark.usefixtures("no_helm")
@pytest.mark.parametrize(
    ("program", "what"),
    [
        ("helm-v3", "helm.v3.Chart rogue"),
        ("helm-v4", "helm.v4.Chart rogue"),
        ("helm-release", "helm.v3.Release rogue"),
    ],
)
def test_a_helm_chart_without_helm_is_refused(program: str, what: str) -> None:
    refused(
        check(program),
        what,
        "cannot render a Helm chart without a `helm` binary",
        "pulumi preview --policy-pack",
    )


@pytest.mark.parametrize(
    ("program", "phrase"),
    [
        ("kustomize-v2", "kubernetes:kustomize/v2:Directory rogue: a component built by its provider"),
        ("reads-resource", "reads an existing resource"),
        ("unknown-function", "calls the function acme:index:getReplicaCount"),
    ],
)
def test_what_the_check_cannot_evaluate_is_refused_even_when_swallowed(program: str, phrase: str) -> None:
    refused(check(program), phrase)


# --------------------------------------------------------------------------- Helm rendered by a helm binary

FAKE_HELM = """#!/bin/sh
# A stand-in for `helm template`: records its arguments, prints a chart's manifest.
echo "$@" >> "{log}"
cat <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: rendered
spec:
  replicas: 3
  selector: {{matchLabels: {{app: rendered}}}}
  template:
    metadata: {{labels: {{app: rendered}}}}
    spec:
      containers: [{{name: app, image: "ghcr.io/acme/app:1.0.0"}}]
      volumes: [{{name: key, secret: {{secretName: executor-key}}}}]
YAML
"""


@pytest.fixture
def fake_helm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A ``helm`` on PATH that answers ``helm template`` (no real Helm is installable here)."""
    log = tmp_path / "helm-args.log"
    helm = tmp_path / "bin" / "helm"
    helm.parent.mkdir()
    helm.write_text(FAKE_HELM.format(log=log))
    helm.chmod(helm.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{helm.parent}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.mark.parametrize(
    ("program", "urn_suffix", "argument"),
    [
        (
            "helm-v3",
            "kubernetes:helm.sh/v3:Chart$kubernetes:apps/v1:Deployment::momentum/rendered",
            "template rogue chart",
        ),
        (
            "helm-v4",
            "kubernetes:helm.sh/v4:Chart$kubernetes:apps/v1:Deployment::rogue:momentum/rendered",
            "--no-hooks",
        ),
        (
            "helm-release",
            "kubernetes:helm.sh/v3:Release$kubernetes:apps/v1:Deployment::rogue:momentum/rendered",
            "--include-crds",
        ),
    ],
)
def test_a_helm_chart_is_rendered_and_judged_when_helm_is_there(
    fake_helm: Path, program: str, urn_suffix: str, argument: str
) -> None:
    result = check(program)
    assert result.exit_code == EXIT_VIOLATION, result.stderr[-2000:]
    blocked = {
        v["urn"].split("::", 2)[2]
        for v in json.loads(result.stdout)["violations"]
        if v["level"] == "mandatory"
    }
    assert urn_suffix in blocked, sorted(blocked)
    assert argument in fake_helm.read_text()
    assert "--namespace momentum" in fake_helm.read_text()
