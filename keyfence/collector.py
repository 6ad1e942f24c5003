"""The garbage collector's pace while keyfence builds a large heap: a spec, a program's run.

CPython starts a young collection every 700 net allocations and, as the survivors pile up,
full collections that rescan everything kept so far (a full one runs once a quarter more
objects than at the last one have survived). Building a heap of millions of objects at that
pace costs more than linear time, in steps: the 2000-process spec's load met one full
collection and the 4000-process one three. Batching keeps the collector's work linear.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Final

RUN_GC_THRESHOLD: Final = 500_000
"""Allocations between young garbage collections inside :func:`batched_gc` (CPython's default is 700)."""


@contextmanager
def batched_gc() -> Iterator[None]:
    """Collect cyclic garbage in a few large batches instead of thousands of small ones.

    The SDK keeps every pending Output and task alive and makes reference cycles per
    resource, and a spec's parse builds a node tree per value, so with CPython's default
    thresholds the collector rescans a growing heap over and over. Large young-generation
    batches keep collection linear and memory bounded (at most ``RUN_GC_THRESHOLD``
    uncollected objects); the final collection returns the block's garbage before the caller
    goes on. Thresholds are process-wide: nesting is harmless (the inner block keeps the
    outer's pace), threads share the pace.
    """
    previous = gc.get_threshold()
    gc.set_threshold(max(previous[0], RUN_GC_THRESHOLD), *previous[1:])
    try:
        yield
    finally:
        # Collect before restoring the thresholds: the other way round, the first allocation
        # would start a young collection of the same objects first.
        if gc.isenabled():
            gc.collect(1)
        gc.set_threshold(*previous)
