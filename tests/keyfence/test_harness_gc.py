"""``collect`` batches garbage collection while a program runs, and leaves the collector as it was."""

from __future__ import annotations

import gc

import pulumi
import pytest

from keyfence.check.harness import collect
from keyfence.collector import RUN_GC_THRESHOLD, RUN_YOUNG_PER_OLDER


def test_thresholds_are_raised_during_the_run_and_restored_after_it() -> None:
    seen: list[tuple[int, int, int]] = []

    def program() -> None:
        seen.append(gc.get_threshold())
        pulumi.export("answer", 42)

    before = gc.get_threshold()
    collected = collect(program)
    assert collected.stack_outputs == {"answer": 42}
    assert seen == [(max(before[0], RUN_GC_THRESHOLD), max(before[1], RUN_YOUNG_PER_OLDER), *before[2:])]
    assert gc.get_threshold() == before


def test_thresholds_are_restored_when_the_program_fails() -> None:
    def program() -> None:
        raise RuntimeError("the program fails")

    before = gc.get_threshold()
    with pytest.raises(RuntimeError, match="the program fails"):
        collect(program)
    assert gc.get_threshold() == before and gc.isenabled()


def test_a_disabled_collector_stays_disabled() -> None:
    gc.disable()
    try:
        collect(lambda: None)
        assert not gc.isenabled()
    finally:
        gc.enable()
