"""An index of the stack: workloads, the key Secrets they reference, namespaces, scalers.

Key-bearing-ness is a whole-stack fact (a workload holds a key when it references a
Secret labelled as an exchange key anywhere in the stack), so every policy starts
from this index. It is built in one pass over the resources plus one pass over the
workloads, with dict lookups only: the cost is linear in the size of the stack,
never pairwise.

Anything the index cannot read is recorded as a problem on the record it belongs
to; a workload whose key-bearing-ness depends on an unreadable value is marked
``key_uncertain`` so that policies report it instead of skipping it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal

from .config import PackConfig
from .delivered import destination
from .kinds import DELIVERY_KINDS, SCALER_KINDS, WORKLOAD_KINDS, parse_type
from .props import Node, Problems

DEFAULT_NAMESPACE: Final = "default"

# Where each workload kind keeps its pod template (Pod: the pod itself).
_TEMPLATE_PATH: Final[dict[str, tuple[str, ...]]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
}
_CONTAINER_FIELDS: Final = (
    ("containers", "container"),
    ("initContainers", "init container"),
    ("ephemeralContainers", "ephemeral container"),
)

Channel = Literal["volume", "projected volume", "env", "envFrom"]


@dataclass(frozen=True)
class SecretRef:
    """One place a pod spec names a Secret (always in the pod's own namespace)."""

    secret: str
    channel: Channel
    container: str | None = None
    volume: str | None = None
    variable: str | None = None

    @property
    def via(self) -> str:
        """Where the reference is, in words: ``env API_KEY of container maker``."""
        if self.channel in ("volume", "projected volume"):
            return f'{self.channel} "{self.volume}"'
        if self.channel == "env":
            return f"env {self.variable} of {self.container}"
        return f"envFrom of {self.container}"


@dataclass
class SecretInfo:
    """A Secret declared in the stack, with what the pack needs to know about it."""

    urn: str | None
    namespace: str
    name: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    problems: Problems
    is_key: bool
    key_uncertain: bool

    @property
    def ref(self) -> str:
        return f"Secret {self.namespace}/{self.name or '<unnamed>'}"


@dataclass
class NamespaceInfo:
    """A Namespace declared in the stack (keyfence declares one per subaccount)."""

    urn: str | None
    name: str
    labels: dict[str, str]
    problems: Problems


@dataclass
class Container:
    """A container of a pod spec, whichever list it came from."""

    name: str
    role: str
    node: Node

    @property
    def ref(self) -> str:
        return f"{self.role} {self.name}"


@dataclass
class Scaler:
    """A HorizontalPodAutoscaler (or KEDA ScaledObject) and the workload it scales."""

    urn: str | None
    kind: str
    namespace: str
    name: str
    target_kind: str | None
    target_name: str | None
    problems: Problems

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name}"


@dataclass
class Workload:
    """Something that runs containers, with its key references resolved against the stack."""

    urn: str | None
    kind: str
    namespace: str
    name: str
    node: Node
    pod_spec: Node
    labels: dict[str, str]
    template_labels: dict[str, str]
    annotation_sources: list[tuple[str, dict[str, str]]]
    containers: list[Container]
    volume_secrets: dict[str, list[str]]
    secret_refs: list[SecretRef]
    problems: Problems
    has_key_path: bool
    key_uncertain: bool = False
    key_refs: list[SecretRef] = field(default_factory=list)
    key_secrets: list[SecretInfo] = field(default_factory=list)

    @property
    def ref(self) -> str:
        """How messages name a workload: ``Deployment alpha/maker``."""
        return f"{self.kind} {self.namespace}/{self.name}"

    @property
    def key_bearing(self) -> bool:
        return self.has_key_path or bool(self.key_refs)

    @property
    def in_scope(self) -> bool:
        """Key-bearing, or possibly so: every policy must look at it."""
        return self.key_bearing or self.key_uncertain

    def label(self, key: str) -> str | None:
        """A label of the workload, falling back to its pod template's."""
        value = self.labels.get(key)
        return value if value is not None else self.template_labels.get(key)

    def annotation_values(self, key: str) -> list[str]:
        """Every distinct value of an annotation across the workload's metadata and templates."""
        out: list[str] = []
        for _, source in self.annotation_sources:
            value = source.get(key)
            if value is not None and value not in out:
                out.append(value)
        return out

    def key_volumes(self) -> set[str]:
        """Names of the pod's volumes that carry an exchange-key Secret."""
        keyed = {s.name for s in self.key_secrets}
        return {volume for volume, secrets in self.volume_secrets.items() if keyed.intersection(secrets)}


@dataclass
class StackIndex:
    """The stack as the policies see it; built once per policy run."""

    config: PackConfig
    workloads: list[Workload] = field(default_factory=list)
    by_name: dict[tuple[str, str, str], list[Workload]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], list[SecretInfo]] = field(default_factory=dict)
    unnamed_key_secrets: list[SecretInfo] = field(default_factory=list)
    namespaces: dict[str, list[NamespaceInfo]] = field(default_factory=dict)
    scalers: list[Scaler] = field(default_factory=list)

    def lookup(self, kind: str, namespace: str, name: str) -> list[Workload]:
        return self.by_name.get((kind, namespace, name), [])


def _attr(resource: object, name: str) -> object:
    try:
        return getattr(resource, name, None)
    except Exception:  # a foreign object may raise anything
        return None


def _urn(resource: object) -> str | None:
    urn = _attr(resource, "urn")
    return urn if isinstance(urn, str) and urn else None


def _metadata(props: Node, fallback_name: object) -> tuple[str, str, Node]:
    metadata = props.get("metadata")
    namespace = metadata.get("namespace").text() or DEFAULT_NAMESPACE
    name = metadata.get("name").text()
    if not name:
        name = fallback_name if isinstance(fallback_name, str) and fallback_name else "<unnamed>"
    return namespace, name, metadata


def _volume_secrets(pod_spec: Node) -> tuple[dict[str, list[str]], list[SecretRef]]:
    by_volume: dict[str, list[str]] = {}
    refs: list[SecretRef] = []
    for position, volume in enumerate(pod_spec.get("volumes").items()):
        volume_name = volume.get("name").text() or f"#{position}"
        names: list[str] = []
        secret_name = volume.dig("secret", "secretName").text()
        if secret_name:
            names.append(secret_name)
            refs.append(SecretRef(secret_name, "volume", volume=volume_name))
        for source in volume.dig("projected", "sources").items():
            projected_name = source.dig("secret", "name").text()
            if projected_name:
                names.append(projected_name)
                refs.append(SecretRef(projected_name, "projected volume", volume=volume_name))
        if names:
            by_volume.setdefault(volume_name, []).extend(names)
    return by_volume, refs


def _containers(pod_spec: Node) -> tuple[list[Container], list[SecretRef]]:
    containers: list[Container] = []
    refs: list[SecretRef] = []
    for list_name, role in _CONTAINER_FIELDS:
        for position, node in enumerate(pod_spec.get(list_name).items()):
            container = Container(node.get("name").text() or f"#{position}", role, node)
            containers.append(container)
            for env in node.get("env").items():
                secret_name = env.dig("valueFrom", "secretKeyRef", "name").text()
                if secret_name:
                    variable = env.get("name").text() or "<unnamed>"
                    refs.append(SecretRef(secret_name, "env", container=container.ref, variable=variable))
            for source in node.get("envFrom").items():
                secret_name = source.dig("secretRef", "name").text()
                if secret_name:
                    refs.append(SecretRef(secret_name, "envFrom", container=container.ref))
    return containers, refs


def _workload(resource: object, kind: str, config: PackConfig) -> Workload:
    problems = Problems()
    props = Node.root(_attr(resource, "props"), problems)
    namespace, name, metadata = _metadata(props, _attr(resource, "name"))
    path = _TEMPLATE_PATH.get(kind)
    template = props.dig(*path) if path else props
    pod_spec = template.get("spec")
    if pod_spec.absent:
        problems.add(f"{pod_spec.path} (the pod spec) is missing")
    annotation_sources = [("metadata", metadata.get("annotations").string_map())]
    if kind == "CronJob":
        annotation_sources.append(
            ("job template", props.dig("spec", "jobTemplate", "metadata", "annotations").string_map())
        )
    if path:
        annotation_sources.append(("pod template", template.dig("metadata", "annotations").string_map()))
    volume_secrets, volume_refs = _volume_secrets(pod_spec)
    containers, env_refs = _containers(pod_spec)
    key_path_key = config.annotations.key_path
    workload = Workload(
        urn=_urn(resource),
        kind=kind,
        namespace=namespace,
        name=name,
        node=props,
        pod_spec=pod_spec,
        labels={},
        template_labels={},
        annotation_sources=annotation_sources,
        containers=containers,
        volume_secrets=volume_secrets,
        secret_refs=volume_refs + env_refs,
        problems=problems,
        has_key_path=any(key_path_key in annotations for _, annotations in annotation_sources),
        # Everything read so far decides whether the workload holds a key.
        key_uncertain=bool(problems),
    )
    workload.labels = metadata.get("labels").string_map()
    if path:
        workload.template_labels = template.dig("metadata", "labels").string_map()
    return workload


def _secret(resource: object, config: PackConfig, kind: str = "Secret") -> SecretInfo:
    problems = Problems()
    props = Node.root(_attr(resource, "props"), problems)
    metadata = props.get("metadata")
    namespace = metadata.get("namespace").text() or DEFAULT_NAMESPACE
    name = metadata.get("name").text() or None
    if kind in DELIVERY_KINDS:  # an operator writes this Secret: its name and metadata are in the spec
        written, metadata = destination(props, kind)
        name = written or None
    if problems:  # a namespace or name that cannot be read cannot be matched to any reference
        name = None
    before = len(problems)
    labels = metadata.get("labels").string_map()
    marker = labels.get(config.labels.exchange_key)
    is_key = marker is not None and marker.strip().lower() == "true"
    if marker is not None and not is_key and marker.strip().lower() != "false":
        problems.add(
            f'metadata.labels["{config.labels.exchange_key}"] is {marker!r}, expected "true" or "false"'
        )
    # Unreadable metadata (unknown during preview, or not an object) hides the labels as well, but its
    # problem was already noted while reading the name, so it adds none here: count it explicitly, or
    # such a Secret would be silently taken for one that holds no key.
    unreadable = not metadata.absent and metadata.mapping() is None
    uncertain = not is_key and (len(problems) > before or unreadable)
    annotations = metadata.get("annotations").string_map()
    return SecretInfo(_urn(resource), namespace, name, labels, annotations, problems, is_key, uncertain)


def _namespace(resource: object) -> NamespaceInfo | None:
    problems = Problems()
    props = Node.root(_attr(resource, "props"), problems)
    name = props.dig("metadata", "name").text()
    if not name:
        return None
    return NamespaceInfo(_urn(resource), name, props.dig("metadata", "labels").string_map(), problems)


def _scaler(resource: object, kind: str) -> Scaler:
    problems = Problems()
    props = Node.root(_attr(resource, "props"), problems)
    namespace, name, _ = _metadata(props, _attr(resource, "name"))
    target = props.dig("spec", "scaleTargetRef")
    target_kind = target.get("kind").text()
    if target_kind is None and kind == "ScaledObject" and not target.get("kind").unknown:
        target_kind = "Deployment"  # KEDA's default target kind
    target_name = target.get("name").text()
    if not target_kind or not target_name:
        problems.add("spec.scaleTargetRef does not name a target kind and name")
    return Scaler(_urn(resource), kind, namespace, name, target_kind, target_name, problems)


def _resolve(workload: Workload, secrets: Mapping[tuple[str, str], list[SecretInfo]]) -> None:
    """Link a workload's Secret references to the key Secrets declared in the stack."""
    seen: set[int] = set()
    for ref in workload.secret_refs:
        for secret in secrets.get((workload.namespace, ref.secret), ()):
            if secret.key_uncertain:
                workload.key_uncertain = True
                workload.problems.extend(f"{secret.ref}: {p}" for p in secret.problems)
                continue
            if not secret.is_key:
                continue
            workload.key_refs.append(ref)
            if id(secret) not in seen:
                seen.add(id(secret))
                workload.key_secrets.append(secret)
                workload.problems.extend(f"{secret.ref}: {p}" for p in secret.problems)


def build_index(resources: Iterable[object], config: PackConfig) -> StackIndex:
    """Index the stack's resources for the policies, in time linear in their number."""
    index = StackIndex(config)
    try:
        items = list(resources)
    except Exception:  # not even a list of resources: nothing to index
        items = []
    for resource in items:
        parsed = parse_type(_attr(resource, "resource_type"))
        if parsed is None:
            continue
        kind = parsed.kind
        if kind in WORKLOAD_KINDS:
            workload = _workload(resource, kind, config)
            index.workloads.append(workload)
            index.by_name.setdefault((kind, workload.namespace, workload.name), []).append(workload)
        elif kind == "Secret" or kind in DELIVERY_KINDS:
            secret = _secret(resource, config, kind)
            if secret.name is not None:
                index.secrets.setdefault((secret.namespace, secret.name), []).append(secret)
            elif secret.is_key or secret.key_uncertain:
                index.unnamed_key_secrets.append(secret)
        elif kind == "Namespace":
            namespace = _namespace(resource)
            if namespace is not None:
                index.namespaces.setdefault(namespace.name, []).append(namespace)
        elif kind in SCALER_KINDS:
            index.scalers.append(_scaler(resource, kind))
    for workload in index.workloads:
        _resolve(workload, index.secrets)
    return index
