"""Peak memory of ``keyfence check`` and of its policy pack, and the check's GC time, in a process of its own.

An in-process figure would include whatever the benchmark itself holds, so the check runs
in a fresh interpreter, as the command does. The check's peak resident set is its own
``ru_maxrss``. The pack's is read from ``/proc/<pid>/status`` (``VmHWM``) just before the
check stops the pack: ``RUSAGE_CHILDREN`` would not do, since a child inherits its parent's
high-water mark across ``fork`` and would report the check's peak, not its own. The time the
cyclic garbage collector spends in the check process is summed from ``gc.callbacks``.
The program runs in a child process of the check (``check.programrun``); it exits by itself, so
its peak is the ``ru_maxrss`` that ``wait4`` returns for it. A spawned child starts from its
parent's high-water mark, so that figure is an upper bound, exact whenever the program grows
past the check's own resident set at the time it was spawned (it does, from small fleets up).
Run as a module, this file is that child: ``python -m bench.memory SPEC`` with
``VAULT_ADDR``/``VAULT_TOKEN`` set.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keyfence.vault import VaultSettings

from .child import run_child


@dataclass(frozen=True)
class MemoryFigures:
    """Peak resident memory in MiB, the check's wall time and GC time in that fresh process."""

    check_mb: float
    pack_mb: float | None
    """``None`` where ``/proc`` cannot tell (not Linux)."""
    program_mb: float | None
    """The program's process (see the module's docstring); ``None`` if it was not reaped here."""
    seconds: float
    """``run_check`` alone, imports excluded: comparable with the in-process figure."""
    gc_s: float
    """Seconds the cyclic garbage collector ran in the check process during ``run_check``."""
    findings: int
    """Findings of any level the check reported: the benchmark times a clean check only."""
    resources: int
    """Resources the check analysed, the engine's own included."""


def _mb(maxrss: int) -> float:
    # Linux reports kilobytes, macOS bytes.
    return maxrss / (1024 * 1024) if sys.platform == "darwin" else maxrss / 1024


def _self_peak_mb() -> float:
    return _mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


class _ReapedPeaks:
    """Replaces ``os.waitpid`` (which ``subprocess`` calls) with ``os.wait4``, keeping each child's peak."""

    def __init__(self) -> None:
        self.by_pid: dict[int, float] = {}
        self._waitpid = os.waitpid

    def __call__(self, pid: int, options: int) -> tuple[int, int]:
        reaped, status, usage = os.wait4(pid, options)
        if reaped:
            self.by_pid[reaped] = _mb(usage.ru_maxrss)
        return reaped, status

    def __enter__(self) -> _ReapedPeaks:
        os.waitpid = self
        return self

    def __exit__(self, *exc: object) -> None:
        os.waitpid = self._waitpid


def peak_of(pid: int) -> float | None:
    """A live process's peak resident set in MiB (``VmHWM``), or ``None`` if unreadable."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def measure(spec_path: Path, settings: VaultSettings) -> MemoryFigures:
    """Run the check on ``spec_path`` in a fresh interpreter and read its peak memory."""
    data = run_child("bench.memory", [str(spec_path)], settings)
    pack, program = data["pack_mb"], data.get("program_mb")
    return MemoryFigures(
        float(data["check_mb"]),
        float(pack) if pack is not None else None,
        float(program) if program is not None else None,
        float(data["seconds"]),
        float(data["gc_s"]),
        int(data["findings"]),
        int(data["resources"]),
    )


class _GcClock:
    """Sums the wall time of every collection while installed in ``gc.callbacks``."""

    def __init__(self) -> None:
        self.total = 0.0
        self._began = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.total += time.perf_counter() - self._began


def main(argv: list[str]) -> int:
    """The child: one check, then its figures as one JSON line on stdout."""
    from keyfence.check.analyzer import PolicyPackSession
    from keyfence.check.runner import run_check

    if len(argv) != 1:
        print("usage: python -m bench.memory SPEC", file=sys.stderr)
        return 2
    pack_peaks: list[float] = []
    pack_pids: set[int] = set()
    close = PolicyPackSession.close

    def close_reading_peak(self: PolicyPackSession) -> None:
        process = self.process
        if process is not None:
            pack_pids.add(process.pid)
        if process is not None and process.poll() is None:
            peak = peak_of(process.pid)
            if peak is not None:
                pack_peaks.append(peak)
        close(self)

    PolicyPackSession.close = close_reading_peak  # type: ignore[method-assign]
    clock = _GcClock()
    gc.callbacks.append(clock)
    started = time.perf_counter()
    try:
        with _ReapedPeaks() as reaped:
            result = run_check(argv[0], offline=False, vault_settings=VaultSettings.from_env())
    finally:
        seconds = time.perf_counter() - started
        gc.callbacks.remove(clock)
        PolicyPackSession.close = close  # type: ignore[method-assign]
    if not result.ok:
        print(f"the check found {len(result.mandatory)} mandatory violation(s)", file=sys.stderr)
        return 1
    figures = {
        "check_mb": _self_peak_mb(),
        "pack_mb": max(pack_peaks) if pack_peaks else None,
        "program_mb": max((mb for pid, mb in reaped.by_pid.items() if pid not in pack_pids), default=None),
        "seconds": seconds,
        "gc_s": clock.total,
        "findings": len(result.findings),
        "resources": result.resource_count,
    }
    print(json.dumps(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
