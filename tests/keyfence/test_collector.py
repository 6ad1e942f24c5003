"""``batched_gc`` paces the collector for a large heap and leaves it as it was; the spec loads under it."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest

import keyfence.spec as spec_module
from keyfence.collector import RUN_GC_THRESHOLD, batched_gc
from keyfence.spec import FleetSpec, load_spec_text

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet.yaml"


def test_nested_blocks_keep_the_pace_and_restore_the_thresholds() -> None:
    before = gc.get_threshold()
    with batched_gc():
        assert gc.get_threshold() == (max(before[0], RUN_GC_THRESHOLD), *before[1:])
        with batched_gc():
            assert gc.get_threshold()[0] == max(before[0], RUN_GC_THRESHOLD)
        assert gc.get_threshold()[0] == max(before[0], RUN_GC_THRESHOLD)
    assert gc.get_threshold() == before


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
