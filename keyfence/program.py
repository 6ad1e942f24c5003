"""The keyfence Pulumi program: spec -> verified keys -> resources, in that order.

Everything that can fail (spec, Vault, key verification) runs before the first
resource is declared, so a bad input never leaves a half-declared fleet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, replace
from typing import Any

import pulumi

from .claims import current_stack
from .errors import KeyfenceError, SpecError
from .fleet import Fleet, declare
from .keys import Mode, ResolvedKey, resolve_keys
from .spec import FleetSpec, load_spec
from .vault import VaultSettings

CONFIG_NAMESPACE = "keyfence"
SPEC_KEY = "spec"


@dataclass(frozen=True)
class ProgramOptions:
    """How to run the program: which spec, and how much of Vault to read."""

    spec_path: str
    mode: Mode = "deploy"
    vault: VaultSettings | None = None
    """Connection settings; ``None`` reads the standard VAULT_* variables (unused offline)."""
    loaded: FleetSpec | None = None
    """The spec at ``spec_path`` already loaded, so ``keyfence check`` parses it once, not twice."""
    stack: str | None = None
    """``org/project/stack`` running the keys; ``None``: the Pulumi stack this program runs in."""


_HARNESS_OPTIONS: ContextVar[ProgramOptions | None] = ContextVar("keyfence_harness_options", default=None)


@contextmanager
def harness_options(options: ProgramOptions) -> Iterator[None]:
    """Make ``options_from_config`` return these options while a harness runs a program.

    Only ``keyfence check``/``plan`` use this, from inside their own process: check and
    offline modes declare placeholder key material, so no stack config can ever select them
    for a real ``pulumi up``.
    """
    token = _HARNESS_OPTIONS.set(options)
    try:
        yield
    finally:
        _HARNESS_OPTIONS.reset(token)


def options_from_config() -> ProgramOptions:
    """The options a program runs with: the stack's ``keyfence:spec`` in deploy mode, or the harness's."""
    harnessed = _HARNESS_OPTIONS.get()
    if harnessed is not None:
        return harnessed
    return ProgramOptions(spec_path=pulumi.Config(CONFIG_NAMESPACE).require(SPEC_KEY))


def prepare(options: ProgramOptions) -> tuple[FleetSpec, list[ResolvedKey]]:
    """Load and validate the spec and resolve every key; raises KeyfenceError, declares nothing."""
    spec = options.loaded if options.loaded is not None else load_spec(options.spec_path)
    if options.mode == "offline":
        return spec, resolve_keys(spec, None, "offline")
    settings = options.vault or VaultSettings.from_env()
    from .vault import connect  # hvac is loaded only when Vault is read

    with connect(settings) as client:
        return spec, resolve_keys(spec, client, options.mode, options.stack or current_stack())


RENDER_CONFIG = "renderYamlToDirectory"
"""The Kubernetes provider's render mode (``kubernetes:renderYamlToDirectory``): manifests go to files."""


def refuse_render_of_material(spec: FleetSpec, render_dir: str | None) -> None:
    """Render mode writes every input in clear to disk: allowed only when no process carries key material.

    In the operator modes the manifests hold no key (an operator reads it in the cluster), so GitOps
    users can render them; a ``pulumi-secret`` process would write its key to a YAML file. This sees
    the default provider's stack config only: an explicit ``Provider``'s inputs cannot be read back
    by the program, so the pack's ``key-not-in-env`` judges those from each resource's provider.
    """
    if not render_dir:
        return
    holders = [e for e in spec.entries() if not e.operator_delivered]
    if holders:
        raise SpecError(
            f"kubernetes:{RENDER_CONFIG} is set ({render_dir}): the Kubernetes provider would write "
            f"{len(holders)} key Secret(s) to disk in clear; render mode needs delivery "
            "vault-secrets-operator or external-secrets for every process",
            problems=[
                f"{e.location.file}:{e.location.line}:{e.location.column} ({e.ref}): delivery is "
                f"{e.delivery}; set delivery: vault-secrets-operator or external-secrets, or unset "
                f"kubernetes:{RENDER_CONFIG}"
                for e in holders
            ],
        )


def declare_from(options: ProgramOptions) -> Fleet:
    """The whole program: spec, keys, then every resource; ``keyfence check`` runs it too."""
    spec = options.loaded if options.loaded is not None else load_spec(options.spec_path)
    # Before Vault is read: a refused render must not have fetched any material first.
    refuse_render_of_material(spec, pulumi.Config("kubernetes").get(RENDER_CONFIG))
    spec, keys = prepare(replace(options, loaded=spec))
    return declare(spec, keys, options.stack or current_stack())


def run(options: ProgramOptions) -> dict[str, dict[str, Any]]:
    """:func:`declare_from`, returning its per-process facts."""
    return declare_from(options).outputs


def declare_from_config() -> Fleet:
    """The fleet of the stack's ``keyfence:spec``, for programs that declare more beside it.

    A program with a large fleet passes the result's ``registered`` to ``pulumi.run`` (see
    :meth:`keyfence.fleet.Fleet.registered` for why); raises KeyfenceError before declaring anything.
    """
    return declare_from(options_from_config())


def run_from_config() -> dict[str, dict[str, Any]]:
    """The program as a library call, for Pulumi programs that declare more beside the fleet.

    Returns per-process facts (namespace, deployment, key path, fingerprint, version).
    """
    return declare_from_config().outputs


class _Entry:
    """main()'s entry point for ``pulumi.run``: the fleet's registrations awaited, together with the
    entry point a wrapping program hands ``pulumi.run`` after calling main().

    The SDK takes one entry point per program and refuses a second with 'pulumi.run may only be
    called once', which names neither keyfence nor the way out. main() claims it, so it takes the
    program's own over: that one is awaited beside the fleet and its outputs exported as usual.
    """

    def __init__(self, fleet: Fleet) -> None:
        self.fleet = fleet
        self.then: Callable[[], Awaitable[pulumi.Inputs | None]] | None = None
        self.started = False

    async def __call__(self) -> pulumi.Inputs | None:
        self.started = True
        then = self.then
        if then is None:
            await self.fleet.registered()
            return None
        outputs, _ = await asyncio.gather(then(), self.fleet.registered())
        return outputs

    def take(self, program: Callable[[], Awaitable[pulumi.Inputs | None]]) -> None:
        """A later ``pulumi.run(program)``: kept, or refused with what to do instead."""
        if self.started:
            raise pulumi.RunError(
                "pulumi.run was called while the program's entry point was already running "
                "(keyfence.program.main() handed it the fleet); call pulumi.run at the program's top level"
            )
        if self.then is not None:
            raise pulumi.RunError(
                "pulumi.run may be called once per program, and this program already handed it an entry "
                "point after keyfence.program.main(); await everything from that one entry point"
            )
        self.then = program


def _take_later_entry_points(entry: _Entry) -> None:
    """Route a later ``pulumi.run`` on this program's stack to ``entry``.

    ``pulumi.run`` hands its argument to the root stack's ``_register_async_program`` (Pulumi SDK
    >= 3.254.0); that one stack object, not the SDK, is given ``entry.take`` instead. An SDK without
    the method keeps its own error, which the README documents.
    """
    stack = pulumi.runtime.get_root_resource()
    if stack is not None and callable(getattr(stack, "_register_async_program", None)):
        stack._register_async_program = entry.take  # type: ignore[attr-defined]  # see the docstring


def main() -> None:
    """keyfence's own Pulumi program (``infra/__main__.py``): the fleet, then its registrations awaited.

    A KeyfenceError ends the program as a ``pulumi.RunError``: its message, no traceback. A wrapping
    program may call ``pulumi.run`` itself, before or after this: after, its entry point is awaited
    beside the fleet's registrations (:class:`_Entry`); before, the SDK's shutdown loop waits for the
    fleet instead, slower but the same. :func:`declare_from_config` is the call for a program that
    awaits ``Fleet.registered`` in its own entry point.
    """
    try:
        fleet = declare_from_config()
    except KeyfenceError as exc:
        raise pulumi.RunError(str(exc)) from None
    entry = _Entry(fleet)
    try:
        pulumi.run(entry)
    except pulumi.RunError:
        # A wrapping program already handed its own entry point to pulumi.run (only one is
        # allowed): the SDK's shutdown loop waits for the fleet instead, slower but the same.
        return
    _take_later_entry_points(entry)
