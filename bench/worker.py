"""One run of every stage for one fleet size, in a fresh interpreter.

The parent seeds Vault and writes the spec and the plan; this child regenerates the same
fleet (it is deterministic in its size, subaccount count and prefix), warms up on a tiny
seeded fleet so that imports and first-call caches belong to no size, then times every stage
once and prints the figures as one JSON line: ``python -m bench.worker --processes N ...``.
Repeats are further workers, spread over the run by :mod:`bench.run`.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Seeded:
    """A fleet whose keys are in Vault, with its spec and its plan (:mod:`bench.plan`) written."""

    fleet: Fleet
    spec: Path
    plan: Path

    def args(self, flag: str) -> list[str]:
        return [
            f"--{flag}processes={len(self.fleet.processes)}",
            f"--{flag}subaccounts={len(self.fleet.subaccounts)}",
            f"--{flag}prefix={self.fleet.prefix}",
            f"--{flag}spec={self.spec}",
            f"--{flag}plan={self.plan}",
        ]


def measure(target: Seeded, warmup: Seeded, settings: VaultSettings) -> dict[str, Any]:
    """Time every stage of ``target`` once, in a fresh interpreter warmed up on ``warmup``."""
    figures: dict[str, Any] = run_child("bench.worker", [*target.args(""), *warmup.args("warmup-")], settings)
    return figures


def figures_json(figures: stages.SizeFigures) -> dict[str, Any]:
    return {
        "processes": figures.processes,
        "subaccounts": figures.subaccounts,
        "resources": figures.resources,
        "resource_types": {"program": figures.program_types, "floor": figures.floor_types},
        "stages": {name: {"runs_s": list(t.runs)} for name, t in figures.timings.items()},
    }


def _seeded(args: argparse.Namespace, flag: str) -> Seeded:
    def get(name: str) -> Any:
        return getattr(args, f"{flag}{name}")

    fleet = generate(get("processes"), get("subaccounts"), prefix=get("prefix"))
    return Seeded(fleet, get("spec"), get("plan"))


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.worker")
    for flag in ("", "warmup-"):
        parser.add_argument(f"--{flag}processes", type=int, required=True)
        parser.add_argument(f"--{flag}subaccounts", type=int, required=True)
        parser.add_argument(f"--{flag}prefix", required=True)
        parser.add_argument(f"--{flag}spec", type=Path, required=True)
        parser.add_argument(f"--{flag}plan", type=Path, required=True)
    args = parser.parse_args(argv)
    settings = VaultSettings.from_env()
    warmup, target = _seeded(args, "warmup_"), _seeded(args, "")
    stages.measure(warmup.fleet, warmup.spec, warmup.plan, settings, 1)
    figures = stages.measure(target.fleet, target.spec, target.plan, settings, 1)
    print(json.dumps(figures_json(figures)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
