"""What a keyfence policy is, independent of the Pulumi policy SDK.

A :class:`Rule` is a name, a description, an enforcement level and a ``check``
function from the stack index to :class:`Finding` objects. Keeping the SDK out of
the rules lets the pack, the tests and any other harness run the same code; only
``pack.py`` turns rules into ``StackValidationPolicy`` objects.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Final, Literal

from .config import PackConfig
from .workloads import StackIndex, Workload

Level = Literal["mandatory", "advisory"]

MAX_NAMED: Final = 5
"""How many other resources one message names before it says "and N more"; bounds message size."""


@dataclass(frozen=True)
class Finding:
    """One violation: what is wrong and what to do, and the URN of the offending resource."""

    message: str
    urn: str | None


Check = Callable[[StackIndex, PackConfig], Iterable[Finding]]


@dataclass(frozen=True)
class Rule:
    """A policy of the pack, as data."""

    name: str
    description: str
    level: Level
    check: Check
    remediation: str
    flags: tuple[str, ...] = ()
    """Boolean config options (``config.FLAG_DESCRIPTIONS``) this policy declares besides the shared ones."""


def named(ref: str, urn: str | None) -> str:
    """``Deployment alpha/maker (urn:pulumi:...)``: a resource people can find in both worlds."""
    return f"{ref} ({urn})" if urn else ref


def enumerate_named(items: list[str], total: int) -> str:
    """Join already-capped names, saying how many more there are."""
    text = ", ".join(items)
    if total > len(items):
        text += f" and {total - len(items)} more"
    return text


def cannot_evaluate(workload: Workload, policy: str) -> Finding | None:
    """The fail-closed finding for a workload some of whose fields could not be read."""
    if not workload.problems:
        return None
    problems = workload.problems.as_list()
    shown = "; ".join(problems[:MAX_NAMED])
    if len(problems) > MAX_NAMED:
        shown += f"; and {len(problems) - MAX_NAMED} more"
    return Finding(
        f"{workload.ref}: cannot evaluate {policy}: {shown}. The check fails closed: give these fields "
        "plain values of the Kubernetes types (not values computed during preview).",
        workload.urn,
    )


def in_scope(index: StackIndex) -> Iterator[Workload]:
    """Workloads every policy must look at: key-bearing ones, and those that may be."""
    return (w for w in index.workloads if w.in_scope)


def each_key_bearing(
    index: StackIndex, policy: str, findings: Callable[[Workload], Iterable[Finding]]
) -> Iterator[Finding]:
    """``findings`` of each key-bearing workload, plus a fail-closed finding for each we could not read."""
    for workload in in_scope(index):
        if workload.key_bearing:
            yield from findings(workload)
        problem = cannot_evaluate(workload, policy)
        if problem is not None:
            yield problem
