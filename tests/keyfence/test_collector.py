"""``batched_gc`` paces the collector for a large heap and leaves it as it was; the spec loads under it."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import keyfence.collector as collector
import keyfence.spec as spec_module
from keyfence.collector import RUN_GC_THRESHOLD, RUN_YOUNG_PER_OLDER, batched_gc
from keyfence.spec import FleetSpec, load_spec_text

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml"


def test_nested_blocks_keep_the_pace_and_restore_the_thresholds() -> None:
    before = gc.get_threshold()
    with batched_gc():
        paced = (max(before[0], RUN_GC_THRESHOLD), max(before[1], RUN_YOUNG_PER_OLDER), *before[2:])
        assert gc.get_threshold() == paced
        with batched_gc():
            assert gc.get_threshold() == paced
        assert gc.get_threshold() == paced
    assert gc.get_threshold() == before


def test_inside_a_block_only_young_collections_run_and_the_older_one_comes_at_its_end(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """However many young collections the block's allocations start, the older generation is
    collected once, at the end: the collector's work cannot step up with the heap's size."""
    monkeypatch.setattr(collector, "RUN_GC_THRESHOLD", 1_000)  # many young collections, quickly
    generations: list[int] = []

    def record(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            generations.append(info["generation"])

    gc.collect()
    gc.callbacks.append(record)
    try:
        with batched_gc():
            kept = [[] for _ in range(40_000)]  # survivors: 40 young collections' worth
            inside = list(generations)
        after = list(generations)
    finally:
        gc.callbacks.remove(record)
    assert len(kept) == 40_000
    assert inside.count(0) >= 30 and set(inside) == {0}
    assert after[len(inside) :] == [1]


def test_a_failing_block_restores_the_thresholds() -> None:
    before = gc.get_threshold()
    with pytest.raises(RuntimeError), batched_gc():
        raise RuntimeError("boom")
    assert gc.get_threshold() == before and gc.isenabled()


def test_the_spec_is_parsed_and_validated_with_the_collector_batched(monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[int] = []
    validate = spec_module.validate_spec

    def recording(data: object, source: str) -> FleetSpec:
        seen.append(gc.get_threshold()[0])
        return validate(data, source)

    monkeypatch.setattr(spec_module, "validate_spec", recording)
    before = gc.get_threshold()
    assert load_spec_text(EXAMPLE.read_text(encoding="utf-8")).subaccounts
    assert seen == [max(before[0], RUN_GC_THRESHOLD)]
    assert gc.get_threshold() == before
