"""Hostile resources through the real policy pack process, over the analyzer's gRPC protocol.

``tests/policies/test_robustness.py`` feeds garbage to the rules in process. This sends it the
way ``pulumi preview`` does: the declarations of examples/fleet.yaml plus, for every field of
one process's resources (Namespace, NetworkPolicy, ServiceAccount, key Secret, Deployment), a
copy with that field null, a number, a list, a mapping or unknown. One pack run judges the lot:
a crash would be a PolicyPackError (a mandatory check turned into a pack failure), and a field
the pack cannot read must come back as a mandatory "cannot evaluate", never as a pass.
"""

from __future__ import annotations

import copy
from collections import defaultdict
from typing import Any

import pytest
from google.protobuf import struct_pb2
from pulumi.runtime import rpc

from keyfence.check.analyzer import run_policy_pack
from keyfence.check.harness import RegisteredResource
from keyfence.check.runner import OFFLINE_CONFIG, collect_program, default_policy_pack
from keyfence.check.verdict import Analysis, Violation
from tests.fleet_fixtures import EXAMPLE_SPEC

ODD_VALUES: dict[str, Any] = {"null": None, "number": 7, "list": ["x"], "mapping": {}, "unknown": rpc.UNKNOWN}
"""What a field may hold instead of its value; ``rpc.UNKNOWN`` is how the engine marks a computed output."""
TARGET = "momentum/executor"
INTERNAL_ERRORS = ("could not evaluate the stack", "could not read the stack")


def targeted(resource: RegisteredResource) -> bool:
    """The executor's own resources, and its subaccount's Namespace and NetworkPolicy."""
    return resource.custom and (
        resource.name in ("momentum", "momentum/default-deny-ingress", TARGET)
        or resource.name.startswith(f"{TARGET}/")
    )


def field_paths(value: Any, here: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every field and list element below ``value`` (not inside a Pulumi secret)."""
    out: list[tuple[Any, ...]] = []
    if isinstance(value, dict) and not rpc.is_rpc_secret(value):
        for key, child in value.items():
            out += [(*here, key), *field_paths(child, (*here, key))]
    elif isinstance(value, list):
        for index, child in enumerate(value):
            out += [(*here, index), *field_paths(child, (*here, index))]
    return out


def with_field(props: dict[str, Any], path: tuple[Any, ...], value: Any) -> struct_pb2.Struct:
    changed = copy.deepcopy(props)
    node: Any = changed
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    struct = struct_pb2.Struct()
    struct.update(changed)
    return struct


class HostileStack:
    """The example fleet's declarations, a hostile copy per field and odd value, and the pack's verdict."""

    def __init__(self) -> None:
        self.base = collect_program(EXAMPLE_SPEC, mode="offline", stack="check", project="keyfence").resources
        self.copies: dict[str, tuple[str, tuple[Any, ...], str]] = {}
        """URN of each copy -> (kind, path of the field changed, odd value's name)."""
        hostile: list[RegisteredResource] = []
        for resource in self.base:
            if not targeted(resource):
                continue
            props = rpc.deserialize_properties(resource.properties, keep_unknowns=True)
            kind = resource.type.rsplit(":", 1)[-1]
            for path in field_paths(props):
                for label, value in ODD_VALUES.items():
                    name = f"{resource.name}~{len(hostile)}"
                    urn = f"{resource.urn.rsplit('::', 1)[0]}::{name}"
                    hostile.append(
                        RegisteredResource(
                            resource.type, name, urn, resource.parent, True, with_field(props, path, value)
                        )
                    )
                    self.copies[urn] = (kind, path, label)
        self.resources = [*self.base, *hostile]
        self.analysis: Analysis = run_policy_pack(
            default_policy_pack(),
            self.resources,
            project="keyfence",
            stack="check",
            base_config=dict(OFFLINE_CONFIG),
        )
        self.by_urn: dict[str, list[Violation]] = defaultdict(list)
        for violation in self.analysis.violations:
            self.by_urn[violation.urn].append(violation)

    def copies_of(self, kind: str, label: str | None = None) -> dict[str, tuple[Any, ...]]:
        return {
            urn: path
            for urn, (k, path, odd) in self.copies.items()
            if k == kind and (label is None or odd == label)
        }

    def cannot_evaluate(self, urn: str) -> list[Violation]:
        return [v for v in self.by_urn[urn] if v.level == "mandatory" and "cannot evaluate" in v.message]

    def urn_of(self, kind: str, name: str) -> str:
        return next(r.urn for r in self.base if r.type.endswith(f":{kind}") and r.name == name)


@pytest.fixture(scope="module")
def stack() -> HostileStack:
    return HostileStack()


def test_a_thousand_hostile_resources_are_judged_without_a_crash(stack: HostileStack) -> None:
    assert len(stack.copies) > 800, "every field of every resource of the process, five ways"
    mandatory = {
        p.name for p in stack.analysis.policies if stack.analysis.effective_level(p.name) == "mandatory"
    }
    assert mandatory, "the pack's mandatory policies ran"
    crashed = [v for v in stack.analysis.violations if any(e in v.message for e in INTERNAL_ERRORS)]
    assert not crashed, crashed[:3]


def test_every_hostile_deployment_is_reported_never_passed(stack: HostileStack) -> None:
    """Each copy still holds the executor's key next to the original, so each must fail a mandatory check."""
    deployments = stack.copies_of("Deployment")
    assert deployments
    passed = [
        stack.copies[u] for u in deployments if not any(v.level == "mandatory" for v in stack.by_urn[u])
    ]
    assert not passed, passed[:5]


def test_any_unknown_field_of_a_deployment_is_a_mandatory_cannot_evaluate(stack: HostileStack) -> None:
    unknown = stack.copies_of("Deployment", "unknown")
    silent = [path for urn, path in unknown.items() if not stack.cannot_evaluate(urn)]
    assert not silent, silent[:5]


@pytest.mark.parametrize(
    "path",
    [("metadata",), ("metadata", "name"), ("metadata", "namespace")],
    ids=lambda p: ".".join(p),
)
def test_a_key_secret_whose_identity_is_unreadable_is_reported_against_itself(
    stack: HostileStack, path: tuple[str, ...]
) -> None:
    """Its name is what workloads mount it by: without it no workload can be matched to the key."""
    for label in ("unknown", "number", "list"):
        urn = next(u for u, p in stack.copies_of("Secret", label).items() if p == path)
        found = [v for v in stack.cannot_evaluate(urn) if v.policy == "no-duplicate-key-assignment"]
        assert found, (label, stack.by_urn[urn])


def test_unreadable_labels_of_a_key_secret_or_namespace_are_reported_on_the_workload(
    stack: HostileStack,
) -> None:
    """The Secret and Namespace are judged through the workload that uses them: that is where it fails."""
    messages = " ".join(v.message for v in stack.cannot_evaluate(stack.urn_of("Deployment", TARGET)))
    assert "Secret momentum/executor-key: metadata.labels is not known during preview" in messages
    assert "Namespace momentum: metadata.labels is not known during preview" in messages
