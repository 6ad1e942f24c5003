"""Routes to a key that name neither its material nor its exact Vault path.

The scan (``scan``) recognises a key by its material and by its Vault path. Two more ways
reach a key, and each must count as a second holder:

- a query that sweeps a Vault folder: External Secrets' ``dataFrom[].find`` fetches every
  secret under its ``path`` (the whole mount when it names none, as with ``tags`` or a
  ``name`` regexp), so a folder that holds a key delivers that key. The store it queries is
  not resolved and the regexp is not evaluated (RE2 is not Python's ``re``): a sweep over a
  key's folder counts, which fails closed;
- a reference to a key Secret by its Kubernetes name (``name`` or ``namespace/name``) from
  anything that is not a pod: a replicator or reflector annotation, External Secrets'
  Kubernetes provider, a PushSecret. Whatever follows it copies the key out of its Secret.
  Pods and RBAC are judged by their own rules; a fleet process's own delivery objects name
  its own Secret on purpose. The Secret a namespaced operator object writes (its target field)
  is in the object's own namespace: there a bare name never means a Secret of another
  namespace (the written Secret itself is judged where the scan records it).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from .carriers import SecretInfo
from .keybook import Key, KeyBook
from .objects import StackObject
from .props import Node, Problems
from .scan import MAX_DEPTH, raw_children

SWEEP_KINDS: Final = frozenset({"ExternalSecret", "ClusterExternalSecret"})
_SKIPPED_KINDS: Final = frozenset(
    {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "Namespace", "ServiceAccount"}
)
_OWN_METADATA: Final = frozenset({"name", "namespace", "labels", "generateName", "uid"})
_TARGET_FIELDS: Final = {
    "VaultStaticSecret": "spec.destination.name",
    "VaultDynamicSecret": "spec.destination.name",
    "VaultPKISecret": "spec.destination.name",
    "ExternalSecret": "spec.target.name",
}
"""The field naming the Secret a namespaced operator object writes, always in its own namespace."""


@dataclass(frozen=True)
class Route:
    """A key reached by ``obj``: ``where`` is the field, ``via`` says how, in words."""

    key: Key
    where: str
    via: str


def _segments(text: str) -> list[str]:
    return [part for part in text.split("/") if part]


def _covers(folder: list[str], key: Key) -> bool:
    """Whether a Vault folder (relative to its mount, or with the mount in front) holds ``key``."""
    if not key.path:
        return False
    path = _segments(key.path)
    with_mount = _segments(key.mount or "secret") + path
    return path[: len(folder)] == folder or with_mount[: len(folder)] == folder


def sweeps(obj: StackObject, book: KeyBook) -> Iterator[Route]:
    """The keys an External Secrets ``find`` query fetches with the Vault folder it sweeps."""
    if obj.kind not in SWEEP_KINDS:
        return
    spec = Node(obj.props.get("spec").value, "spec", Problems())
    if obj.kind == "ClusterExternalSecret":
        spec = spec.get("externalSecretSpec")
    for position, item in enumerate(spec.get("dataFrom").items()):
        find = item.get("find")
        if find.absent or find.value is None:
            continue
        path = find.get("path")
        folder = path.value if isinstance(path.value, str) else None
        if folder is None and not path.absent and path.value is not None:
            folder = ""  # unknown or odd: it may name any folder
        segments = _segments(folder or "")
        where = f"{spec.path}.dataFrom[{position}].find"
        for key in book.keys:
            if key.path and key.process is not None and _covers(segments, key):
                shown = f"Vault folder {'/'.join(segments)}" if segments else "the whole Vault mount"
                yield Route(key, where, f"{shown}, which holds {key.describe()},")


def _strings(value: object, where: str, depth: int = 0) -> Iterator[tuple[str, str]]:
    """Every string below ``value`` with its dotted field path, this object's own identity left out."""
    if isinstance(value, str):
        yield where, value
        return
    if depth >= MAX_DEPTH:
        return
    children = raw_children(value)
    for name, child in children or ():
        if depth == 1 and where == "metadata" and name in _OWN_METADATA:
            continue
        here = f"{where}[{name}]" if isinstance(name, int) else (f"{where}.{name}" if where else str(name))
        yield from _strings(child, here, depth + 1)


def by_name(obj: StackObject, key_secrets: dict[str, list[SecretInfo]]) -> Iterator[Route]:
    """Key Secrets ``obj`` names (``name`` or ``namespace/name``), other than its own process's."""
    if obj.kind in _SKIPPED_KINDS or not key_secrets:
        return
    seen: set[tuple[int, str]] = set()
    for where, text in _strings(obj.raw, ""):
        text = text.strip()
        local = obj.known_kind is not None and where == _TARGET_FIELDS.get(obj.known_kind)
        for secret in key_secrets.get(text, ()):
            if local and secret.namespace != obj.namespace:
                continue
            key = secret.key or (secret.held[0] if secret.held else None)
            if key is None or (obj.fleet_process is not None and obj.fleet_process == key.process):
                continue
            if secret.urn is not None and secret.urn == obj.urn:
                continue  # the Secret this object writes itself: already reported as its route
            if (id(secret), where) in seen:
                continue
            seen.add((id(secret), where))
            via = f"{secret.ref}, which holds {key.describe()},"
            yield Route(key, where, via)


def key_secret_names(secrets: Iterator[SecretInfo]) -> dict[str, list[SecretInfo]]:
    """Key Secrets by the strings that name them: ``name`` and ``namespace/name``."""
    out: dict[str, list[SecretInfo]] = {}
    for secret in secrets:
        if secret.name:
            for text in (secret.name, f"{secret.namespace}/{secret.name}"):
                out.setdefault(text, []).append(secret)
    return out
