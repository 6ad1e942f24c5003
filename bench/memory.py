"""Peak memory of ``keyfence check``, measured in a process of its own.

An in-process figure would include whatever the benchmark itself holds, so the check runs
in a fresh interpreter, as the command does, and reports its own peak resident set
(``ru_maxrss``) and that of its children: the policy pack process, which it has waited for
by the time it returns. Run as a module, this file is that child:
``python -m bench.memory SPEC`` with ``VAULT_ADDR``/``VAULT_TOKEN`` set.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from keyfence.vault import VaultSettings

from .child import run_child


@dataclass(frozen=True)
class MemoryFigures:
    """Peak resident memory in MiB, and the check's wall time in that fresh process."""

    check_mb: float
    pack_mb: float
    seconds: float
    """``run_check`` alone, imports excluded: comparable with the in-process figure."""


def _peak_mb(who: int) -> float:
    peak = resource.getrusage(who).ru_maxrss
    # Linux reports kilobytes, macOS bytes.
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


def measure(spec_path: Path, settings: VaultSettings) -> MemoryFigures:
    """Run the check on ``spec_path`` in a fresh interpreter and read its peak memory."""
    data = run_child("bench.memory", [str(spec_path)], settings)
    return MemoryFigures(float(data["check_mb"]), float(data["pack_mb"]), float(data["seconds"]))


def main(argv: list[str]) -> int:
    """The child: one check, then its figures as one JSON line on stdout."""
    from keyfence.check.runner import run_check

    if len(argv) != 1:
        print("usage: python -m bench.memory SPEC", file=sys.stderr)
        return 2
    started = time.perf_counter()
    result = run_check(argv[0], offline=False, vault_settings=VaultSettings.from_env())
    seconds = time.perf_counter() - started
    if not result.ok:
        print(f"the check found {len(result.mandatory)} mandatory violation(s)", file=sys.stderr)
        return 1
    figures = {
        "check_mb": _peak_mb(resource.RUSAGE_SELF),
        "pack_mb": _peak_mb(resource.RUSAGE_CHILDREN),
        "seconds": seconds,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
