"""One fleet size, timed stage by stage in a fresh interpreter.

The parent seeds Vault and writes the spec; this child regenerates the same fleet (it is
deterministic in its size, subaccount count and prefix), warms up on a tiny seeded fleet so
that imports and first-call caches belong to no size, then times every stage and prints
the figures as one JSON line: ``python -m bench.worker --processes N ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from keyfence.vault import VaultSettings

from . import stages
from .child import run_child
from .fleet import Fleet, generate

WARMUP_PROCESSES = 10
WARMUP_SUBACCOUNTS = 2


def warmup_fleet(prefix: str) -> Fleet:
    return generate(WARMUP_PROCESSES, WARMUP_SUBACCOUNTS, prefix=prefix)


def measure(
    fleet: Fleet,
    spec_path: Path,
    warmup_spec: Path,
    warmup_prefix: str,
    repeats: int,
    settings: VaultSettings,
) -> dict[str, Any]:
    """Time ``fleet`` (already seeded, its spec at ``spec_path``) in a fresh interpreter."""
    args = [
        f"--processes={len(fleet.processes)}",
        f"--subaccounts={len(fleet.subaccounts)}",
        f"--prefix={fleet.prefix}",
        f"--spec={spec_path}",
        f"--warmup-prefix={warmup_prefix}",
        f"--warmup-spec={warmup_spec}",
        f"--repeats={repeats}",
    ]
    figures: dict[str, Any] = run_child("bench.worker", args, settings)
    return figures


def figures_json(figures: stages.SizeFigures) -> dict[str, Any]:
    return {
        "processes": figures.processes,
        "subaccounts": figures.subaccounts,
        "resources": figures.resources,
        "resource_types": {"program": figures.program_types, "floor": figures.floor_types},
        "stages": {
            name: {"median_s": t.median, "runs_s": list(t.runs)} for name, t in figures.timings.items()
        },
    }


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    parser.add_argument("--processes", type=int, required=True)
    parser.add_argument("--subaccounts", type=int, required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--spec", type=Path, required=True)
    parser.add_argument("--warmup-prefix", required=True)
    parser.add_argument("--warmup-spec", type=Path, required=True)
    parser.add_argument("--repeats", type=int, required=True)
    args = parser.parse_args(argv)
    settings = VaultSettings.from_env()
    stages.measure(warmup_fleet(args.warmup_prefix), args.warmup_spec, settings, 1)
    fleet = generate(args.processes, args.subaccounts, prefix=args.prefix)
    figures = stages.measure(fleet, args.spec, settings, args.repeats)
    print(json.dumps(figures_json(figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
