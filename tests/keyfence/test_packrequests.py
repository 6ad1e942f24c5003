"""AnalyzeStack's request built entry by entry equals the message built whole, whatever arrives when."""

from __future__ import annotations

from dataclasses import replace

import pytest
from google.protobuf import struct_pb2
from pulumi.runtime.proto import analyzer_pb2

from keyfence.check.harness import RegisteredResource, collect
from keyfence.check.packrequests import StackRequest, options, provider_message
from keyfence.fleet import declare_fleet
from tests.fleet_fixtures import example_spec, resolved_keys

PROVIDER_URN = "urn:pulumi:check::keyfence::pulumi:providers:kubernetes::default"


def _assert_describes(data: bytes, resources: list[RegisteredResource]) -> None:
    """The request holds exactly ``resources``, in order, each as the CLI describes it to a pack."""
    request = analyzer_pb2.AnalyzeStackRequest.FromString(data)
    assert len(request.resources) == len(resources)
    by_urn = {r.urn: r for r in resources}
    for item, resource in zip(request.resources, resources, strict=True):
        assert (item.type, item.urn, item.name, item.parent) == (
            resource.type, resource.urn, resource.name, resource.parent
        )
        assert tuple(item.dependencies) == resource.dependencies
        assert item.properties == resource.properties
        assert item.options == options(resource)
        assert {k: tuple(v.urns) for k, v in item.propertyDependencies.items()} == {
            k: v for k, v in resource.property_dependencies.items() if v
        }
        named = by_urn.get(resource.provider.rsplit("::", 1)[0]) if resource.provider else None
        if named is None:
            assert not item.HasField("provider")
        else:
            assert item.provider == provider_message(named)


@pytest.fixture(scope="module")
def stack() -> list[RegisteredResource]:
    spec = example_spec()
    registered = collect(lambda: declare_fleet(spec, resolved_keys(spec))).resources
    props = struct_pb2.Struct()
    props.update({"kubeconfig": "{}", "version": "4.34.2"})
    provider = RegisteredResource(
        type="pulumi:providers:kubernetes", name="default", urn=PROVIDER_URN, parent="", custom=True,
        properties=props,
    )
    # Every Kubernetes object names the provider, as under the check's engine.
    named = [
        replace(r, provider=f"{PROVIDER_URN}::id-1") if r.type.startswith("kubernetes:") else r
        for r in registered
    ]
    return [provider, *named]


def _parsed(data: bytes) -> analyzer_pb2.AnalyzeStackRequest:
    return analyzer_pb2.AnalyzeStackRequest.FromString(data)


def test_entries_built_as_they_arrive_make_the_whole_request(stack: list[RegisteredResource]) -> None:
    built = StackRequest()
    seen: dict[str, RegisteredResource] = {}
    for resource in stack:
        seen[resource.urn] = resource
        built.add(resource, seen.get(resource.provider.rsplit("::", 1)[0]) if resource.provider else None)
    data = built.serialize(stack)
    assert any(item.HasField("provider") for item in _parsed(data).resources)
    _assert_describes(data, stack)


def test_nothing_built_ahead_still_makes_the_whole_request(stack: list[RegisteredResource]) -> None:
    _assert_describes(StackRequest().serialize(stack), stack)


def test_an_entry_is_rebuilt_when_its_registration_or_provider_is_not_the_one_it_was_built_from(
    stack: list[RegisteredResource],
) -> None:
    built = StackRequest()
    for resource in stack:
        # Built before its provider arrived: no provider in the entry.
        built.add(resource, None)
    changed = [replace(r, name=f"{r.name}-again") if r.type.endswith(":Deployment") else r for r in stack]
    _assert_describes(built.serialize(changed), changed)
    reordered = list(reversed(stack))
    _assert_describes(built.serialize(reordered), reordered)
