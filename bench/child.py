"""Run one step of the benchmark in a fresh interpreter and read back its figures.

A figure taken in a long-lived process depends on what that process did before: its heap,
its allocator's arenas, the SDK state an earlier run left behind. Each fleet size, and the
memory measurement, therefore runs in its own ``python -m bench.<module>``, which reaches
Vault through the standard variables and prints its figures as one JSON line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Final

from keyfence.vault import VaultSettings

ROOT: Final = Path(__file__).resolve().parent.parent
TIMEOUT: Final = 3600.0
_SCRUBBED: Final = ("VAULT_", "BAO_", "KEYFENCE_VAULT_")


class ChildError(RuntimeError):
    """A benchmark step failed in its own interpreter; the message ends with its stderr."""


def child_env(settings: VaultSettings) -> dict[str, str]:
    """This environment, with only the given Vault's address and token, and the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED)}
    env["VAULT_ADDR"] = settings.addr
    env["VAULT_TOKEN"] = settings.token or ""
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    return env


def run_child(module: str, args: list[str], settings: VaultSettings, *, timeout: float = TIMEOUT) -> Any:
    """``python -m module args`` from the checkout; the JSON on the last line of its stdout."""
    done = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        env=child_env(settings),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        raise ChildError(f"python -m {module} {' '.join(args)} failed (exit {done.returncode}):\n{tail}")
    return json.loads(lines[-1])
