"""``make bench``'s code, run for real at a small size: every figure present and consistent.

No timing is asserted (that is what the benchmark reports, not what a test can promise on a
shared machine); what is asserted is that the benchmark measures what it says: a valid
fleet, a floor that declares exactly what the program declares, a clean check, and ratios
and targets computed from the figures shown.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from keyfence_policies import permissions as perms
from rich.console import Console

from bench import bare, report
from bench.fleet import Fleet, generate
from bench.memory import MemoryFigures
from bench.plan import plan_of
from bench.run import BenchConfig, combine, finish, schedule, stage_figure
from bench.seed import seed
from bench.stages import PACK_STAGES, QUICK_RUNS, QUICK_STAGES, STAGES, BenchError, runs_of
from keyfence.check.harness import Collected, collect
from keyfence.check.runner import collect_program
from keyfence.spec import load_spec
from keyfence.vault import VaultSettings
from tests.openbao import OpenBao

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- the fleet


def test_fleet_is_a_valid_spec_with_every_role_venue_and_a_master(tmp_path: Path) -> None:
    fleet = generate(40, 4)
    spec = load_spec(fleet.write_spec(tmp_path))
    entries = spec.entries()
    assert len(entries) == 40 and len(spec.subaccounts) == 4
    assert {e.process.role for e in entries} == set(perms.ROLES)
    assert {s.venue for s in spec.subaccounts} == {"spot", "futures"}
    assert [s.name for s in spec.subaccounts if s.master] == ["main"]
    assert all(s.institutional for s in spec.subaccounts if s.venue == "spot" and not s.master)
    assert sum(e.process.allow_withdrawals for e in entries) == 1
    assert [e.key_path for e in entries] == [p.key_path for p in _in_spec_order(fleet)]


def test_fleet_is_deterministic_and_every_key_is_distinct() -> None:
    first, again = generate(30, 3), generate(30, 3)
    assert first.spec_yaml() == again.spec_yaml()
    assert [p.material for p in first.processes] == [p.material for p in again.processes]
    assert len({p.material.fingerprint for p in first.processes}) == 30
    assert generate(30, 3, prefix="other").processes[0].material != first.processes[0].material


def _in_spec_order(fleet: Fleet) -> list[Any]:
    return [p for sub in fleet.subaccounts for p in fleet.by_subaccount()[sub.name]]


# --------------------------------------------------------------------------- the floor


def _declared(collected: Collected) -> dict[str, Any]:
    """What a program declares, less what the engine adds (root stack, default providers)."""
    return {
        r.urn: (
            r.type,
            r.name,
            r.parent,
            r.custom,
            {k: v for k, v in r.inputs().items() if k != "__provider"},
            sorted(r.dependencies),
        )
        for r in collected.resources
        if r.type != bare.ROOT_STACK and not r.type.startswith(bare.PROVIDER_PREFIX)
    }


@pytest.mark.vault
def test_the_bare_floor_registers_exactly_what_the_check_declares(
    openbao: OpenBao, vault_prefix: str, tmp_path: Path
) -> None:
    """Same types, names, parents, inputs and dependencies: the floor differs only in how it gets there."""
    settings = VaultSettings(addr=openbao.addr, token=openbao.root_token)
    fleet = generate(12, 3, prefix=vault_prefix)
    seed(settings.addr, settings.token or "", fleet)
    spec = fleet.write_spec(tmp_path)
    program = collect_program(
        str(spec), mode="check", stack="dev", project="keyfence", vault_settings=settings
    )
    plan = json.loads(json.dumps(plan_of(program)))
    floor = collect(lambda: bare.program(plan), project="keyfence", stack="dev")
    assert _declared(floor) == _declared(program)
    assert floor.stack_outputs.keys() == program.stack_outputs.keys()
    secrets = [r for r in floor.resources if r.type == "kubernetes:core/v1:Secret"]
    assert secrets and all("[secret]" in json.dumps(r.inputs()) for r in secrets)

    # As its own process, the floor imports nothing of keyfence.
    path = tmp_path / "plan.json"
    path.write_text(json.dumps(plan), encoding="utf-8")
    probe = (
        "import sys, bench.bare as b; b.main([sys.argv[1]]); "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('keyfence', 'keyfence_policies')))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe, str(path)], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


# --------------------------------------------------------------------------- figures and targets


def _figures(floor: float, check: float, processes: int) -> dict[str, Any]:
    stages = {name: stage_figure([1.0]) for name in STAGES}
    stages["floor"] = stage_figure([floor, floor * 1.5])
    stages["check"] = stage_figure([check * 3, check])
    stages["analyze_stack"] = stage_figure([4.0])
    return {
        "processes": processes,
        "stages": stages,
        "memory": {"check_mb": 899.0, "pack_mb": 100.0, "seconds": check, "gc_s": check / 10},
        "ratios": report.size_ratios(stages),
    }


def test_targets_are_judged_at_the_reference_size_with_the_issues_comparisons() -> None:
    sizes = [_figures(2, 2.3, 1000), _figures(4, 5.2, 2000), _figures(8, 11.6, 4000)]
    results = finish(BenchConfig(sizes=(1000, 2000, 4000), repeats=1), sizes)
    by_name = {t["name"]: t for t in results["targets"]}
    assert by_name["check / floor at 1000"]["figure"] == pytest.approx(1.15)
    assert by_name["check / floor at 1000"]["status"] == "PASS"  # at most 1.15
    assert by_name["AnalyzeStack of 4000 processes"]["status"] == "MISS"  # under 4 s: 4.0 is not
    assert by_name["peak memory of the 4000-process check"]["status"] == "PASS"
    assert by_name["time(2000) / time(1000): floor"]["figure"] == pytest.approx(2.0)
    assert by_name["time(2000) / time(1000): check"]["figure"] == pytest.approx(5.2 / 2.3)
    assert by_name["time(2000) / time(1000): check"]["status"] == "MISS"
    assert by_name["time(4000) / time(2000): gc"]["figure"] == pytest.approx(11.6 / 5.2)
    assert by_name["time(4000) / time(2000): gc"]["status"] == "MISS"
    elsewhere = finish(BenchConfig(sizes=(5, 10), repeats=1), [_figures(2, 2.6, 5), _figures(4, 5.8, 10)])
    assert {t["status"] for t in elsewhere["targets"]} == {"n/a"}


def test_one_size_prints_no_empty_growth_table() -> None:
    results = finish(BenchConfig(sizes=(1000,), repeats=1), [{**_figures(2, 2.3, 1000), "resources": 6060}])
    assert results["growth"] == []
    text = report.markdown(results)
    assert "No growth figures: one size was run." in text
    assert "| stage |" not in text, "a growth table without a single column"
    console = Console(record=True, width=100)
    report.print_tables(results, console)
    assert "growth between sizes (linear is the size ratio): none, one size was run" in console.export_text()


def test_a_zero_floor_gives_no_ratio_rather_than_a_crash() -> None:
    assert report.size_ratios(_figures(0.0, 1.0, 5)["stages"])["check_over_floor"] is None


# --------------------------------------------------------------------------- rounds


def test_rounds_alternate_the_order_of_sizes() -> None:
    assert schedule((4000, 1000, 2000), 3) == [
        (0, 1000), (0, 2000), (0, 4000),
        (1, 4000), (1, 2000), (1, 1000),
        (2, 1000), (2, 2000), (2, 4000),
    ]  # fmt: skip
    assert schedule((10,), 2) == [(0, 10), (1, 10)]


def _worker(runs: dict[str, float], resources: int = 60) -> dict[str, Any]:
    types = {"program": {"kubernetes:apps/v1:Deployment": resources}, "floor": {"x": resources}}
    return {
        "processes": 10,
        "subaccounts": 2,
        "resources": resources,
        "resource_types": types,
        "stages": {name: {"runs_s": [runs.get(name, 1.0)]} for name in STAGES},
    }


def _memory(check_mb: float, gc_s: float, *, findings: int = 0, resources: int = 63) -> MemoryFigures:
    return MemoryFigures(check_mb, check_mb / 2, None, gc_s * 10, gc_s, findings, resources)


def test_a_sizes_figures_are_its_best_times_and_its_worst_peak_memory() -> None:
    rounds = [_worker({"floor": 9.0, "check": 2.0}), _worker({"floor": 3.0, "check": 5.0}), _worker({})]
    figures = combine(rounds, [_memory(300, 0.4), _memory(350, 0.2), _memory(320, 0.3)], seed_s=1.5)
    assert figures["stages"]["floor"] == {"best_s": 1.0, "median_s": 3.0, "runs_s": [9.0, 3.0, 1.0]}
    assert figures["stages"]["check"]["best_s"] == 1.0 and figures["stages"]["check"]["runs_s"] == [
        2.0,
        5.0,
        1.0,
    ]
    memory = figures["memory"]
    assert (memory["check_mb"], memory["pack_mb"], memory["program_mb"]) == (350, 175, None)
    assert (memory["gc_s"], memory["seconds"]) == (0.2, 2.0)
    assert [m["check_mb"] for m in memory["runs"]] == [300, 350, 320]
    assert figures["seed_s"] == 1.5 and figures["resources"] == 60
    assert figures["ratios"]["check_over_floor"] == pytest.approx(1.0)


def test_a_size_whose_rounds_or_check_disagree_is_refused() -> None:
    with pytest.raises(BenchError, match="different resources across rounds"):
        combine([_worker({}), _worker({}, resources=61)], [_memory(1, 1)] * 2, seed_s=0)
    with pytest.raises(BenchError, match="the check reported 2 finding"):
        combine([_worker({})], [_memory(1, 1, findings=2)], seed_s=0)
    with pytest.raises(BenchError, match="analysed 64 resources, the program declared 60"):
        combine([_worker({})], [_memory(1, 1, resources=64)], seed_s=0)


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.vault
def test_the_pack_stages_share_one_count_and_the_rest_run_once_a_round() -> None:
    # The pack's three stages are timed in one session per run: a count for one is a count for all.
    assert len({runs_of(stage, 2) for stage in PACK_STAGES}) == 1
    for stage in STAGES:
        assert runs_of(stage, 2) == (2 * QUICK_RUNS if stage in QUICK_STAGES else 2)


def test_python_m_bench_runs_end_to_end_on_a_real_openbao(tmp_path: Path) -> None:
    out, md = tmp_path / "figures" / "bench.json", tmp_path / "bench.md"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "KEYFENCE_VAULT_"))}
    argv = [
        "--out",
        str(out),
        "--sizes",
        "20,10",
        "--subaccounts",
        "2",
        "--repeats",
        "1",
        "--markdown",
        str(md),
    ]
    done = subprocess.run(
        [sys.executable, "-m", "bench", *argv],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    results = json.loads(out.read_text())

    assert results["config"] == {
        "sizes": [10, 20],
        "subaccounts": 2,
        "repeats": 1,
        "quick_runs": QUICK_RUNS,
        "reference": 1000,
    }
    assert {"cpu", "cores", "python", "packages", "date"} <= set(results["machine"])
    assert results["machine"]["packages"]["pulumi"]
    sizes = results["sizes"]
    assert [s["processes"] for s in sizes] == [10, 20], "sizes run in increasing order"
    for size in sizes:
        assert list(size["stages"]) == list(STAGES)
        for name in STAGES:
            figure = size["stages"][name]
            assert len(figure["runs_s"]) == (QUICK_RUNS if name in QUICK_STAGES else 1)
            assert figure["best_s"] == min(figure["runs_s"]) > 0
            assert figure["median_s"] == statistics.median(figure["runs_s"])
        memory = size["memory"]
        assert len(memory["runs"]) == 1 and memory["runs"][0]["findings"] == 0
        assert memory["check_mb"] > 0 and memory["seconds"] > 0 and memory["gc_s"] >= 0
        # The pack's own peak, read from /proc: far below the check's, never inherited from it.
        assert 0 < memory["pack_mb"] < memory["check_mb"]
        # The program's process was reaped and measured apart from the pack.
        assert memory["program_mb"] is not None and memory["program_mb"] > 0
        types = size["resource_types"]
        assert types["floor"] == types["program"], "the floor registers what the program registers"
        assert sum(types["program"].values()) == size["resources"]
        assert types["program"]["kubernetes:apps/v1:Deployment"] == size["processes"]
        stages = size["stages"]
        assert size["ratios"]["check_over_floor"] == pytest.approx(
            stages["check"]["best_s"] / stages["floor"]["best_s"]
        )
    [step] = results["growth"]
    assert (step["from"], step["to"], step["size_ratio"]) == (10, 20, 2.0)
    for name in STAGES:
        assert step["stages"][name] == pytest.approx(
            sizes[1]["stages"][name]["best_s"] / sizes[0]["stages"][name]["best_s"]
        )
    assert step["stages"]["gc"] == pytest.approx(sizes[1]["memory"]["gc_s"] / sizes[0]["memory"]["gc_s"])
    assert {t["status"] for t in results["targets"]} == {"n/a"}, "targets are stated for 1000-4000 processes"
    assert len(results["targets"]) == 6 + 2 * (len(STAGES) + 1)

    table = done.stdout
    assert "keyfence check end to end" in table and "check / floor" in table and "targets" in table
    text = md.read_text()
    assert text.count("| keyfence check end to end (whole process) (s) |") == 1 and "Machine:" in text
    # The table is what README.md and bench/RESULTS.md paste: it opens with its sentence, and no
    # stray repr (such as a function's signature) is ever printed or written before it.
    assert text.startswith("Fleets across ")
    for output in (text, table):
        assert not re.search(r"^\(.*\) -> ", output, re.M)
