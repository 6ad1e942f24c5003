"""The analyzer requests the Pulumi CLI sends for a registration, built once per resource.

A resource is described to a pack twice: in its own ``Analyze`` call while the program runs, and
as one entry of the stack's ``AnalyzeStack`` call at the end. :class:`StackRequest` serializes
each entry as its resource arrives (beside the Analyze call, while the program still registers),
so the final call only joins bytes: protobuf's wire format makes the concatenation of
``AnalyzeStackRequest`` messages one message whose repeated ``resources`` is their concatenation
(https://protobuf.dev/programming-guides/encoding/#last-one-wins). At 4,000 processes
(24,060 resources) building and serializing the request at the end cost 1.4-1.9 s.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pulumi.runtime.proto import analyzer_pb2

from .harness import RegisteredResource


def options(resource: RegisteredResource) -> analyzer_pb2.AnalyzerResourceOptions:
    """The resource options as the CLI sends them to a pack."""
    # The CLI always sends custom timeouts (zero when unset) and the parent URN. Aliases are
    # the old URNs matched in the stack's state: none in a preview of a new stack.
    return analyzer_pb2.AnalyzerResourceOptions(
        parent=resource.parent,
        protect=resource.protect,
        customTimeouts=analyzer_pb2.AnalyzerResourceOptions.CustomTimeouts(),
    )


def provider_of(
    resource: RegisteredResource, by_urn: Mapping[str, RegisteredResource]
) -> RegisteredResource | None:
    """The registered provider resource a custom resource's provider reference names, if known."""
    return by_urn.get(resource.provider.rsplit("::", 1)[0]) if resource.provider else None


def provider_message(provider: RegisteredResource | None) -> analyzer_pb2.AnalyzerProviderResource | None:
    """The resource's provider as the engine describes it to a pack (step_generator.go)."""
    if provider is None:
        return None
    out = analyzer_pb2.AnalyzerProviderResource(type=provider.type, urn=provider.urn, name=provider.name)
    out.properties.CopyFrom(provider.properties)
    return out


def analyze_request(
    resource: RegisteredResource, provider: RegisteredResource | None
) -> analyzer_pb2.AnalyzeRequest:
    """One resource's ``Analyze`` request."""
    request = analyzer_pb2.AnalyzeRequest(
        type=resource.type,
        urn=resource.urn,
        name=resource.name,
        options=options(resource),
        provider=provider_message(provider),
    )
    request.properties.CopyFrom(resource.properties)
    return request


def stack_entry(resource: RegisteredResource, provider: RegisteredResource | None) -> bytes:
    """One resource's entry of ``AnalyzeStack``, as a serialized one-entry ``AnalyzeStackRequest``."""
    request = analyzer_pb2.AnalyzeStackRequest()
    item = request.resources.add(
        type=resource.type,
        urn=resource.urn,
        name=resource.name,
        parent=resource.parent,
        dependencies=list(resource.dependencies),
        options=options(resource),
        provider=provider_message(provider),
    )
    item.properties.CopyFrom(resource.properties)
    for key, urns in resource.property_dependencies.items():
        if urns:
            item.propertyDependencies[key].urns.extend(urns)
    return request.SerializeToString()


class StackRequest:
    """``AnalyzeStack``'s request, its entries serialized as resources arrive.

    An entry is reused only for the very registration (and provider) it was built from; any other
    resource at the end is serialized then, so the request always describes exactly the stack given
    to :meth:`serialize`. Not thread-safe: one analysing thread adds, then serializes.
    """

    def __init__(self) -> None:
        self._entries: dict[str, tuple[RegisteredResource, RegisteredResource | None, bytes]] = {}

    def add(self, resource: RegisteredResource, provider: RegisteredResource | None) -> None:
        self._entries[resource.urn] = (resource, provider, stack_entry(resource, provider))

    def serialize(self, resources: Sequence[RegisteredResource]) -> bytes:
        """The serialized ``AnalyzeStackRequest`` of ``resources``, in their order."""
        by_urn = {resource.urn: resource for resource in resources}
        parts = []
        for resource in resources:
            provider = provider_of(resource, by_urn)
            built = self._entries.get(resource.urn)
            if built is not None and built[0] is resource and built[1] is provider:
                parts.append(built[2])
            else:
                parts.append(stack_entry(resource, provider))
        return b"".join(parts)
