"""The benchmark's figures: ratios, targets, the machine they came from, as JSON and as tables.

Ratios are computed here, from each stage's best run (see :mod:`bench.run`), and nowhere
else, so the JSON, the console table and the markdown table can never disagree. Targets are
the issue's, all from one run: the check against the floor at the reference size (1000
processes), Vault at the reference size, AnalyzeStack and the check's peak memory at the
largest size (4000), and every stage, GC included, linear over each doubling of the fleet.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import platform
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, Final, Literal

from rich.console import Console
from rich.table import Table

from .stages import ANALYZE_STACK, CHECK, FLOOR, LEDGER, STAGES, VAULT_DATA, VAULT_METADATA

REFERENCE_SIZE: Final = 1000
LARGE_SIZE: Final = 4000
GROWTH_LIMIT: Final = 2.2
"""time(2n)/time(n) at most this for every stage: linear with 10% slack, never quadratic."""
CHECK_OVER_FLOOR_LIMIT: Final = 1.15
VAULT_LIMIT_S: Final = 1.0
ANALYZE_STACK_LIMIT_S: Final = 4.0
MEMORY_LIMIT_MB: Final = 900.0
GC: Final = "gc"
"""The check process's garbage collection time, measured with its peak memory."""

STAGE_LABELS: Final[dict[str, str]] = {
    "floor": "floor: bare SDK program, same resources (whole process)",
    "spec": "spec load and validation",
    "vault_metadata": "Vault resolution, metadata only (check)",
    "vault_data": "Vault resolution, metadata + data (deploy)",
    "ledger": "key ledger: resolve and check every claim",
    "registration": "program registration, check-mode keys resolved",
    "pack_start": "policy pack start + configure",
    "analyze": "policy analysis: Analyze, one call per resource",
    "analyze_stack": "policy analysis: AnalyzeStack",
    "check": "keyfence check end to end (whole process)",
}
SDK_PACKAGES: Final = ("pulumi", "pulumi-kubernetes", "pulumi-policy", "grpcio", "protobuf", "hvac")

Status = Literal["PASS", "MISS", "n/a"]


# --------------------------------------------------------------------------- the machine


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace").splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def _memory_gib() -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("MemTotal:"):
                return round(int(line.split()[1]) / (1024 * 1024), 1)
    except (OSError, ValueError, IndexError):
        pass
    return None


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def machine(now: dt.datetime | None = None) -> dict[str, Any]:
    """Where and when the figures were taken: they mean nothing without it."""
    moment = now or dt.datetime.now(dt.timezone.utc)
    return {
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "memory_gib": _memory_gib(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "implementation": sys.implementation.name,
        "packages": {name: _version(name) for name in SDK_PACKAGES},
        "date": moment.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# --------------------------------------------------------------------------- ratios and targets


def ratio(numerator: float, denominator: float) -> float | None:
    """``numerator / denominator``; ``None`` when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else None


def size_ratios(stages: dict[str, dict[str, Any]]) -> dict[str, float | None]:
    """Per size: how far the check and the registration are above the floor."""
    floor = stages[FLOOR]["best_s"]
    return {"check_over_floor": ratio(stages[CHECK]["best_s"], floor)}


def _timed(size: dict[str, Any], name: str) -> float | None:
    """A stage's best run, or the check's least GC time, for one size."""
    if name == GC:
        value = size["memory"].get("gc_s")
        return float(value) if value is not None else None
    return float(size["stages"][name]["best_s"])


GROWN: Final[tuple[str, ...]] = (*STAGES, GC)
"""Everything whose growth between sizes is shown and judged."""


def growth(sizes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each step between consecutive sizes: time(larger)/time(smaller), stage by stage."""
    out = []
    for small, large in itertools.pairwise(sizes):
        out.append(
            {
                "from": small["processes"],
                "to": large["processes"],
                "size_ratio": large["processes"] / small["processes"],
                "stages": {name: _grown(_timed(large, name), _timed(small, name)) for name in GROWN},
            }
        )
    return out


def _grown(large: float | None, small: float | None) -> float | None:
    return ratio(large, small) if large is not None and small is not None else None


@dataclass(frozen=True)
class Target:
    """One target of the issue, with the figure measured for it."""

    name: str
    limit: float
    unit: str
    strict: bool
    """``True``: the figure must be below the limit; ``False``: at most the limit."""
    figure: float | None

    @property
    def status(self) -> Status:
        if self.figure is None:
            return "n/a"
        met = self.figure < self.limit if self.strict else self.figure <= self.limit
        return "PASS" if met else "MISS"

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "limit": self.limit,
            "unit": self.unit,
            "comparison": "<" if self.strict else "<=",
            "figure": self.figure,
            "status": self.status,
        }


def targets(
    results: dict[str, Any], reference: int = REFERENCE_SIZE, large: int = LARGE_SIZE
) -> list[Target]:
    """The issue's targets (``n/a`` where the size they are stated for was not run)."""
    at = next((s for s in results["sizes"] if s["processes"] == reference), None)
    big = next((s for s in results["sizes"] if s["processes"] == large), None)

    def stage(size: dict[str, Any] | None, name: str) -> float | None:
        return size["stages"][name]["best_s"] if size is not None else None

    out = [
        Target(
            f"check / floor at {reference}",
            CHECK_OVER_FLOOR_LIMIT,
            "x",
            False,
            at["ratios"]["check_over_floor"] if at is not None else None,
        ),
        Target(
            f"Vault metadata resolution of {reference} keys",
            VAULT_LIMIT_S,
            "s",
            True,
            stage(at, VAULT_METADATA),
        ),
        Target(f"Vault data resolution of {reference} keys", VAULT_LIMIT_S, "s", True, stage(at, VAULT_DATA)),
        Target(f"ledger claims of {reference} keys checked", VAULT_LIMIT_S, "s", True, stage(at, LEDGER)),
        Target(
            f"AnalyzeStack of {large} processes", ANALYZE_STACK_LIMIT_S, "s", True, stage(big, ANALYZE_STACK)
        ),
        Target(
            f"peak memory of the {large}-process check",
            MEMORY_LIMIT_MB,
            "MB",
            True,
            big["memory"]["check_mb"] if big is not None else None,
        ),
    ]
    steps = {(g["from"], g["to"]): g for g in results["growth"]}
    for small in (reference, 2 * reference):
        step = steps.get((small, 2 * small))
        for name in GROWN:
            figure = step["stages"][name] if step is not None else None
            out.append(Target(f"time({2 * small}) / time({small}): {name}", GROWTH_LIMIT, "x", False, figure))
    return out


# --------------------------------------------------------------------------- rendering


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _megabytes(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: one column per size, one row per figure."""
    sizes = results["sizes"]
    header = ["figure", *(f"{s['processes']} processes" for s in sizes)]
    body: list[list[str]] = [["resources registered", *(str(s["resources"]) for s in sizes)]]
    for name in STAGES:
        body.append([f"{STAGE_LABELS[name]} (s)", *(_seconds(s["stages"][name]["best_s"]) for s in sizes)])
    body.append(
        ["check in process, imports excluded (s)", *(_seconds(s["memory"]["seconds"]) for s in sizes)]
    )
    body.append(["GC in the check process (s)", *(_seconds(s["memory"].get("gc_s")) for s in sizes)])
    body.append(["peak memory of the check (MB)", *(_megabytes(s["memory"]["check_mb"]) for s in sizes)])
    body.append(
        ["peak memory of the pack process (MB)", *(_megabytes(s["memory"]["pack_mb"]) for s in sizes)]
    )
    body.append(
        [
            "peak memory of the program's process (MB, upper bound)",
            *(_megabytes(s["memory"].get("program_mb")) for s in sizes),
        ]
    )
    body.append(["check / floor", *(_times(s["ratios"]["check_over_floor"]) for s in sizes)])
    return header, body


def growth_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    steps = results["growth"]
    header = ["stage", *(f"time({g['to']}) / time({g['from']})" for g in steps)]
    body = [[name, *(_times(g["stages"][name]) for g in steps)] for name in GROWN]
    return header, body


def target_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    header = ["target", "limit", "measured", "status"]
    body = []
    for t in results["targets"]:
        figure = "-" if t["figure"] is None else f"{t['figure']:.2f} {t['unit']}".replace(" x", "x")
        body.append(
            [
                t["name"],
                f"{t['comparison']} {t['limit']:g} {t['unit']}".replace(" x", "x"),
                figure,
                t["status"],
            ]
        )
    return header, body


def machine_line(info: dict[str, Any]) -> str:
    packages = ", ".join(f"{k} {v}" for k, v in info["packages"].items() if v)
    memory = f"{info['memory_gib']} GiB RAM, " if info.get("memory_gib") else ""
    return (
        f"{info['cpu']}, {info['cores']} cores, {memory}{info['os']}, Python {info['python']}; "
        f"{packages}; {info['date']}"
    )


def _quick_note(config: dict[str, Any]) -> str:
    """How many runs the stages of seconds had, when a round runs them more than once."""
    quick = config.get("quick_runs", 1)
    if quick <= 1:
        return ""
    return f" ({quick} runs a round for spec, Vault, ledger and pack, {quick * config['repeats']} in all)"


def print_tables(results: dict[str, Any], console: Console | None = None) -> None:
    """The three tables (figures, growth, targets) on the console."""
    console = console or Console()
    config = results["config"]
    titles = (
        f"keyfence bench: {config['subaccounts']} subaccounts, best of {config['repeats']} round(s)"
        f"{_quick_note(config)}",
        "growth between sizes (linear is the size ratio)",
        "targets",
    )
    for title, (header, body) in zip(
        titles, (rows(results), growth_rows(results), target_rows(results)), strict=True
    ):
        if len(header) < 2:
            console.print(f"{title}: none, one size was run")
            continue
        table = Table(title=title, title_justify="left")
        for index, column in enumerate(header):
            table.add_column(column, justify="left" if index == 0 else "right")
        for row in body:
            table.add_row(*row)
        console.print(table)
    console.print(f"machine: {machine_line(results['machine'])}")


NO_GROWTH: Final = "No growth figures: one size was run."


def _markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The tables as markdown, for the README and the issue."""
    config = results["config"]
    parts = [
        f"Fleets across {config['subaccounts']} subaccounts; each time is the best of "
        f"{config['repeats']} round(s) over all sizes{_quick_note(config)}, each peak memory the worst; "
        "in seconds unless marked.",
        "",
        _markdown_table(*rows(results)),
        "",
        _markdown_table(*growth_rows(results)) if results["growth"] else NO_GROWTH,
        "",
        _markdown_table(*target_rows(results)),
        "",
        f"Machine: {machine_line(results['machine'])}",
    ]
    return "\n".join(parts) + "\n"
