"""README.md stays true: its commands exist with the options it shows, and its figures are the code's."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import tomllib
import yaml
from typer.testing import CliRunner

from keyfence.check import markdown as md
from keyfence.check import report
from keyfence.cli.app import app

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
CONSOLE = re.compile(r"```console\n(.*?)```", re.S)
SIGNATURE = re.compile(r"^\(.*: '.*'\) -> '.*'$", re.M)


def readme_commands() -> list[list[str]]:
    """Every `keyfence ...` line in the README's console blocks, comments and continuations joined."""
    commands = []
    for block in CONSOLE.findall(README):
        text = re.sub(r"\n\s+(?=\[|--)", " ", block)  # usage lines continued on the next line
        for line in text.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith("keyfence "):
                commands.append(shlex.split(line.replace("[", " ").replace("]", " ").replace("...", " ")))
    return commands


def help_of(words: list[str]) -> str:
    path = [w for w in words[1:] if not w.startswith("-")][:2]
    while path:
        result = CliRunner().invoke(app, [*path, "--help"])
        if result.exit_code == 0:
            return result.stdout
        path.pop()
    return CliRunner().invoke(app, ["--help"]).stdout


@pytest.mark.parametrize("words", readme_commands(), ids=lambda w: " ".join(w[:3]))
def test_every_option_the_readme_shows_exists(words: list[str]) -> None:
    text = help_of(words)
    for word in words:
        option = word.split("=", 1)[0]
        if option.startswith("--"):
            assert re.search(rf"(^|[\s,]){re.escape(option)}\b", text), (
                f"{option} not in the help of {words[:3]}"
            )


def test_no_stray_function_signature_in_readme_bench_results_or_bench_output() -> None:
    assert not SIGNATURE.search(README)
    assert not SIGNATURE.search((ROOT / "bench" / "RESULTS.md").read_text())
    results_md = (ROOT / "bench" / "RESULTS.md").read_text()
    assert "Fleets across" in results_md


def test_readme_figures_are_the_codes() -> None:
    assert f"more than {md.MAX_TABLE_ROWS}" in README
    assert f"under {md.MARKDOWN_BUDGET:,} bytes" in README
    assert f"{md.GITHUB_COMMENT_LIMIT:,} characters" in README
    assert f"under {report.NARROW} columns" in README


def test_readme_json_keys_are_the_reports() -> None:
    result = CliRunner().invoke(
        app, ["check", "--offline", "--spec", "examples/fleet.yaml", "--format", "json"]
    )
    report_json = json.loads(result.stdout)
    for key in report_json:
        assert f'"{key}"' in README or f"`{key}`" in README, f"README does not document the JSON key {key!r}"
    assert f"({report_json['resources']} resources)" in README


def test_setup_says_how_keyfence_gets_on_path_and_which_venv_pulumi_uses() -> None:
    assert "source .venv/bin/activate" in README
    virtualenv = yaml.safe_load((ROOT / "Pulumi.yaml").read_text())["runtime"]["options"]["virtualenv"]
    assert f"`Pulumi.yaml` names the same `{virtualenv}`" in README
    assert "pip install -e ." in README


def test_license_is_an_spdx_string_so_builds_print_no_deprecation_banner() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert isinstance(project["project"]["license"], str)
    assert any(r.startswith("setuptools>=77") for r in project["build-system"]["requires"])
