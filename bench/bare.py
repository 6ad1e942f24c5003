"""The floor, as a whole process: a bare Pulumi program under the SDK's own mocks.

``python -m bench.bare PLAN.json`` registers exactly the resources a plan lists (types, names,
parents, inputs and dependencies, as ``keyfence plan`` shows them; see :mod:`bench.plan`) with
the ``pulumi_kubernetes`` classes a real program uses, under ``pulumi.runtime.set_mocks``, and
exports the same stack output. Nothing of keyfence is imported here (a test asserts it): the
process's whole wall time, interpreter start-up and imports included, is what the Pulumi SDK
itself charges for the stack, the least any tool declaring these resources can pay.
"""

from __future__ import annotations

import importlib
import json
import re
import sys
from typing import Any, Final

import pulumi
from google.protobuf import empty_pb2
from pulumi.runtime.mocks import MockEngine, MockMonitor, MockSettings
from pulumi.runtime.settings import configure
from pulumi.runtime.stack import run_in_stack
from pulumi.runtime.sync_await import _sync_await

SECRET_MARK: Final = "__bench_secret__"
"""A plan value ``{SECRET_MARK: value}`` is registered as ``pulumi.Output.secret(value)``."""
_CAMEL: Final = re.compile(r"(?<!^)(?=[A-Z])")
_SET_BY_CLASS: Final = frozenset({"apiVersion", "kind"})


ROOT_STACK: Final = "pulumi:pulumi:Stack"
PROVIDER_PREFIX: Final = "pulumi:providers:"


class _EchoMocks(pulumi.runtime.Mocks):
    """Every resource's outputs are its inputs, as during a preview of a new stack."""

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        return f"{args.name}-id", dict(args.inputs)

    def call(self, args: pulumi.runtime.MockCallArgs) -> tuple[dict[str, Any], list[tuple[str, str]] | None]:
        return {}, None


def _value(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {SECRET_MARK}:
            return pulumi.Output.secret(_value(value[SECRET_MARK]))
        return {k: _value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_value(v) for v in value]
    return value


def _resource_class(type_: str) -> Any:
    """``kubernetes:networking.k8s.io/v1:NetworkPolicy`` -> ``pulumi_kubernetes.networking.v1`` class."""
    package, module, name = type_.split(":")
    group, _, version = module.partition("/")
    return getattr(importlib.import_module(f"pulumi_{package}.{group.split('.')[0]}.{version}"), name)


class _Component(pulumi.ComponentResource):
    def __init__(self, type_: str, name: str, opts: pulumi.ResourceOptions) -> None:
        super().__init__(type_, name, None, opts)


def program(plan: dict[str, Any]) -> None:
    """Register every resource of ``plan`` in order, then export its stack outputs."""
    by_urn: dict[str, pulumi.Resource] = {}
    components: list[_Component] = []
    for item in plan["resources"]:
        if item["type"] == ROOT_STACK or item["type"].startswith(PROVIDER_PREFIX):
            continue  # the root stack and default providers come from the SDK and engine, as for any program
        opts = pulumi.ResourceOptions(
            parent=by_urn.get(item["parent"]),
            depends_on=[by_urn[u] for u in item["dependencies"] if u in by_urn] or None,
        )
        if not item["custom"]:
            components.append(_Component(item["type"], item["name"], opts))
            resource: pulumi.Resource = components[-1]
        else:
            inputs = {
                _CAMEL.sub("_", k).lower(): _value(v)
                for k, v in item["inputs"].items()
                if k not in _SET_BY_CLASS
            }
            if item["type"].startswith("kubernetes:"):
                resource = _resource_class(item["type"])(item["name"], opts=opts, **inputs)
            else:  # e.g. a ledger claim's dynamic resource: its type and inputs as they are
                resource = pulumi.CustomResource(item["type"], item["name"], _value(item["inputs"]), opts)
        by_urn[item["urn"]] = resource
    for done in components:
        done.register_outputs({})
    for key, value in plan["outputs"].items():
        pulumi.export(key, _value(value))


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: python -m bench.bare PLAN.json", file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as handle:
        plan = json.load(handle)
    # What ``pulumi.runtime.set_mocks`` configures, without the root stack it creates: the program
    # runs in ``run_in_stack``, as the language host runs it, which makes its own.
    monitor = MockMonitor(_EchoMocks())
    features = set(monitor.GetDeploymentInfo(empty_pb2.Empty()).supportedFeatures)  # type: ignore[no-untyped-call]
    configure(
        MockSettings(  # type: ignore[no-untyped-call]
            monitor=monitor,
            monitor_features=features,
            engine=MockEngine(None),
            project=plan["project"],
            stack=plan["stack"],
            dry_run=True,
            organization="organization",
            callbacks=None,
        )
    )
    _sync_await(run_in_stack(lambda: program(plan)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
