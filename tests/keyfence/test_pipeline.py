"""keyfence check's strands at once: facts, program and Analyze calls overlap, and fail as one.

The pack is the real testpack process; the program and the facts are stand-ins, so each test
can decide when registrations arrive and which strand fails.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from keyfence.check.analyzer import PolicyPackSession
from keyfence.check.facts import KeyFacts
from keyfence.check.harness import Collected, RegisteredResource
from keyfence.check.packconfig import ConfigLayer
from keyfence.check.pipeline import ResourceStream, check_overlapped
from keyfence.check.programrun import ProgramFailed
from keyfence.errors import KeyfenceError, PolicyPackError
from keyfence.vault.errors import VaultError

from .test_analyzer import TESTPACK, declared  # noqa: F401 - the module fixture of declared resources

FACTS = KeyFacts(entries=[], verified=True, prefixes=[])


def _session() -> PolicyPackSession:
    session = PolicyPackSession(TESTPACK, project="proto", stack="test")
    session.spawn_and_close_on_error()
    return session


def _no_config(_: KeyFacts) -> ConfigLayer:
    return {}


def _check(
    session: PolicyPackSession,
    run_program: Callable[[Callable[[RegisteredResource], None]], Collected],
    read_facts: Callable[[], KeyFacts] = lambda: FACTS,
) -> object:
    return check_overlapped(
        session,
        read_facts=read_facts,
        run_program=run_program,
        base_config=_no_config,
        config={},
        config_source="test",
    )


def test_each_registration_is_analysed_while_the_program_still_runs(declared: Collected) -> None:  # noqa: F811
    session = _session()
    analysed_before_end = threading.Event()
    original = session.analyze_resources

    def watching(resources: object, pack_name: str) -> object:
        def counted() -> object:
            for index, resource in enumerate(resources):  # type: ignore[attr-defined]
                yield resource
                if index == len(declared.resources) - 1:
                    analysed_before_end.set()

        return original(counted(), pack_name)  # type: ignore[arg-type]

    session.analyze_resources = watching  # type: ignore[method-assign]

    def program(on_resource: Callable[[RegisteredResource], None]) -> Collected:
        for resource in declared.resources:
            on_resource(resource)
        # The program is still running: every registration must already be with the pack.
        assert analysed_before_end.wait(60), "the pack was not sent registrations while the program ran"
        return declared

    checked = _check(session, program)
    assert session.process is None or session.process.poll() is not None, "the pack was stopped"
    policies = {v.policy for v in checked.analysis.violations}  # type: ignore[attr-defined]
    # Resource policies (Analyze) and stack policies (AnalyzeStack) both reported.
    assert {"mandatory-forbidden-registry", "stack-summary"} <= policies


def test_a_vault_failure_of_the_facts_is_reported_over_the_program_failure_it_caused(
    declared: Collected,  # noqa: F811
) -> None:
    session = _session()

    def facts() -> KeyFacts:
        raise VaultError("secret/momentum/executor: Vault is sealed; unseal it and run the check again")

    def program(on_resource: Callable[[RegisteredResource], None]) -> Collected:
        raise ProgramFailed("the program exited with code 1 before it completed")

    with pytest.raises(VaultError, match="Vault is sealed"):
        _check(session, program, facts)
    assert session.process is None or session.process.poll() is not None


def test_a_program_failure_is_reported_when_the_facts_were_read(declared: Collected) -> None:  # noqa: F811
    session = _session()

    def program(on_resource: Callable[[RegisteredResource], None]) -> Collected:
        on_resource(declared.resources[0])
        raise ProgramFailed("the program was killed by signal 9 before it completed")

    with pytest.raises(ProgramFailed, match="signal 9"):
        _check(session, program)
    assert session.process is None or session.process.poll() is not None


def test_facts_that_fail_after_a_complete_program_still_fail_the_check(
    declared: Collected,  # noqa: F811
) -> None:
    session = _session()

    def facts() -> KeyFacts:
        raise KeyfenceError("secret/keyfence/ledger: permission denied; add the ledger path to the CI policy")

    def program(on_resource: Callable[[RegisteredResource], None]) -> Collected:
        for resource in declared.resources:
            on_resource(resource)
        return declared

    with pytest.raises(KeyfenceError, match="permission denied"):
        _check(session, program, facts)


def test_a_pack_that_dies_while_the_program_runs_fails_the_check(declared: Collected) -> None:  # noqa: F811
    session = _session()

    def program(on_resource: Callable[[RegisteredResource], None]) -> Collected:
        on_resource(declared.resources[0])
        assert session.process is not None
        session.process.kill()
        for resource in declared.resources[1:]:
            on_resource(resource)
        return declared

    with pytest.raises(PolicyPackError):
        _check(session, program)


def test_the_stream_ends_when_closed_and_keeps_the_engine_order(declared: Collected) -> None:  # noqa: F811
    stream = ResourceStream()
    for resource in declared.resources:
        stream.put(resource)
    stream.close()
    assert [r.urn for r in stream] == [r.urn for r in declared.resources]
