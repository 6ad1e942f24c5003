"""Each stage of keyfence, timed on its own, and ``keyfence check`` end to end.

Every stage runs from a cold start of what it measures (a new Vault session, a new pack
process, a fresh SDK runtime) and is timed in ``time.perf_counter`` wall-clock seconds. The
floor and the check are whole processes, start-up included (``python -m bench.bare`` and the
``keyfence check`` command), so their ratio is the one a user sees; the stages in between run
in process, to show where the time goes. Which figure stands for a stage (the best of its
runs) and how the runs are spread over time is :mod:`bench.run`'s business.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Final, TypeVar

from keyfence.check.analyzer import PolicyPackSession
from keyfence.check.harness import Collected, RegisteredResource, collect
from keyfence.check.packconfig import reconcile_config
from keyfence.check.runner import default_policy_pack
from keyfence.check.target import DEFAULT_PROJECT, DEFAULT_STACK
from keyfence.fleet import declare
from keyfence.keys import Mode, ResolvedKey, resolve_keys
from keyfence.spec import FleetSpec, load_spec
from keyfence.vault import VaultSettings, connect

from . import bare
from .child import ROOT, TIMEOUT, child_env
from .fleet import Fleet
from .seed import BENCH_STACK

T = TypeVar("T")

FLOOR: Final = "floor"
SPEC: Final = "spec"
VAULT_METADATA: Final = "vault_metadata"
VAULT_DATA: Final = "vault_data"
LEDGER: Final = "ledger"
REGISTRATION: Final = "registration"
PACK_START: Final = "pack_start"
ANALYZE: Final = "analyze"
ANALYZE_STACK: Final = "analyze_stack"
CHECK: Final = "check"
STAGES: Final[tuple[str, ...]] = (
    FLOOR,
    SPEC,
    VAULT_METADATA,
    VAULT_DATA,
    LEDGER,
    REGISTRATION,
    PACK_START,
    ANALYZE,
    ANALYZE_STACK,
    CHECK,
)
"""Every timed stage, in the order the table shows them."""
QUICK_RUNS: Final = 3
"""Runs in each round of the stages that take seconds even at the largest size (the spec, Vault,
the ledger, the pack's three). Their figure is then the best of three times as many runs, which
steadies the growth ratios of the stages a moment's noise on the machine moves the most; the
whole-process stages and the registration, tens of seconds each, run once a round."""
QUICK_STAGES: Final = frozenset(
    {SPEC, VAULT_METADATA, VAULT_DATA, LEDGER, PACK_START, ANALYZE, ANALYZE_STACK}
)
"""The stages run :data:`QUICK_RUNS` times a round."""
PACK_STAGES: Final = (PACK_START, ANALYZE, ANALYZE_STACK)
"""Timed in one pack session each run, so they share one count of runs."""
ENGINE_ADDED: Final = 3
"""Resources the engine registers beside the program's: the root stack and the default providers
(Kubernetes, and the dynamic provider of the ledger claims)."""


def runs_of(stage: str, repeats: int) -> int:
    """How many times ``stage`` runs in ``repeats`` rounds: the one place that count is decided."""
    return repeats * QUICK_RUNS if stage in QUICK_STAGES else repeats


class BenchError(Exception):
    """The benchmark's input is not what it should be (a check that fails, a floor that differs)."""


@dataclass(frozen=True)
class Timing:
    """One stage's runs, in seconds."""

    runs: tuple[float, ...]


@contextmanager
def isolated() -> Iterator[None]:
    """Run a measurement as if in a fresh process, as far as the garbage collector goes.

    What the benchmark itself holds (earlier stages' results, the fleet, the SDK's leftovers)
    is collected, then frozen out of the collector's view for the run, so a stage is never
    charged for rescanning objects that are not its own.
    """
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def timed(action: Callable[[], T], repeats: int) -> tuple[Timing, T]:
    """Run ``action`` ``repeats`` times, each :func:`isolated`; every run's time, the last result.

    Earlier runs' results are dropped at once, so no run pays for its predecessor's memory.
    """
    if repeats < 1:
        raise ValueError("repeats must be at least 1")
    runs: list[float] = []
    for _ in range(repeats - 1):
        with isolated():
            start = time.perf_counter()
            action()
            runs.append(time.perf_counter() - start)
    with isolated():
        start = time.perf_counter()
        result = action()
        runs.append(time.perf_counter() - start)
    return Timing(tuple(runs)), result


def resource_types(resources: Sequence[RegisteredResource]) -> dict[str, int]:
    """How many resources of each type were registered (the floor's and the program's must match)."""
    return dict(sorted(Counter(r.type for r in resources).items()))


def plan_types(plan: Path) -> dict[str, int]:
    """How many resources of each type a plan file lists that the floor registers itself.

    The root stack and the default providers are left out: the floor's SDK and engine make
    those, as for any program.
    """
    items = json.loads(plan.read_text(encoding="utf-8"))["resources"]
    declared = (
        item["type"]
        for item in items
        if item["type"] != bare.ROOT_STACK and not item["type"].startswith(bare.PROVIDER_PREFIX)
    )
    return dict(sorted(Counter(declared).items()))


# --------------------------------------------------------------------------- the stages


def _whole_process(argv: list[str], settings: VaultSettings, what: str) -> None:
    """Run ``python argv`` from the checkout as its own process; raises BenchError if it fails."""
    done = subprocess.run(
        [sys.executable, *argv],
        cwd=ROOT,
        env=child_env(settings),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        raise BenchError(f"{what} failed (exit {done.returncode}):\n{tail}")


def floor(plan: Path, settings: VaultSettings) -> None:
    """The bare SDK program registering the plan's resources: a whole process, start-up included."""
    _whole_process(["-m", "bench.bare", str(plan)], settings, "the bare floor program")


def check_command(spec_path: Path, settings: VaultSettings) -> None:
    """``keyfence check --spec SPEC`` as a user runs it: a whole process, start-up included."""
    argv = ["-c", "from keyfence.cli import main; main()", "check", "--spec", str(spec_path)]
    _whole_process(argv, settings, "keyfence check")


def resolve(spec: FleetSpec, settings: VaultSettings, mode: Mode) -> list[ResolvedKey]:
    """Vault resolution as the program does it: connect, resolve every key, close."""
    with connect(settings) as client:
        return resolve_keys(spec, client, mode)


def claims(spec: FleetSpec, settings: VaultSettings, keys: list[ResolvedKey]) -> list[str]:
    """Resolve and check every key's claim in the ledger, then the verdict: one listing of the
    ledger's detailed metadata (OpenBao), and a record read per key whose mirror cannot be trusted."""
    from keyfence.vault import Ledger, conflict

    with connect(settings) as client:
        ledger = Ledger(client, spec.vault.mount, spec.vault.ledger)
        records = ledger.read_all(k.fingerprint or "" for k in keys)
    problems = []
    for key, record in zip(keys, records, strict=True):
        if isinstance(record, Exception):
            problems.append(f"{key.vault_ref}: {record}")
            continue
        verdict = conflict(record, key.mount, key.path, BENCH_STACK)
        if record is None or verdict is not None:
            problems.append(f"{key.vault_ref}: {verdict or 'no ledger record'}")
    return problems


def register(spec: FleetSpec, keys: list[ResolvedKey]) -> Collected:
    """The program's declarations under the mocks, keys already resolved (no spec load, no Vault).

    As ``keyfence.program.main`` does, the registrations are awaited by the fleet itself.
    """
    return collect(lambda: declare(spec, keys).registered(), project=DEFAULT_PROJECT, stack=DEFAULT_STACK)


@dataclass(frozen=True)
class PackTimings:
    """Starting and configuring the pack, its Analyze calls, and its AnalyzeStack call."""

    start: Timing
    analyze: Timing
    analyze_stack: Timing
    violations: int


def analyse(
    resources: Sequence[RegisteredResource], repeats: int, pack_dir: Path | None = None
) -> PackTimings:
    """Start the real pack process, then every Analyze call, then AnalyzeStack: each timed apart."""
    directory = pack_dir or default_policy_pack()
    starts: list[float] = []
    analyses: list[float] = []
    stack_analyses: list[float] = []
    violations = 0
    for _ in range(repeats):
        with isolated():
            began = time.perf_counter()
            with PolicyPackSession(directory, project=DEFAULT_PROJECT, stack=DEFAULT_STACK) as session:
                info, policies, initial = session.get_info()
                session.configure(reconcile_config(policies, initial, []))
                started = time.perf_counter()
                found = session.analyze_resources(resources, info.name or session.name)
                stacked = time.perf_counter()
                found += session.analyze_stack(resources, info.name or session.name)
                stack_analyses.append(time.perf_counter() - stacked)
                analyses.append(stacked - started)
                starts.append(started - began)
        violations = max(violations, len(found))
    return PackTimings(
        Timing(tuple(starts)), Timing(tuple(analyses)), Timing(tuple(stack_analyses)), violations
    )


# --------------------------------------------------------------------------- one size


@dataclass(frozen=True)
class SizeFigures:
    """Everything measured for one fleet size."""

    processes: int
    subaccounts: int
    resources: int
    timings: dict[str, Timing]
    program_types: dict[str, int]
    floor_types: dict[str, int]


def _program_stages(
    spec: FleetSpec, settings: VaultSettings, repeats: int, timings: dict[str, Timing]
) -> Collected:
    """Vault (both modes), the ledger and registration; returns what the program declared.

    The registration is the check's: the program with check-mode keys (Vault metadata, no
    key material), which is what the pack then analyses.
    """
    timings[VAULT_METADATA], check_keys = timed(
        lambda: resolve(spec, settings, "check"), runs_of(VAULT_METADATA, repeats)
    )
    timings[VAULT_DATA], _ = timed(lambda: resolve(spec, settings, "deploy"), runs_of(VAULT_DATA, repeats))
    timings[LEDGER], unclaimed = timed(lambda: claims(spec, settings, check_keys), runs_of(LEDGER, repeats))
    if unclaimed:
        raise BenchError(f"{len(unclaimed)} key(s) not claimed by the benchmark's stack: {unclaimed[0]}")
    timings[REGISTRATION], declared = timed(
        lambda: register(spec, check_keys), runs_of(REGISTRATION, repeats)
    )
    return declared


def measure(fleet: Fleet, spec_path: Path, plan: Path, settings: VaultSettings, repeats: int) -> SizeFigures:
    """Time every stage on one seeded fleet whose plan is written (:mod:`bench.plan`).

    Raises BenchError if the pack finds a violation or the check command fails: the benchmark
    must time a passing check. That the check finds nothing at all, and analyses exactly what
    the program declared, is asserted from its in-process run (:mod:`bench.memory`).
    """
    timings: dict[str, Timing] = {}
    floor_types = plan_types(plan)
    timings[FLOOR], _ = timed(lambda: floor(plan, settings), runs_of(FLOOR, repeats))

    timings[SPEC], spec = timed(lambda: load_spec(spec_path), runs_of(SPEC, repeats))
    checked = _program_stages(spec, settings, repeats, timings).resources
    program_types = resource_types(checked)
    pack = analyse(checked, runs_of(PACK_START, repeats))
    timings[PACK_START], timings[ANALYZE] = pack.start, pack.analyze
    timings[ANALYZE_STACK] = pack.analyze_stack
    resources = len(checked)
    del checked
    if pack.violations:
        raise BenchError(
            f"the {len(fleet.processes)}-process fleet is not clean: the pack found {pack.violations} "
            "violation(s); the benchmark must time a passing check"
        )

    timings[CHECK], _ = timed(lambda: check_command(spec_path, settings), runs_of(CHECK, repeats))
    return SizeFigures(
        processes=len(fleet.processes),
        subaccounts=len(fleet.subaccounts),
        resources=resources,
        timings={name: timings[name] for name in STAGES},
        program_types=program_types,
        floor_types=floor_types,
    )
