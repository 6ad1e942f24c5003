"""The garbage collector's pace while keyfence builds a large heap: a spec, a program's run.

CPython starts a young collection every 700 net allocations, an older one (everything that
survived a young one since) every tenth young one, and, as the survivors pile up, full ones
that rescan everything kept so far. Building a heap of millions of objects at that pace costs
more than linear time, and in steps: the 2000-process spec's load met one full collection and
the 4000-process one three; a 2000-process check met one older collection in the middle of its
run, a 1000-process one none. Batching keeps the collector's work linear in the heap built.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

RUN_GC_THRESHOLD: Final = 500_000
"""Allocations between young garbage collections inside :func:`batched_gc` (CPython's default is 700)."""
RUN_YOUNG_PER_OLDER: Final = 1_000_000
"""Young collections between two older ones inside :func:`batched_gc` (CPython's default is 10):
so many that the block's own final collection is the only older one."""


@contextmanager
def batched_gc() -> Iterator[None]:
    """Collect cyclic garbage in a few large batches instead of thousands of small ones.

    The SDK keeps every pending Output and task alive and makes reference cycles per
    resource, and a spec's parse builds a node tree per value, so with CPython's default
    thresholds the collector rescans a growing heap over and over. Inside the block a young
    collection runs every ``RUN_GC_THRESHOLD`` net allocations, and the older generation is
    collected once, at the end: each object is then scanned by one young collection and one
    older one, so the collector's time is linear in the objects made, with no step where a
    larger heap happens to cross one more threshold. The price: cyclic garbage that outlives
    a young collection waits for the block's end (the check's peak memory is in ``make
    bench``). Thresholds are process-wide: nesting is harmless (the inner block keeps the
    outer's pace), threads share the pace.
    """
    previous = gc.get_threshold()
    gc.set_threshold(
        max(previous[0], RUN_GC_THRESHOLD), max(previous[1], RUN_YOUNG_PER_OLDER), *previous[2:]
    )
    try:
        yield
    finally:
        # Collect before restoring the thresholds: the other way round, the first allocation
        # would start a young collection of the same objects first.
        if gc.isenabled():
            gc.collect(1)
        gc.set_threshold(*previous)
