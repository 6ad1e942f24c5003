"""The stack as Kubernetes objects: list resources opened, patches merged onto what they patch.

A ``DeploymentList`` holds Deployments, and a ``DeploymentPatch`` changes a Deployment
that another resource declares: the rules must judge the Deployment as it will run. So
each list item becomes an object of its own, and each patch is merged (server-side-apply
style: objects field by field, lists of named items by name) onto the object it names by
kind, namespace and name; a patch whose target the stack does not declare is judged on
its own and marked so. Every object remembers which keyfence fleet component declared it,
from the resource's parent chain, which no label or transformation can rewrite.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

from .kinds import ResourceKind, resource_kind
from .labels import PROCESS_COMPONENT, SUBACCOUNT_COMPONENT
from .props import Node, Problems
from .scan import raw_children

DEFAULT_NAMESPACE: Final = "default"
MAX_PARENTS: Final = 16
MAX_DEPTH: Final = 100
_MERGE_KEYS: Final = ("name", "mountPath", "containerPort", "devicePath", "ip")


@dataclass(frozen=True)
class ProviderRef:
    """The provider a resource is declared with, as the engine describes it to the pack."""

    urn: str | None
    type: str | None
    props: object


@dataclass
class StackObject:
    """One Kubernetes object (or, for other providers, one resource) as the rules see it."""

    urn: str | None
    type: str
    rtype: ResourceKind | None
    props: Node
    raw: object
    """The raw props, for the string scan."""
    problems: Problems
    fleet_process: str | None = None
    """``<subaccount>/<process>`` of the keyfence:fleet:Process component that declared it."""
    fleet_subaccount: str | None = None
    """The keyfence:fleet:Subaccount component it was declared under."""
    patches: list[str] = field(default_factory=list)
    """How the patches merged into it are named in messages."""
    orphan_patch: bool = False
    """A patch whose target the stack does not declare."""
    item: str | None = None
    """For a list item: ``item <n> of <list>``."""
    fallback_name: str | None = None
    provider: ProviderRef | None = None
    """``None`` when the engine did not say which provider the resource uses."""

    @property
    def kind(self) -> str:
        return self.rtype.kind if self.rtype is not None else self.type

    @property
    def known_kind(self) -> str | None:
        return self.rtype.known if self.rtype is not None else None

    @property
    def metadata(self) -> Node:
        return self.props.get("metadata")

    @property
    def namespace(self) -> str:
        return self.metadata.get("namespace").text() or DEFAULT_NAMESPACE

    @property
    def name(self) -> str:
        name = self.metadata.get("name").text()
        if name:
            return name
        return self.fallback_name or "<unnamed>"

    @property
    def ref(self) -> str:
        """``Deployment alpha/maker``, and how it came to be when that matters."""
        if self.rtype is None:  # another provider's resource: its type and Pulumi name
            return f"{self.type} {self.fallback_name or '<unnamed>'}"
        kind = f"{self.kind}Patch" if self.orphan_patch else self.kind
        text = f"{kind} {self.namespace}/{self.name}"
        if self.item:
            text += f" ({self.item})"
        if self.patches:
            text += f" (as patched by {', '.join(self.patches)})"
        return text


def _attr(resource: object, name: str) -> object:
    try:
        return getattr(resource, name, None)
    except Exception:  # a foreign object may raise anything
        return None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def fleet_owner(resource: object) -> tuple[str | None, str | None]:
    """The keyfence process and subaccount components a resource was declared under.

    The SDK links each resource to its parent; without that link the URN's type chain
    (``keyfence:fleet:Subaccount$keyfence:fleet:Process$...``) still tells, and the
    program names a process's resources ``<subaccount>/<process>[/...]``.
    """
    process: str | None = None
    subaccount: str | None = None
    parent = _attr(resource, "parent")
    for _ in range(MAX_PARENTS):
        if parent is None:
            break
        parent_type = _attr(parent, "resource_type")
        if parent_type == PROCESS_COMPONENT and process is None:
            process = _text(_attr(parent, "name"))
        elif parent_type == SUBACCOUNT_COMPONENT and subaccount is None:
            subaccount = _text(_attr(parent, "name"))
        parent = _attr(parent, "parent")
    urn = _text(_attr(resource, "urn")) or ""
    chain = urn.split("::")[2].split("$")[:-1] if urn.count("::") >= 3 else []
    name = _text(_attr(resource, "name")) or ""
    parts = name.split("/")
    if process is None and PROCESS_COMPONENT in chain and len(parts) >= 2:
        process = "/".join(parts[:2])
    if subaccount is None and SUBACCOUNT_COMPONENT in chain and parts[0]:
        subaccount = parts[0]
    if process is not None and subaccount is None:
        subaccount = process.split("/")[0]
    return process, subaccount


def plain(value: object, depth: int = 0) -> object:
    """A deep copy of props as plain dicts and lists (the SDK's proxies opened), for merging."""
    children = raw_children(value)
    if children is None or depth > MAX_DEPTH:
        return value
    if isinstance(value, Mapping):
        return {key: plain(child, depth + 1) for key, child in children}
    return [plain(child, depth + 1) for _, child in children]


def _merge_key(items: list[object]) -> str | None:
    for key in _MERGE_KEYS:
        if items and all(isinstance(i, dict) and isinstance(i.get(key), (str, int, float)) for i in items):
            return key
    return None


def merge(target: object, patch: object) -> object:
    """``patch`` applied to ``target``: objects field by field, named list items by name, else replaced."""
    if isinstance(target, dict) and isinstance(patch, dict):
        out = dict(target)
        for key, value in patch.items():
            out[key] = merge(out[key], value) if key in out else value
        return out
    if isinstance(target, list) and isinstance(patch, list):
        key = _merge_key([*target, *patch])
        if key is None:
            return patch
        merged = list(target)
        positions = {item[key]: i for i, item in enumerate(merged) if isinstance(item, dict)}
        for item in patch:
            assert isinstance(item, dict)
            at = positions.get(item[key])
            if at is None:
                positions[item[key]] = len(merged)
                merged.append(item)
            else:
                merged[at] = merge(merged[at], item)
        return merged
    return patch


def provider_of(resource: object) -> ProviderRef | None:
    """The provider the engine names for ``resource`` (``PolicyResource.provider``), if any."""
    provider = _attr(resource, "provider")
    if provider is None:
        return None
    return ProviderRef(
        _text(_attr(provider, "urn")), _text(_attr(provider, "resource_type")), _attr(provider, "props")
    )


def _object(resource: object, rtype: ResourceKind | None, raw: object, resource_type: str) -> StackObject:
    problems = Problems()
    urn = _text(_attr(resource, "urn"))
    process, subaccount = fleet_owner(resource)
    return StackObject(
        urn=urn,
        type=resource_type,
        rtype=rtype,
        props=Node.root(raw, problems),
        raw=raw,
        problems=problems,
        fleet_process=process,
        fleet_subaccount=subaccount,
        fallback_name=_text(_attr(resource, "name")),
        provider=provider_of(resource),
    )


def _items(resource: object, rtype: ResourceKind, raw: object, resource_type: str) -> list[StackObject]:
    listed = _object(resource, ResourceKind(rtype.group, rtype.version, rtype.kind), raw, resource_type)
    items = listed.props.get("items")
    out = []
    for position, item in enumerate(items.items()):
        kind_field, api_field = item.get("kind").value, item.get("apiVersion").value
        kind = kind_field if isinstance(kind_field, str) and kind_field else rtype.kind
        group, version = rtype.group, rtype.version
        if isinstance(api_field, str) and api_field:
            group, _, version = api_field.rpartition("/")
            group = group or "core"
        obj = _object(resource, ResourceKind(group, version, kind), item.value, resource_type)
        obj.props = Node(item.value, item.path, listed.problems)
        obj.problems = listed.problems
        obj.item = f"item {position} of {rtype.kind}List {listed.name}"
        out.append(obj)
    return out or [listed]


def expand(resources: Iterable[object]) -> list[StackObject]:
    """Every object of the stack, patches merged in, in stack order."""
    objects: list[StackObject] = []
    patches: list[StackObject] = []
    for resource in resources:
        resource_type = _attr(resource, "resource_type")
        if not isinstance(resource_type, str):
            continue
        raw = _attr(resource, "props")
        rtype = resource_kind(resource_type)
        if rtype is not None and (
            rtype.variant == "List" or (rtype.kind == "List" and rtype.group == "core")
        ):
            objects.extend(_items(resource, rtype, raw, resource_type))
        elif rtype is not None and rtype.variant == "Patch":
            patches.append(_object(resource, rtype, raw, resource_type))
        else:
            objects.append(_object(resource, rtype, raw, resource_type))
    if not patches:
        return objects
    by_name = {(o.kind, o.namespace, o.name): o for o in reversed(objects) if o.rtype is not None}
    for patch in patches:
        target = by_name.get((patch.kind, patch.namespace, patch.name))
        label = f"{patch.kind}Patch {patch.namespace}/{patch.name}"
        if target is None:
            patch.orphan_patch = True
            by_name[(patch.kind, patch.namespace, patch.name)] = patch
            objects.append(patch)
            continue
        merged = merge(plain(target.raw), plain(patch.raw))
        target.raw = merged
        target.props = Node.root(merged, target.problems)
        target.problems.extend(patch.problems)
        target.patches.append(label)
        target.urn = patch.urn or target.urn
    return objects
