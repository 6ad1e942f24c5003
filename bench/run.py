"""The benchmark from start to end: Vault, fleets, stages, memory, figures.

One embedded OpenBao serves the whole run; each fleet lives under its own Vault prefix.
Sizes run in increasing order, each timed in a fresh interpreter (:mod:`bench.worker`) and
its check's memory measured in another (:mod:`bench.memory`), so no size inherits the heap
of the one before. Everything needed to trust a figure goes into the JSON: every run behind
each median, the resource counts of program and floor, the seeding time, the machine.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from keyfence.devvault import DevVault
from keyfence.vault import VaultSettings

from . import memory, report, worker
from .fleet import Fleet, generate
from .seed import seed

DEFAULT_SIZES: Final = (100, 1000, 2000, 4000)
DEFAULT_SUBACCOUNTS: Final = 20
DEFAULT_REPEATS: Final = 3


@dataclass(frozen=True)
class BenchConfig:
    """What to run."""

    sizes: tuple[int, ...] = DEFAULT_SIZES
    subaccounts: int = DEFAULT_SUBACCOUNTS
    repeats: int = DEFAULT_REPEATS
    reference: int = report.REFERENCE_SIZE
    """The size the issue's targets are stated for."""

    def __post_init__(self) -> None:
        if not self.sizes or any(s < 1 for s in self.sizes):
            raise ValueError("sizes must be positive process counts")
        if len(set(self.sizes)) != len(self.sizes):
            raise ValueError("sizes must be distinct")
        if self.subaccounts < 1 or self.repeats < 1:
            raise ValueError("subaccounts and repeats must be at least 1")


@contextmanager
def _vault(settings: VaultSettings | None) -> Iterator[VaultSettings]:
    """The given Vault, or an embedded OpenBao dev server for the duration of the run."""
    if settings is not None:
        yield settings
        return
    with DevVault() as server:
        yield VaultSettings(addr=server.addr, token=server.root_token)


def _prepare(fleet: Fleet, settings: VaultSettings, directory: Path) -> tuple[Path, float]:
    """Seed the fleet's keys and write its spec; returns the spec's path and the seeding time."""
    began = time.perf_counter()
    seed(settings.addr, settings.token or "", fleet)
    return fleet.write_spec(directory), time.perf_counter() - began


def run(
    config: BenchConfig,
    *,
    vault: VaultSettings | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the whole benchmark and return its figures (the JSON document)."""
    tag = secrets.token_hex(4)
    sizes: list[dict[str, Any]] = []
    with _vault(vault) as settings, tempfile.TemporaryDirectory(prefix="keyfence-bench-") as tmp:
        directory = Path(tmp)
        warmup_prefix = f"bench-warmup-{tag}"
        warmup_spec, _ = _prepare(worker.warmup_fleet(warmup_prefix), settings, directory)
        for size in sorted(config.sizes):
            fleet = generate(size, config.subaccounts, prefix=f"bench{size}-{tag}")
            progress(f"{size} processes: seeding {size} keys")
            spec_path, seed_s = _prepare(fleet, settings, directory)
            progress(
                f"{size} processes: timing every stage, {config.repeats} run(s) each, in a fresh process"
            )
            figures = worker.measure(fleet, spec_path, warmup_spec, warmup_prefix, config.repeats, settings)
            progress(f"{size} processes: peak memory and GC time of the check, in a fresh process")
            mem = memory.measure(spec_path, settings)
            figures["memory"] = {
                "check_mb": mem.check_mb,
                "pack_mb": mem.pack_mb,
                "program_mb": mem.program_mb,
                "seconds": mem.seconds,
                "gc_s": mem.gc_s,
            }
            figures["seed_s"] = seed_s
            figures["ratios"] = report.size_ratios(figures["stages"])
            sizes.append(figures)
    return finish(config, sizes)


def finish(config: BenchConfig, sizes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The JSON document around per-size figures: growth, targets, machine, config."""
    results: dict[str, Any] = {
        "config": {
            "sizes": [s["processes"] for s in sizes],
            "subaccounts": config.subaccounts,
            "repeats": config.repeats,
            "reference": config.reference,
        },
        "machine": report.machine(),
        "sizes": list(sizes),
        "growth": report.growth(sizes),
    }
    results["targets"] = [t.to_json() for t in report.targets(results, config.reference)]
    return results


def write(results: dict[str, Any], out: Path) -> None:
    """Write the figures as indented JSON (parent folders created)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
