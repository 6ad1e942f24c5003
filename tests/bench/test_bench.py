"""``make bench``'s code, run for real at a small size: every figure present and consistent.

No timing is asserted (that is what the benchmark reports, not what a test can promise on a
shared machine); what is asserted is that the benchmark measures what it says: a valid
fleet, a floor that declares exactly what the program declares, a clean check, and ratios
and targets computed from the figures shown.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from keyfence_policies import permissions as perms

from bench import report
from bench.fleet import Fleet, generate
from bench.floor import KEY_VERSION, run_floor
from bench.run import BenchConfig, finish
from bench.stages import STAGES, register, resource_types
from keyfence.keys import ResolvedKey
from keyfence.spec import load_spec

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


def _deploy_keys(fleet: Fleet, spec_path: Path) -> tuple[Any, list[ResolvedKey]]:
    """The keys as deploy mode resolves them from the seeded Vault: version 1, material, metadata."""
    spec = load_spec(spec_path)
    by_ref = {p.ref: p for p in fleet.processes}
    keys = [
        ResolvedKey(
            entry=entry,
            mount=spec.vault.mount,
            path=entry.key_path,
            version=KEY_VERSION,
            fingerprint=by_ref[entry.ref].material.fingerprint,
            identity_source="material",
            permissions=by_ref[entry.ref].permissions,
            metadata_subaccount=entry.subaccount.name,
            metadata_venue=entry.subaccount.venue,
            material=by_ref[entry.ref].material,
            ledger=spec.vault.ledger,
        )
        for entry in spec.entries()
    ]
    return spec, keys


def test_floor_declares_exactly_what_the_program_declares(tmp_path: Path) -> None:
    """Same types, names, parents and inputs: the floor differs from the program only in how it gets there."""
    fleet = generate(12, 3)
    spec, keys = _deploy_keys(fleet, fleet.write_spec(tmp_path))
    program = register(spec, keys)
    floor = run_floor(fleet)
    assert resource_types(floor.resources) == resource_types(program.resources)

    def declared(collected: Any) -> dict[str, Any]:
        # A claim's serialized dynamic provider differs by construction (the floor has its own, inert one).
        return {
            r.urn: (
                r.type,
                r.name,
                r.parent,
                r.custom,
                {k: v for k, v in r.inputs().items() if k != "__provider"},
            )
            for r in collected.resources
        }

    assert declared(floor) == declared(program)
    assert floor.stack_outputs.keys() == program.stack_outputs.keys()


# --------------------------------------------------------------------------- figures and targets


def _figures(floor: float, check: float, processes: int) -> dict[str, Any]:
    stages = {name: {"median_s": 1.0, "runs_s": [1.0]} for name in STAGES}
    stages["floor"] = {"median_s": floor, "runs_s": [floor]}
    stages["check"] = {"median_s": check, "runs_s": [check]}
    stages["analysis"] = {"median_s": 3.0, "runs_s": [3.0]}
    return {
        "processes": processes,
        "stages": stages,
        "memory": {"check_mb": 599.0, "pack_mb": 100.0, "seconds": check},
        "ratios": report.size_ratios(stages),
    }


def test_targets_are_judged_at_the_reference_size_with_the_issues_comparisons() -> None:
    results = finish(
        BenchConfig(sizes=(5, 10), repeats=1, reference=5), [_figures(2, 2.6, 5), _figures(4, 5.8, 10)]
    )
    by_name = {t["name"]: t for t in results["targets"]}
    assert by_name["check / floor at 5"]["figure"] == pytest.approx(1.3)
    assert by_name["check / floor at 5"]["status"] == "PASS"  # at most 1.3
    assert by_name["policy analysis of 5 processes"]["status"] == "MISS"  # under 3 s: 3.0 is not
    assert by_name["peak memory of the 5-process check"]["status"] == "PASS"
    assert by_name["time(10) / time(5): floor"]["figure"] == pytest.approx(2.0)
    assert by_name["time(10) / time(5): check"]["figure"] == pytest.approx(5.8 / 2.6)
    assert by_name["time(10) / time(5): check"]["status"] == "MISS"
    elsewhere = finish(BenchConfig(sizes=(5, 10), repeats=1, reference=1000), results["sizes"])
    assert {t["status"] for t in elsewhere["targets"]} == {"n/a"}


def test_a_zero_floor_gives_no_ratio_rather_than_a_crash() -> None:
    assert report.size_ratios(_figures(0.0, 1.0, 5)["stages"])["check_over_floor"] is None


# --------------------------------------------------------------------------- end to end


@pytest.mark.slow
@pytest.mark.vault
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

    assert results["config"] == {"sizes": [10, 20], "subaccounts": 2, "repeats": 1, "reference": 1000}
    assert {"cpu", "cores", "python", "packages", "date"} <= set(results["machine"])
    assert results["machine"]["packages"]["pulumi"]
    sizes = results["sizes"]
    assert [s["processes"] for s in sizes] == [10, 20], "sizes run in increasing order"
    for size in sizes:
        assert list(size["stages"]) == list(STAGES)
        for name in STAGES:
            figure = size["stages"][name]
            assert len(figure["runs_s"]) == 1 and figure["median_s"] == figure["runs_s"][0] > 0
        assert (
            size["memory"]["check_mb"] > 0 and size["memory"]["pack_mb"] > 0 and size["memory"]["seconds"] > 0
        )
        types = size["resource_types"]
        assert types["floor"] == types["program"], "the floor registers what the program registers"
        assert sum(types["program"].values()) == size["resources"]
        assert types["program"]["kubernetes:apps/v1:Deployment"] == size["processes"]
        stages = size["stages"]
        assert size["ratios"]["check_over_floor"] == pytest.approx(
            stages["check"]["median_s"] / stages["floor"]["median_s"]
        )
        assert size["ratios"]["registration_over_floor"] == pytest.approx(
            stages["registration"]["median_s"] / stages["floor"]["median_s"]
        )
    [step] = results["growth"]
    assert (step["from"], step["to"], step["size_ratio"]) == (10, 20, 2.0)
    for name in STAGES:
        assert step["stages"][name] == pytest.approx(
            sizes[1]["stages"][name]["median_s"] / sizes[0]["stages"][name]["median_s"]
        )
    assert {t["status"] for t in results["targets"]} == {"n/a"}, "targets are stated for 1000 processes"
    assert len(results["targets"]) == 6 + len(STAGES)

    table = done.stdout
    assert "keyfence check end to end" in table and "check / floor" in table and "targets" in table
    text = md.read_text()
    assert text.count("| keyfence check end to end (s) |") == 1 and "Machine:" in text
