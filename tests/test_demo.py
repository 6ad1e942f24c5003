"""``make demo`` as a test: on a fresh copy of the checkout, and when a step deviates."""

from __future__ import annotations

import io
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from rich.console import Console

import keyfence.demo as demo
from keyfence.errors import EXIT_OK, EXIT_VIOLATION
from keyfence.spec import ProcessEntry

ROOT = Path(__file__).resolve().parent.parent
API_KEY_SHAPE = re.compile(r"(?<![A-Za-z0-9_-])[A-Za-z0-9_-]{56}(?![A-Za-z0-9_-])")
"""What ``demo.generate_material`` makes: ``secrets.token_urlsafe(42)`` and base64 of 64 bytes."""
API_SECRET_SHAPE = re.compile(r"[A-Za-z0-9+/]{86}==")


def fresh_copy(target: Path) -> Path:
    """What a clone would hold: tracked and untracked-but-not-ignored files, nothing else.

    A real ``git clone`` needs a commit; this copies the same set of files from the working
    tree (no .venv, caches or build output), so the demo runs on exactly what would ship.
    """
    listing = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        check=True,
        capture_output=True,
    ).stdout.decode()
    for name in filter(None, listing.split("\0")):
        source = ROOT / name
        if source.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / name)
    return target


def clean_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "KEYFENCE_"))}
    env.pop("PYTHONPATH", None)
    return env


@pytest.mark.slow
def test_make_demo_on_a_fresh_copy(tmp_path: Path) -> None:
    checkout = fresh_copy(tmp_path / "keyfence")
    assert not (checkout / ".venv").exists()
    assert (checkout / "keyfence" / "demo.py").is_file() and (checkout / "examples" / "fleet.yaml").is_file()
    # The Makefile's target, with the existing venv's interpreter instead of a rebuilt venv.
    proc = subprocess.run(
        [sys.executable, "-m", "keyfence.demo"],
        cwd=checkout,
        env=clean_env(),
        capture_output=True,
        text=True,
        timeout=240,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == EXIT_OK, out
    for number in range(1, demo.TOTAL_STEPS + 1):
        assert f"Step {number}/{demo.TOTAL_STEPS} — " in proc.stdout
    assert (
        "✔ as expected: refused (exit 1): the key is already registered at secret/kraken/momentum/executor"
        in out
    )
    assert (
        "✔ as expected: blocked (exit 1): no-duplicate-key-assignment names both momentum/executor "
        "and momentum/executor-b"
    ) in out
    assert "PASSED: no mandatory policy violations" in out
    # The pack's findings on the copied key (two holders, and the ledger's note naming the other
    # path on the copy's Secret), and the key ledger's own: it records that key elsewhere.
    assert "FAILED: 4 mandatory policy violations" in out
    assert "key-ledger (mandatory, 1)" in out
    assert "demo passed: all 6 steps behaved as expected" in out
    assert "✘" not in out
    assert not API_KEY_SHAPE.search(out), "something shaped like a generated api key was printed"
    assert not API_SECRET_SHAPE.search(out), "something shaped like a generated api secret was printed"
    assert "\x1b[" not in out, "piped output must be plain text"


@pytest.mark.slow
def test_demo_exits_1_naming_the_step_that_deviated(monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys with more rights than their role: keyfence refuses them, so step 2 deviates."""

    def too_many(entry: ProcessEntry) -> tuple[str, ...]:
        return ("general-full", "withdrawal") if entry.subaccount.venue == "futures" else ("query-funds",)

    monkeypatch.setattr(demo, "demo_permissions", too_many)
    for name in [n for n in os.environ if n.startswith(("VAULT_", "KEYFENCE_VAULT_"))]:
        monkeypatch.delenv(name)
    sink = io.StringIO()
    screen = demo.Screen(Console(file=sink, width=200))
    code = demo.Demo(screen).run()
    out = sink.getvalue()
    assert code == EXIT_VIOLATION, out
    assert "✘ step 2/6 deviated: 'printf" in out
    assert "exited 1, expected 0" in out
    assert "demo FAILED at step 2/6: Register one key per process" in out
    assert "Step 3/6" not in out
