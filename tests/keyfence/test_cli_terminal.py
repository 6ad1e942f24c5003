"""The command line in a real terminal (a pty via ``script``): help, widths, flags as people know them."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.fleet_fixtures import EXAMPLE_SPEC, ROOT

KEYFENCE = str(Path(sys.executable).parent / "keyfence")
SCRIPT = shutil.which("script")
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
needs_pty = pytest.mark.skipif(SCRIPT is None, reason="needs script(1) for a pseudo-terminal")


def in_terminal(command: str, columns: int = 80) -> str:
    """Run ``command`` on a pty of ``columns`` columns; its screen output without colours."""
    assert SCRIPT
    done = subprocess.run(
        [SCRIPT, "-qec", f"stty cols {columns} rows 50; {command}", "/dev/null"],
        cwd=ROOT,
        env={**os.environ, "TERM": "xterm", "COLUMNS": str(columns)},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return ANSI.sub("", done.stdout).replace("\r", "")


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [KEYFENCE, *args], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )


def test_version_and_short_help() -> None:
    version = run("--version")
    assert version.returncode == 0 and re.fullmatch(r"keyfence \d+\.\d+\.\d+\S*\n", version.stdout)
    for args in (["-h"], ["check", "-h"], ["keys", "-h"], ["keys", "register", "-h"]):
        done = run(*args)
        assert done.returncode == 0 and "Usage: keyfence" in done.stdout, args


@needs_pty
@pytest.mark.parametrize(
    "command",
    ["check", "plan", "vault-policies", "keys register", "keys list", "keys revoke", "keys release"],
    ids=lambda c: c.replace(" ", "-"),
)
def test_help_fits_80_columns_with_flags_as_flags_and_words_as_metavars(command: str) -> None:
    screen = in_terminal(f"{KEYFENCE} {command} --help")
    lines = screen.splitlines()
    assert lines and all(len(line) <= 80 for line in lines), max(lines, key=len)
    # A metavar is a word (SECONDS, FILE), never a type in brackets (<float range>, <file>, <str>).
    assert not re.search(r"(?:--[\w-]+|[A-Z/]{2,})\s<[^>]+>", screen), screen
    assert not re.search(r"--(offline|debug|rotate|yes)\s+(BOOLEAN|<)", screen)
    if command in ("check", "plan"):
        assert re.search(r"--offline\s{2,}Do not contact", screen)
        assert "--config KEY=VALUE" in screen and "--spec FILE" in screen


def test_revoke_spec_has_its_own_help() -> None:
    revoke = run("keys", "revoke", "--help").stdout
    register = run("keys", "register", "--help").stdout
    assert "venue and permissions" in register
    assert "venue and permissions" not in revoke and "key path" in revoke


@needs_pty
def test_check_tables_fit_80_columns_without_splitting_headers() -> None:
    screen = in_terminal(f"{KEYFENCE} check --offline --spec {EXAMPLE_SPEC}")
    lines = screen.splitlines()
    assert "PASSED" in screen
    assert all(len(line) <= 80 for line in lines), max(lines, key=len)
    header_rows = [line for line in lines if "process" in line and "fingerprint" in line]
    assert header_rows and all("permissions" in row for row in header_rows), "a header split mid-word"
    # Permissions fold after commas, never inside an id.
    cells = " ".join(lines)
    for permission in ("deposit-funds", "query-funds", "withdraw-funds"):
        assert permission in cells


@needs_pty
def test_check_tables_use_the_width_of_a_wide_terminal() -> None:
    screen = in_terminal(f"{KEYFENCE} check --offline --spec {EXAMPLE_SPEC}", columns=160)
    assert "namespace" in screen and "workload" in screen
