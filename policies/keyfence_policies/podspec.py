"""What a pod spec runs and which objects each of its containers can read.

A pod spec is recognised by its shape, wherever it sits: an object whose ``containers``
is a list of objects with an ``image``. Known controllers keep it at a known place
(``kinds.TEMPLATE_PATHS``); any other resource (a CustomResource, an unknown kind) is
searched for it, so a workload cannot hide behind a kind the pack has never heard of.
For each container the pack records the volumes it mounts and the Secrets/ConfigMaps
its environment reads, because "one signer per key" is decided per container.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Final, Literal

from .props import Node

CSI_SECRETS_STORE: Final = "secrets-store.csi.k8s.io"
MAX_DEPTH: Final = 64
"""How deep the shape search looks; a real pod spec sits a few levels down."""

Source = Literal["Secret", "ConfigMap", "SecretProviderClass"]
Channel = Literal["volume", "projected volume", "csi volume", "env", "envFrom"]


@dataclass(frozen=True)
class SecretRef:
    """One place a pod spec names a Secret, ConfigMap or SecretProviderClass (in the pod's namespace)."""

    secret: str
    channel: Channel
    container: str | None = None
    volume: str | None = None
    variable: str | None = None
    source: Source = "Secret"

    @property
    def via(self) -> str:
        """Where the reference is, in words: ``env API_KEY of container maker``."""
        if self.channel in ("volume", "projected volume", "csi volume"):
            return f'{self.channel} "{self.volume}"'
        if self.channel == "env":
            return f"env {self.variable} of {self.container}"
        return f"envFrom of {self.container}"

    @property
    def target(self) -> str:
        return f"{self.source} {self.secret}"


@dataclass
class Container:
    """A container of a pod spec, whichever list it came from."""

    name: str
    role: str
    node: Node
    mounts: set[str] = field(default_factory=set)
    """Names of the pod's volumes this container mounts."""
    refs: list[SecretRef] = field(default_factory=list)
    """Objects its environment reads (env valueFrom, envFrom)."""

    @property
    def ref(self) -> str:
        return f"{self.role} {self.name}"


@dataclass
class PodSpec:
    """One pod spec and everything it references."""

    node: Node
    annotations: dict[str, str]
    containers: list[Container]
    volume_sources: dict[str, list[SecretRef]]
    """Each volume's name, and the objects it projects into the pod."""

    @property
    def refs(self) -> list[SecretRef]:
        out = [ref for refs in self.volume_sources.values() for ref in refs]
        out += [ref for container in self.containers for ref in container.refs]
        return out


_CONTAINER_FIELDS: Final = (
    ("containers", "container"),
    ("initContainers", "init container"),
    ("ephemeralContainers", "ephemeral container"),
)


def _volumes(pod_spec: Node) -> dict[str, list[SecretRef]]:
    by_volume: dict[str, list[SecretRef]] = {}
    for position, volume in enumerate(pod_spec.get("volumes").items()):
        name = volume.get("name").text() or f"#{position}"
        refs = by_volume.setdefault(name, [])
        secret_name = volume.dig("secret", "secretName").text()
        if secret_name:
            refs.append(SecretRef(secret_name, "volume", volume=name))
        config_map = volume.dig("configMap", "name").text()
        if config_map:
            refs.append(SecretRef(config_map, "volume", volume=name, source="ConfigMap"))
        for source in volume.dig("projected", "sources").items():
            projected = source.dig("secret", "name").text()
            if projected:
                refs.append(SecretRef(projected, "projected volume", volume=name))
            projected_map = source.dig("configMap", "name").text()
            if projected_map:
                refs.append(SecretRef(projected_map, "projected volume", volume=name, source="ConfigMap"))
        csi = volume.get("csi")
        if not csi.absent:
            provider_class = csi.dig("volumeAttributes", "secretProviderClass").text()
            driver = csi.get("driver").text()
            if provider_class:
                refs.append(
                    SecretRef(provider_class, "csi volume", volume=name, source="SecretProviderClass")
                )
            elif driver == CSI_SECRETS_STORE:
                csi.problems.add(f"{csi.path} names no volumeAttributes.secretProviderClass")
    return by_volume


def _container(node: Node, position: int, role: str) -> Container:
    name = node.get("name").text() or f"#{position}"
    if role == "init container" and node.get("restartPolicy").text() == "Always":
        role = "sidecar container"  # a native sidecar runs beside the main containers
    container = Container(name, role, node)
    for mount in node.get("volumeMounts").items():
        volume = mount.get("name").text()
        if volume is not None:
            container.mounts.add(volume)
    for env in node.get("env").items():
        variable = env.get("name").text() or "<unnamed>"
        value_from = env.get("valueFrom")
        secret_name = value_from.dig("secretKeyRef", "name").text()
        if secret_name:
            container.refs.append(SecretRef(secret_name, "env", container=container.ref, variable=variable))
        map_name = value_from.dig("configMapKeyRef", "name").text()
        if map_name:
            container.refs.append(
                SecretRef(map_name, "env", container=container.ref, variable=variable, source="ConfigMap")
            )
    for source in node.get("envFrom").items():
        secret_name = source.dig("secretRef", "name").text()
        if secret_name:
            container.refs.append(SecretRef(secret_name, "envFrom", container=container.ref))
        map_name = source.dig("configMapRef", "name").text()
        if map_name:
            container.refs.append(SecretRef(map_name, "envFrom", container=container.ref, source="ConfigMap"))
    return container


def read_pod_spec(pod_spec: Node, annotations: dict[str, str]) -> PodSpec:
    """Containers, volumes and references of one pod spec (``annotations``: its pod template's)."""
    containers = [
        _container(node, position, role)
        for list_name, role in _CONTAINER_FIELDS
        for position, node in enumerate(pod_spec.get(list_name).items())
    ]
    return PodSpec(pod_spec, annotations, containers, _volumes(pod_spec))


def _is_pod_spec(node: Node) -> bool:
    """``containers`` is a list holding at least one object with an ``image``, or is not known yet."""
    containers = node.get("containers")
    if containers.unknown:
        return True
    value = containers.value
    if isinstance(value, str) or not isinstance(value, Sequence):
        return False
    try:
        return any(isinstance(c, Mapping) and "image" in c for c in value)
    except Exception:  # an element unknown during preview
        return True


def find_pod_specs(props: Node) -> Iterator[tuple[Node, Node]]:
    """Every ``(pod template, pod spec)`` in a resource of unknown kind, found by shape.

    The template is the object around the pod spec (its ``metadata`` holds the pod's
    annotations); for a bare pod-spec-shaped object it is the object's parent.
    """
    stack: list[tuple[Node, Node, int]] = [(props, props, 0)]
    while stack:
        parent, node, depth = stack.pop()
        value = node.value
        if isinstance(value, Mapping):
            if _is_pod_spec(node):
                yield parent, node
                continue
            if depth >= MAX_DEPTH:
                continue
            try:
                keys = [k for k in value if isinstance(k, str)]
            except Exception:  # a foreign mapping may raise anything
                continue
            stack.extend((node, node.get(k), depth + 1) for k in reversed(keys))
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and depth < MAX_DEPTH:
            stack.extend((parent, child, depth + 1) for child in reversed(node.items()))
