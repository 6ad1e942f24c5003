"""The benchmark from start to end: Vault, fleets, rounds of measurements, figures.

One embedded OpenBao serves the whole run; each fleet lives under its own Vault prefix. Every
fleet is seeded, and its spec and plan written, before any timing starts. Then the run goes
in ``repeats`` rounds; a round times every size once, each in a fresh interpreter
(:mod:`bench.worker`), then measures its check's memory and GC time in another
(:mod:`bench.memory`), so no size inherits the heap of the one before. Rounds alternate the
order of sizes (increasing, then decreasing, ...), so a machine that slows for some minutes
slows several sizes alike instead of one size's every run, and a drift over the run does not
favour the small sizes.

A stage's figure is the best (the least) of its runs (one a round, or
:data:`bench.stages.QUICK_RUNS` a round for a stage of seconds), as Python's ``timeit`` documentation
advises: on a shared machine the slower runs measure other processes' interference, not the
code (https://docs.python.org/3/library/timeit.html, ``Timer.repeat``). The median and every
run are kept in the JSON beside it. Peak memory is the worst of the rounds, since its target is
a ceiling. Everything needed to trust a figure goes into the JSON: every run, the resource
counts of program and floor, the seeding time, the machine.
"""

from __future__ import annotations

import json
import secrets
import statistics
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Final

from keyfence.devvault import DevVault
from keyfence.vault import VaultSettings

from . import memory, report, worker
from .child import run_child
from .fleet import Fleet, generate
from .seed import seed
from .stages import ENGINE_ADDED, QUICK_RUNS, BenchError
from .worker import Seeded

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


def _prepare(fleet: Fleet, settings: VaultSettings, directory: Path) -> tuple[Seeded, float]:
    """Seed the fleet's keys, write its spec and its plan; returns them and the time it took."""
    began = time.perf_counter()
    seed(settings.addr, settings.token or "", fleet)
    spec = fleet.write_spec(directory)
    plan = directory / f"{fleet.prefix}.plan.json"
    run_child("bench.plan", [str(spec), str(plan)], settings)
    return Seeded(fleet, spec, plan), time.perf_counter() - began


def schedule(sizes: Sequence[int], repeats: int) -> list[tuple[int, int]]:
    """``(round, size)`` in the order they run: increasing sizes in even rounds, decreasing in odd."""
    ordered = sorted(sizes)
    return [
        (number, size)
        for number in range(repeats)
        for size in (ordered if number % 2 == 0 else ordered[::-1])
    ]


def stage_figure(runs: Sequence[float]) -> dict[str, Any]:
    """A stage's figure from its runs: the best, and the median and the runs beside it."""
    return {"best_s": min(runs), "median_s": statistics.median(runs), "runs_s": list(runs)}


def combine(
    measured: Sequence[dict[str, Any]], memories: Sequence[memory.MemoryFigures], seed_s: float
) -> dict[str, Any]:
    """One size's figures from its rounds: every worker's runs and every memory measurement.

    Raises BenchError if the rounds did not declare the same resources, or if the check found
    anything or analysed other than what the program declared (plus what the engine adds).
    """
    first = measured[0]
    for other in measured[1:]:
        if (other["resources"], other["resource_types"]) != (first["resources"], first["resource_types"]):
            raise BenchError(
                f"the {first['processes']}-process fleet declared different resources across rounds"
            )
    expected = first["resources"] + ENGINE_ADDED
    for mem in memories:
        if mem.findings:
            raise BenchError(
                f"the {first['processes']}-process fleet is not clean: the check reported {mem.findings} "
                "finding(s); the benchmark must time a passing check"
            )
        if mem.resources != expected:
            raise BenchError(
                f"the check analysed {mem.resources} resources, the program declared {first['resources']} "
                f"(plus {ENGINE_ADDED} the engine adds)"
            )
    stages = {
        name: stage_figure([run for m in measured for run in m["stages"][name]["runs_s"]])
        for name in first["stages"]
    }
    figures = {key: value for key, value in first.items() if key != "stages"}
    figures["stages"] = stages
    figures["memory"] = {
        "check_mb": max(m.check_mb for m in memories),
        "pack_mb": max((m.pack_mb for m in memories if m.pack_mb is not None), default=None),
        "program_mb": max((m.program_mb for m in memories if m.program_mb is not None), default=None),
        "seconds": min(m.seconds for m in memories),
        "gc_s": min(m.gc_s for m in memories),
        "runs": [asdict(m) for m in memories],
    }
    figures["seed_s"] = seed_s
    figures["ratios"] = report.size_ratios(stages)
    return figures


def run(
    config: BenchConfig,
    *,
    vault: VaultSettings | None = None,
    progress: Callable[[str], None] = lambda _: None,
) -> dict[str, Any]:
    """Run the whole benchmark and return its figures (the JSON document)."""
    tag = secrets.token_hex(4)
    sizes = sorted(config.sizes)
    with _vault(vault) as settings, tempfile.TemporaryDirectory(prefix="keyfence-bench-") as tmp:
        directory = Path(tmp)
        warmup, _ = _prepare(worker.warmup_fleet(f"bench-warmup-{tag}"), settings, directory)
        prepared: dict[int, tuple[Seeded, float]] = {}
        for size in sizes:
            progress(f"{size} processes: seeding {size} keys, writing the spec and the plan")
            fleet = generate(size, config.subaccounts, prefix=f"bench{size}-{tag}")
            prepared[size] = _prepare(fleet, settings, directory)
        measured: dict[int, list[dict[str, Any]]] = {size: [] for size in sizes}
        memories: dict[int, list[memory.MemoryFigures]] = {size: [] for size in sizes}
        for number, size in schedule(sizes, config.repeats):
            seeded, where = prepared[size][0], f"round {number + 1} of {config.repeats}, {size} processes"
            progress(f"{where}: every stage, in a fresh process")
            measured[size].append(worker.measure(seeded, warmup, settings))
            progress(f"{where}: the check's memory and GC time, in another")
            memories[size].append(memory.measure(seeded.spec, settings))
        figures = [combine(measured[size], memories[size], prepared[size][1]) for size in sizes]
    return finish(config, figures)


def finish(config: BenchConfig, sizes: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The JSON document around per-size figures: growth, targets, machine, config."""
    results: dict[str, Any] = {
        "config": {
            "sizes": [s["processes"] for s in sizes],
            "subaccounts": config.subaccounts,
            "repeats": config.repeats,
            "quick_runs": QUICK_RUNS,
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
