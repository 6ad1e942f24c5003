"""keyfence's own program awaits its registrations, so the SDK's shutdown loop has nothing left to poll.

The Python SDK, once a synchronous program returns, waits with ``asyncio.wait(FIRST_COMPLETED)``
over every pending output, once per completion: quadratic in the fleet when the engine answers
registrations one at a time. These tests count what that loop is handed, under the SDK's own
mocks, for the real entry point (``keyfence.program.main``) and for the plain library call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pulumi
import pytest

from keyfence.check.harness import Collected, collect
from keyfence.program import ProgramOptions, harness_options, main, run_from_config
from tests.fleet_fixtures import EXAMPLE_SPEC


def _run_counting_waits(
    monkeypatch: pytest.MonkeyPatch, program: Callable[[], object]
) -> tuple[Collected, list[int]]:
    """Run ``program`` offline on the example fleet; the sizes of every ``asyncio.wait`` call."""
    sizes: list[int] = []
    real = asyncio.wait

    async def counting(fs: Iterable[Awaitable[Any]], *args: Any, **kwargs: Any) -> Any:
        pending = set(fs)
        sizes.append(len(pending))
        return await real(pending, *args, **kwargs)  # type: ignore[type-var]

    monkeypatch.setattr(asyncio, "wait", counting)
    with harness_options(ProgramOptions(spec_path=EXAMPLE_SPEC, mode="offline")):
        collected = collect(program)
    return collected, sizes


def test_main_leaves_the_sdk_no_pending_output_to_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    collected, sizes = _run_counting_waits(monkeypatch, main)
    deployments = [r for r in collected.resources if r.type == "kubernetes:apps/v1:Deployment"]
    assert deployments, "the example fleet declares workloads"
    # Everything the fleet declared was answered before the SDK's loop ran: it is handed at most
    # the few outputs created after the last registration (the stack's own), never the fleet's.
    assert sum(sizes) < len(collected.resources), sizes


def test_without_it_the_sdk_polls_every_pending_output(monkeypatch: pytest.MonkeyPatch) -> None:
    """The contrast that makes the test above meaningful: the library call leaves the wait to the SDK."""
    collected, sizes = _run_counting_waits(monkeypatch, run_from_config)
    assert sum(sizes) >= len(collected.resources), sizes


def test_main_declares_what_the_library_call_declares(monkeypatch: pytest.MonkeyPatch) -> None:
    settled, _ = _run_counting_waits(monkeypatch, main)
    plain, _ = _run_counting_waits(monkeypatch, run_from_config)

    def declared(collected: Collected) -> list[tuple[str, str, Any]]:
        # Registrations are answered concurrently, so their order is not the program's.
        return sorted(((r.type, r.name, r.inputs()) for r in collected.resources), key=lambda t: t[:2])

    assert declared(settled) == declared(plain)
    assert settled.stack_outputs == plain.stack_outputs


def test_main_inside_a_program_that_already_called_pulumi_run() -> None:
    """A wrapping program with its own async entry point can still call main(): the fleet is declared
    and the wrapper's outputs kept, instead of 'pulumi.run may only be called once'."""

    async def own() -> dict[str, Any]:
        return {"wrapper": "yes"}

    def wrapper() -> None:
        pulumi.run(own)
        main()

    with harness_options(ProgramOptions(spec_path=EXAMPLE_SPEC, mode="offline")):
        wrapped = collect(wrapper)
        plain = collect(run_from_config)
    assert sorted((r.type, r.name) for r in wrapped.resources) == sorted(
        (r.type, r.name) for r in plain.resources
    )
    assert wrapped.stack_outputs["wrapper"] == "yes" and "processes" in wrapped.stack_outputs


def test_pulumi_run_after_main_runs_the_programs_own_entry_point_too(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """main() holds the SDK's one entry point; a wrapping program's own pulumi.run after it is awaited
    beside the fleet (its outputs exported), never 'pulumi.run may only be called once'."""
    ran: list[str] = []

    async def own() -> dict[str, Any]:
        ran.append("own")
        return {"wrapper": "after"}

    def wrapper() -> None:
        main()
        pulumi.run(own)

    collected, sizes = _run_counting_waits(monkeypatch, wrapper)
    assert sum(sizes) < len(collected.resources), "the fleet is still awaited by its entry point"
    plain, _ = _run_counting_waits(monkeypatch, run_from_config)
    assert ran == ["own"]
    assert sorted((r.type, r.name) for r in collected.resources) == sorted(
        (r.type, r.name) for r in plain.resources
    )
    assert collected.stack_outputs["wrapper"] == "after" and "processes" in collected.stack_outputs


def test_a_second_pulumi_run_after_main_is_a_clear_error() -> None:
    async def own() -> None:
        return None

    def wrapper() -> None:
        main()
        pulumi.run(own)
        pulumi.run(own)

    with (
        harness_options(ProgramOptions(spec_path=EXAMPLE_SPEC, mode="offline")),
        pytest.raises(pulumi.RunError) as err,
    ):
        collect(wrapper)
    assert "keyfence.program.main()" in str(err.value) and "one entry point" in str(err.value)
