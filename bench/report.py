"""The benchmark's figures: ratios, targets, the machine they came from, as JSON and as tables.

Ratios are computed here, from the medians, and nowhere else, so the JSON, the console
table and the markdown table can never disagree. Targets are the issue's, evaluated at the
reference size (1000 processes) and for the step from it to twice its size.
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

from .stages import ANALYSIS, CHECK, FLOOR, LEDGER, REGISTRATION, STAGES, VAULT_DATA, VAULT_METADATA

REFERENCE_SIZE: Final = 1000
GROWTH_LIMIT: Final = 2.2
"""time(2n)/time(n) at most this for every stage: linear with 10% slack, never quadratic."""
CHECK_OVER_FLOOR_LIMIT: Final = 1.3
VAULT_LIMIT_S: Final = 1.0
ANALYSIS_LIMIT_S: Final = 3.0
MEMORY_LIMIT_MB: Final = 600.0

STAGE_LABELS: Final[dict[str, str]] = {
    "floor": "floor: bare SDK program, same resources",
    "spec": "spec load and validation",
    "vault_metadata": "Vault resolution, metadata only (check)",
    "vault_data": "Vault resolution, metadata + data (deploy)",
    "ledger": "key ledger: resolve and check every claim",
    "registration": "program registration, keys resolved",
    "pack_start": "policy pack start + configure",
    "analysis": "policy analysis (Analyze + AnalyzeStack)",
    "check": "keyfence check end to end",
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
    floor = stages[FLOOR]["median_s"]
    return {
        "check_over_floor": ratio(stages[CHECK]["median_s"], floor),
        "registration_over_floor": ratio(stages[REGISTRATION]["median_s"], floor),
    }


def growth(sizes: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """For each step between consecutive sizes: time(larger)/time(smaller), stage by stage."""
    out = []
    for small, large in itertools.pairwise(sizes):
        out.append(
            {
                "from": small["processes"],
                "to": large["processes"],
                "size_ratio": large["processes"] / small["processes"],
                "stages": {
                    name: ratio(large["stages"][name]["median_s"], small["stages"][name]["median_s"])
                    for name in STAGES
                },
            }
        )
    return out


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


def targets(results: dict[str, Any], reference: int = REFERENCE_SIZE) -> list[Target]:
    """The issue's targets at ``reference`` processes (``n/a`` when that size was not run)."""
    at = next((s for s in results["sizes"] if s["processes"] == reference), None)

    def stage(name: str) -> float | None:
        return at["stages"][name]["median_s"] if at is not None else None

    out = [
        Target(
            f"check / floor at {reference}",
            CHECK_OVER_FLOOR_LIMIT,
            "x",
            False,
            at["ratios"]["check_over_floor"] if at is not None else None,
        ),
        Target(
            f"Vault metadata resolution of {reference} keys", VAULT_LIMIT_S, "s", True, stage(VAULT_METADATA)
        ),
        Target(f"Vault data resolution of {reference} keys", VAULT_LIMIT_S, "s", True, stage(VAULT_DATA)),
        Target(f"ledger claims of {reference} keys checked", VAULT_LIMIT_S, "s", True, stage(LEDGER)),
        Target(f"policy analysis of {reference} processes", ANALYSIS_LIMIT_S, "s", True, stage(ANALYSIS)),
        Target(
            f"peak memory of the {reference}-process check",
            MEMORY_LIMIT_MB,
            "MB",
            True,
            at["memory"]["check_mb"] if at is not None else None,
        ),
    ]
    step = next((g for g in results["growth"] if g["from"] == reference and g["to"] == 2 * reference), None)
    for name in STAGES:
        figure = step["stages"][name] if step is not None else None
        out.append(
            Target(f"time({2 * reference}) / time({reference}): {name}", GROWTH_LIMIT, "x", False, figure)
        )
    return out


# --------------------------------------------------------------------------- rendering


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _times(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    """The main table: one column per size, one row per figure."""
    sizes = results["sizes"]
    header = ["figure", *(f"{s['processes']} processes" for s in sizes)]
    body: list[list[str]] = [["resources registered", *(str(s["resources"]) for s in sizes)]]
    for name in STAGES:
        body.append([f"{STAGE_LABELS[name]} (s)", *(_seconds(s["stages"][name]["median_s"]) for s in sizes)])
    body.append(
        ["check in a fresh process, imports excluded (s)", *(_seconds(s["memory"]["seconds"]) for s in sizes)]
    )
    body.append(["peak memory of the check (MB)", *(f"{s['memory']['check_mb']:.0f}" for s in sizes)])
    body.append(["peak memory of the pack process (MB)", *(f"{s['memory']['pack_mb']:.0f}" for s in sizes)])
    body.append(["check / floor", *(_times(s["ratios"]["check_over_floor"]) for s in sizes)])
    body.append(["registration / floor", *(_times(s["ratios"]["registration_over_floor"]) for s in sizes)])
    return header, body


def growth_rows(results: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    steps = results["growth"]
    header = ["stage", *(f"time({g['to']}) / time({g['from']})" for g in steps)]
    body = [[name, *(_times(g["stages"][name]) for g in steps)] for name in STAGES]
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


def print_tables(results: dict[str, Any], console: Console | None = None) -> None:
    """The three tables (figures, growth, targets) on the console."""
    console = console or Console()
    config = results["config"]
    titles = (
        f"keyfence bench: {config['subaccounts']} subaccounts, median of {config['repeats']} run(s)",
        "growth between sizes (linear is the size ratio)",
        "targets",
    )
    for title, (header, body) in zip(
        titles, (rows(results), growth_rows(results), target_rows(results)), strict=True
    ):
        table = Table(title=title, title_justify="left")
        for index, column in enumerate(header):
            table.add_column(column, justify="left" if index == 0 else "right")
        for row in body:
            table.add_row(*row)
        console.print(table)
    console.print(f"machine: {machine_line(results['machine'])}")


def _markdown_table(header: list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + ["---:"] * (len(header) - 1)) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in body]
    return "\n".join(lines)


def markdown(results: dict[str, Any]) -> str:
    """The tables as markdown, for the README and the issue."""
    config = results["config"]
    parts = [
        f"Fleets across {config['subaccounts']} subaccounts; each figure is the median of "
        f"{config['repeats']} run(s), in seconds unless marked.",
        "",
        _markdown_table(*rows(results)),
        "",
        _markdown_table(*growth_rows(results)),
        "",
        _markdown_table(*target_rows(results)),
        "",
        f"Machine: {machine_line(results['machine'])}",
    ]
    return "\n".join(parts) + "\n"
