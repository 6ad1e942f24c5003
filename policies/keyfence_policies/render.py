"""Render mode: a Kubernetes provider with ``renderYamlToDirectory`` writes manifests to disk in clear.

The provider then creates nothing in a cluster; it writes every resource it is given, inputs
as they are (Pulumi secrets included), to YAML files. A key Secret of ``delivery:
pulumi-secret`` (or any other object holding key material) declared with such a provider is
therefore a key on disk, in the CI workspace and in whatever commits or syncs that directory.

Render mode can be switched on for the default provider (stack config
``kubernetes:renderYamlToDirectory``) or on any explicit ``Provider``, so the pack reads it from
the provider each resource is declared with, as the engine names it, and from every Kubernetes
provider resource of the stack. When the engine does not say which provider declares an object
holding key material and the stack has a rendering provider, the object counts as rendered
(fail closed); so does a provider whose setting cannot be read (unknown during preview).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from .kinds import KUBERNETES_PROVIDER
from .objects import ProviderRef
from .props import Node, Problems
from .rule import MAX_NAMED, Finding, enumerate_named, named
from .workloads import StackIndex

RENDER_INPUT: Final = "renderYamlToDirectory"
REMEDY: Final = (
    "Deliver the key with `delivery: vault-secrets-operator` or `external-secrets` (the manifests then "
    "hold no key), or declare this object with a Kubernetes provider without renderYamlToDirectory."
)


@dataclass(frozen=True)
class Rendering:
    """A Kubernetes provider that renders (or may render) manifests to a directory."""

    urn: str | None
    how: str
    """``renders manifests to 'out/'``, or why its setting could not be read."""

    @property
    def ref(self) -> str:
        return named("provider", self.urn)


def rendering(urn: str | None, props: object) -> Rendering | None:
    """How a Kubernetes provider's inputs set render mode; ``None`` when they leave it off."""
    root = Node.root(props, Problems())
    if root.absent or root.mapping() is None:
        return Rendering(urn, "has inputs the pack cannot read, so it may render manifests to disk")
    node = root.get(RENDER_INPUT)
    if node.absent:
        return None
    if node.unknown:
        return Rendering(urn, f"sets {RENDER_INPUT} to a value not known during preview")
    text = node.text()
    if text is None:
        return Rendering(urn, f"sets {RENDER_INPUT} to a value the pack cannot read")
    if not text.strip():
        return None
    return Rendering(urn, f"renders manifests to {text!r} ({RENDER_INPUT})")


def _renderings(index: StackIndex) -> dict[str | None, Rendering]:
    found: dict[str | None, Rendering] = {}
    for obj in index.providers:
        if obj.type == KUBERNETES_PROVIDER and (r := rendering(obj.urn, obj.raw)) is not None:
            found.setdefault(obj.urn, r)
    for ref in index.provider_by_urn.values():
        if ref is not None and ref.type == KUBERNETES_PROVIDER and (r := rendering(ref.urn, ref.props)):
            found.setdefault(ref.urn, r)
    return found


def _material(index: StackIndex) -> Iterator[tuple[str, str | None, str]]:
    """``(ref, urn, what)`` of every object the stack declares that holds key material."""
    secrets = [s for group in index.secrets.values() for s in group] + index.unnamed_key_secrets
    for secret in secrets:
        if secret.origin is not None or secret.kind != "Secret":
            continue  # written by an operator in the cluster: no manifest holds its data
        if ((secret.is_key or secret.key_uncertain) and secret.declares_data) or secret.held:
            what = secret.key.describe() if secret.key is not None else "a key"
            yield secret.ref, secret.urn, f"holds the material of {what}"
    for copy in index.copies:
        if copy.hit.how == "material":
            yield copy.ref, copy.urn, f"holds the material of {copy.key.describe()}"
    for workload in index.workloads:
        for holding in workload.holdings:
            if holding.hit.how == "material":
                yield workload.ref, workload.urn, f"holds the material of {holding.key.describe()}"
                break


def _provider(index: StackIndex, urn: str | None) -> ProviderRef | None:
    return index.provider_by_urn.get(urn) if urn is not None else None


def check(index: StackIndex) -> Iterator[Finding]:
    """A finding for each object holding key material that a rendering provider would write to disk."""
    renderings = _renderings(index)
    if not renderings:
        return
    seen: set[tuple[str, str | None]] = set()
    for ref, urn, what in _material(index):
        if (ref, urn) in seen:
            continue
        seen.add((ref, urn))
        provider = _provider(index, urn)
        if provider is None or provider.type is None:
            shown = [r.ref for r in list(renderings.values())[:MAX_NAMED]]
            yield Finding(
                f"{named(ref, urn)} {what} (value not shown), and the pack cannot tell which provider "
                f"declares it while the stack has Kubernetes providers in render mode "
                f"({enumerate_named(shown, len(renderings))}): the check fails closed, since render mode "
                f"writes the key to disk in clear. {REMEDY}",
                urn,
            )
            continue
        if provider.type != KUBERNETES_PROVIDER:
            continue
        found = renderings.get(provider.urn) or rendering(provider.urn, provider.props)
        if found is not None:
            yield Finding(
                f"{named(ref, urn)} {what} (value not shown), and its {found.ref} {found.how}: the "
                f"provider writes every input of the object, Pulumi secrets included, to a YAML file in "
                f"clear. {REMEDY}",
                urn,
            )
