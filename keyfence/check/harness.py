"""Run the real Pulumi program under the Pulumi SDK's mocks and collect what it registers.

This is how ``keyfence check`` and ``keyfence plan`` see a stack without the Pulumi CLI,
a backend or a cluster: the program's code path is the one ``pulumi up`` runs, only the
resource monitor is the SDK's ``MockMonitor``. Each registration keeps its properties
exactly as the SDK serialised them (secrets still wrapped), which is what the Pulumi CLI
hands to a policy pack.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi.runtime
from google.protobuf import empty_pb2, struct_pb2
from pulumi.output import Unknown
from pulumi.runtime import config as pulumi_config
from pulumi.runtime import rpc, settings
from pulumi.runtime.mocks import MockMonitor, MockResourceArgs, Mocks, MockSettings
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

from ..collector import batched_gc
from .callsite import CallSite, call_site

SECRET_PLACEHOLDER = "[secret]"
UNKNOWN_PLACEHOLDER = "[unknown]"
"""A value not known during a preview (e.g. a namespace that comes from the deploying kubeconfig)."""
STACK_TYPE = "pulumi:pulumi:Stack"


@dataclass(frozen=True)
class RegisteredResource:
    """One resource as the engine would have received it."""

    type: str
    name: str
    urn: str
    parent: str
    custom: bool
    properties: struct_pb2.Struct = field(repr=False)
    dependencies: tuple[str, ...] = ()
    property_dependencies: dict[str, tuple[str, ...]] = field(default_factory=dict)
    site: CallSite | None = None
    """Where the program's code declared it, as the SDK reported it."""
    provider: str = ""
    """The provider reference ``<urn>::<id>`` of a custom resource (empty under the SDK's mocks)."""
    protect: bool = False

    def inputs(self) -> dict[str, Any]:
        """Plain inputs, each secret ``"[secret]"`` and each unknown ``"[unknown]"``: safe to print."""
        value = redact_secrets(rpc.deserialize_properties(self.properties, keep_unknowns=True))
        return value if isinstance(value, dict) else {}

    def input(self, name: str) -> Any:
        """One top-level input as :meth:`inputs` gives it (None when unset), without reading the rest."""
        if name not in self.properties.fields:
            return None
        only = struct_pb2.Struct()
        only.fields[name].CopyFrom(self.properties.fields[name])
        value = redact_secrets(rpc.deserialize_properties(only, keep_unknowns=True))
        return value.get(name) if isinstance(value, dict) else None


def redact_secrets(value: Any) -> Any:
    """Replace each Pulumi-wrapped secret (and unknown) in a deserialised property tree by a placeholder."""
    if rpc.is_rpc_secret(value):
        return SECRET_PLACEHOLDER
    if isinstance(value, Unknown):
        return UNKNOWN_PLACEHOLDER
    if isinstance(value, dict):
        return {k: redact_secrets(v) for k, v in value.items()}
    if isinstance(value, list):
        return [redact_secrets(v) for v in value]
    return value


@dataclass
class Collected:
    """Everything a program run registered: resources in order, and the stack's outputs."""

    resources: list[RegisteredResource]
    stack_outputs: dict[str, Any]
    """Stack outputs as deserialised (secrets still wrapped)."""
    stack_urn: str = ""
    output: list[str] = field(default_factory=list)
    """What the program itself printed (last lines), when it ran in a child process."""


class _EchoMocks(Mocks):
    """Every resource's outputs are its inputs, as during a preview of a new stack."""

    def new_resource(self, args: MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: Any) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


class _RecordingMonitor(MockMonitor):
    """The SDK's MockMonitor, keeping each raw registration request for the policy pack."""

    def __init__(self) -> None:
        super().__init__(_EchoMocks())
        self._lock = threading.Lock()
        self.registered: list[RegisteredResource] = []
        self.stack_outputs: dict[str, Any] = {}
        self.stack_urn = ""

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        # Like the engine: a child's type is its parent's whole type chain plus its own, and the
        # root stack is left out of the chain.
        if parent and parent != self.stack_urn:
            type_ = f"{parent.split('::')[2]}${type_}"
        return f"urn:pulumi:{pulumi.get_stack()}::{pulumi.get_project()}::{type_}::{name}"

    def RegisterResource(self, request: Any) -> Any:
        response = super().RegisterResource(request)  # type: ignore[no-untyped-call]
        record = RegisteredResource(
            type=request.type,
            name=request.name,
            urn=response.urn,
            parent=request.parent,
            custom=bool(request.custom),
            properties=request.object,
            dependencies=tuple(request.dependencies),
            property_dependencies={k: tuple(v.urns) for k, v in request.propertyDependencies.items()},
            site=call_site(request),
        )
        with self._lock:
            if request.type == STACK_TYPE:
                self.stack_urn = response.urn
            else:
                self.registered.append(record)
        return response

    def RegisterResourceOutputs(self, request: Any) -> Any:
        if request.urn and request.urn == self.stack_urn:
            outputs = rpc.deserialize_properties(request.outputs, keep_unknowns=True)
            with self._lock:
                self.stack_outputs = dict(outputs) if isinstance(outputs, dict) else {}
        return super().RegisterResourceOutputs(request)  # type: ignore[no-untyped-call]


def collect(
    program: Callable[[], object],
    *,
    project: str = "keyfence",
    stack: str = "check",
    config: dict[str, str] | None = None,
    logger: logging.Logger | None = None,
) -> Collected:
    """Run ``program`` as a Pulumi program under mocks and return what it registered.

    Exceptions raised by the program propagate unchanged, after the runtime has settled.
    """
    monitor = _RecordingMonitor()
    settings.reset_options(project=project, stack=stack, preview=True)
    settings.configure(
        MockSettings(  # type: ignore[no-untyped-call]
            monitor=monitor,
            monitor_features=set(monitor.GetDeploymentInfo(empty_pb2.Empty()).supportedFeatures),  # type: ignore[no-untyped-call]
            engine=_QuietEngine(logger or logging.getLogger("keyfence.pulumi")),
            project=project,
            stack=stack,
            dry_run=True,
            organization="organization",
            callbacks=None,
        )
    )
    for key, value in (config or {}).items():
        pulumi.runtime.set_config(key, value)
    try:
        with batched_gc():
            _sync_await(run_in_stack(program))  # type: ignore[arg-type]
    finally:
        for key in config or {}:
            pulumi_config.CONFIG.get().pop(key, None)
    return Collected(monitor.registered, monitor.stack_outputs, monitor.stack_urn)


class _QuietEngine:
    """Routes the program's pulumi.log calls to a Python logger instead of the Pulumi engine."""

    def __init__(self, logger: logging.Logger) -> None:
        self._logger = logger

    def Log(self, request: Any) -> None:
        from pulumi.runtime.proto import engine_pb2

        level = {
            engine_pb2.DEBUG: logging.DEBUG,
            engine_pb2.INFO: logging.INFO,
            engine_pb2.WARNING: logging.WARNING,
            engine_pb2.ERROR: logging.ERROR,
        }.get(request.severity, logging.INFO)
        self._logger.log(level, "%s", request.message)
