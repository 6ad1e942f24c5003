"""``keyfence check``'s three strands at once: the key facts, the program, the pack's Analyze calls.

The Pulumi CLI analyses each resource as the program registers it, and so does the check:
while the program runs in its own process, one thread of this process reads the key facts
from Vault, configures the pack with them and then sends the pack every registration as the
engine records it. On a machine with two cores the pack and Vault work beside the program
instead of after it. AnalyzeStack needs the whole stack, so it follows the program's end.

Nothing here weakens the verdict: every registration is analysed in the order the engine
recorded it, the stack is analysed only when the program completed, and any failure of a
strand (Vault, the pack, the program) is the check's failure, exit 2.
"""

from __future__ import annotations

import queue
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass
from typing import Final

from ..errors import KeyfenceError, PolicyPackError
from .analyzer import Configured, PolicyPackSession, configure_session
from .facts import KeyFacts
from .harness import Collected, RegisteredResource
from .packconfig import ConfigLayer
from .verdict import Analysis, Violation


class ResourceStream:
    """Registrations as the engine records them, for the pack to analyse while the program runs."""

    _END: Final = object()

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()

    def put(self, resource: RegisteredResource) -> None:
        self._queue.put(resource)

    def close(self) -> None:
        """No more registrations: the program ended, however it ended."""
        self._queue.put(self._END)

    def __iter__(self) -> Iterator[RegisteredResource]:
        while (item := self._queue.get()) is not self._END:
            assert isinstance(item, RegisteredResource)
            yield item


@dataclass(frozen=True)
class Checked:
    """What the three strands produced, once all of them completed."""

    facts: KeyFacts
    collected: Collected
    analysis: Analysis


@dataclass(frozen=True)
class _Streamed:
    facts: KeyFacts
    configured: Configured
    violations: list[Violation]


def check_overlapped(
    session: PolicyPackSession,
    *,
    read_facts: Callable[[], KeyFacts],
    run_program: Callable[[Callable[[RegisteredResource], None]], Collected],
    base_config: Callable[[KeyFacts], ConfigLayer],
    config: ConfigLayer,
    config_source: str,
) -> Checked:
    """Run the program while the facts are read and each registration is analysed; then AnalyzeStack.

    ``session`` is a spawned pack; it is closed before this returns or raises. ``run_program``
    gets the callback the engine calls with each registration. When the facts cannot be read,
    that error is raised (a program that failed meanwhile most likely failed on the same
    Vault); otherwise a failed program's error, then a pack's. Raises KeyfenceError (exit 2).
    """
    stream = ResourceStream()

    def analyse_stream() -> _Streamed:
        facts = read_facts()
        configured = configure_session(
            session, config=config, base_config=base_config(facts), config_source=config_source
        )
        return _Streamed(facts, configured, session.analyze_resources(stream, configured.pack_name))

    with futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyfence-analyze") as pool:
        strand = pool.submit(analyse_stream)
        try:
            collected = run_program(stream.put)
        except KeyfenceError as program_failure:
            stream.close()
            facts_failure = _failure_of(strand)
            session.close()
            if isinstance(facts_failure, KeyfenceError) and not isinstance(facts_failure, PolicyPackError):
                raise facts_failure from None
            raise program_failure from None
        except BaseException:
            stream.close()
            session.close()
            raise
        stream.close()
        try:
            streamed = strand.result()
            stack_violations = session.analyze_stack(collected.resources, streamed.configured.pack_name)
        finally:
            session.close()
    violations = [*streamed.violations, *stack_violations]
    return Checked(streamed.facts, collected, streamed.configured.analysis(session, violations))


def _failure_of(strand: futures.Future[_Streamed]) -> BaseException | None:
    """The strand's exception once it ended (it ends: its stream was closed), or None."""
    try:
        strand.result()
    except BaseException as exc:  # returned to the caller, which decides what to raise
        return exc
    return None

