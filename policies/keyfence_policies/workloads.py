"""One pass over the stack: workloads, the keys they can reach, and every other holder of a key.

Policies run as stack validations, so every policy sees every resource. This module
builds, once per policy run, the index they all work from, in four linear steps:

1. ``objects.expand``: list items opened, patches merged onto their targets;
2. structure: workloads (known controllers by kind, anything else by the shape of a pod
   spec), Secrets/ConfigMaps/SecretProviderClasses, Namespaces, autoscalers, RBAC; key
   Secrets' material is hashed into the key book;
3. the string scan (``scan``): every string of every resource is hashed once and searched
   once for a known key's Vault path;
4. resolution: each workload's references are linked to what they name, per container.

Anything the index cannot read is recorded as a problem on the record it belongs to; a
workload whose key-bearing-ness depends on an unreadable value is marked ``key_uncertain``
so that policies report it instead of skipping it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Final

from . import labels as L
from .carriers import SecretInfo, destinations, read_config_map, read_provider_class, read_secret
from .config import PackConfig
from .keybook import Key, KeyBook
from .kinds import DELIVERY_KINDS, PROVIDER_PREFIX, SCALER_KINDS, TEMPLATE_PATHS
from .objects import DEFAULT_NAMESPACE, ProviderRef, StackObject, expand
from .podspec import Container, PodSpec, SecretRef, find_pod_specs, read_pod_spec
from .props import Node, Problems
from .rbac import Rbac
from .routes import by_name, key_secret_names, sweeps
from .scan import Hit, Scanner, Strings
from .sdk_adapter import prepared

AGENT_PREFIX: Final = "vault.hashicorp.com/agent-inject"
AGENT_CONTAINERS: Final = "vault.hashicorp.com/agent-inject-containers"
_RBAC_KINDS: Final = frozenset({"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"})

__all__ = [
    "DEFAULT_NAMESPACE",
    "Container",
    "SecretInfo",
    "SecretRef",
    "StackIndex",
    "Workload",
    "build_index",
]


@dataclass
class NamespaceInfo:
    """A Namespace declared in the stack (keyfence declares one per subaccount)."""

    urn: str | None
    name: str
    labels: dict[str, str]
    problems: Problems
    fleet_subaccount: str | None = None


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


@dataclass(frozen=True)
class Holding:
    """A key a workload holds in its own fields: its material, or its Vault path."""

    key: Key
    hit: Hit
    container: Container | None
    injected: bool = False
    """Named in a Vault Agent injector annotation: the agent writes it into the pod's containers."""


@dataclass
class Copy:
    """Key material, or a Vault route to a key, somewhere other than the key's own Secret."""

    ref: str
    urn: str | None
    key: Key
    hit: Hit
    route: bool = False
    via: str | None = None
    """For a route found by ``routes``: what the resource names that leads to the key, in words."""


@dataclass
class Workload:
    """Something that runs containers, with its key references resolved against the stack."""

    obj: StackObject
    kind: str
    namespace: str
    name: str
    node: Node
    pods: list[PodSpec]
    labels: dict[str, str]
    template_labels: dict[str, str]
    annotation_sources: list[tuple[str, dict[str, str]]]
    problems: Problems
    has_key_path: bool
    known: bool
    """Its pod-running semantics are known (a built-in controller, a Rollout or a ScaledJob)."""
    key_uncertain: bool = False
    key_refs: list[SecretRef] = field(default_factory=list)
    key_secrets: list[SecretInfo] = field(default_factory=list)
    carriers: list[SecretInfo] = field(default_factory=list)
    holdings: list[Holding] = field(default_factory=list)
    undeclared: list[SecretRef] = field(default_factory=list)
    """References, in a subaccount namespace, to Secrets or SecretProviderClasses the stack lacks."""
    workload_ref: tuple[str, str] | None = None
    """A Rollout's ``spec.workloadRef`` (kind, name): it runs that workload's pod template."""

    @property
    def urn(self) -> str | None:
        return self.obj.urn

    @property
    def ref(self) -> str:
        """How messages name a workload: ``Deployment alpha/maker``."""
        return self.obj.ref

    @property
    def containers(self) -> list[Container]:
        return [c for pod in self.pods for c in pod.containers]

    @property
    def pod_spec(self) -> Node:
        return self.pods[0].node if self.pods else self.node.get("spec")

    @property
    def key_bearing(self) -> bool:
        return self.has_key_path or bool(self.key_refs) or bool(self.holdings)

    @property
    def in_scope(self) -> bool:
        """Key-bearing, or possibly so: every policy must look at it."""
        return self.key_bearing or self.key_uncertain

    def reachable_keys(self) -> list[Key]:
        """Every key the workload can reach, once each."""
        out: list[Key] = []
        for carrier in self.carriers:
            for key in (carrier.key, *carrier.held):
                if key is not None and key not in out:
                    out.append(key)
        for holding in self.holdings:
            if holding.key not in out:
                out.append(holding.key)
        return out

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
        """Names of the pod's volumes that carry an exchange key."""
        keyed = {(c.kind, c.name) for c in self.carriers}
        return {
            volume
            for pod in self.pods
            for volume, refs in pod.volume_sources.items()
            if any((r.source, r.secret) in keyed for r in refs)
        }


@dataclass
class StackIndex:
    """The stack as the policies see it; built once per policy run."""

    config: PackConfig
    book: KeyBook
    workloads: list[Workload] = field(default_factory=list)
    by_name: dict[tuple[str, str, str], list[Workload]] = field(default_factory=dict)
    secrets: dict[tuple[str, str], list[SecretInfo]] = field(default_factory=dict)
    carriers: dict[tuple[str, str, str], list[SecretInfo]] = field(default_factory=dict)
    unnamed_key_secrets: list[SecretInfo] = field(default_factory=list)
    namespaces: dict[str, list[NamespaceInfo]] = field(default_factory=dict)
    scalers: list[Scaler] = field(default_factory=list)
    copies: list[Copy] = field(default_factory=list)
    rbac: Rbac = field(default_factory=Rbac)
    subaccount_namespaces: set[str] = field(default_factory=set)
    orphan_patches: list[StackObject] = field(default_factory=list)
    unscanned: list[StackObject] = field(default_factory=list)
    """Resources nested too deeply to search for key material."""
    providers: list[StackObject] = field(default_factory=list)
    """The stack's provider resources (``pulumi:providers:*``), default providers included."""
    provider_by_urn: dict[str, ProviderRef | None] = field(default_factory=dict)
    """Each resource's provider, as the engine named it (``None``: not named)."""

    def lookup(self, kind: str, namespace: str, name: str) -> list[Workload]:
        return self.by_name.get((kind, namespace, name), [])

    def key_secrets(self) -> Iterator[SecretInfo]:
        for secrets in self.secrets.values():
            yield from (s for s in secrets if s.is_key)


def _annotations(node: Node) -> dict[str, str]:
    return node.dig("metadata", "annotations").string_map()


def _workload(
    obj: StackObject, templates: list[tuple[Node, Node]], known: bool, config: PackConfig
) -> Workload:
    props, problems = obj.props, obj.problems
    metadata = obj.metadata
    annotation_sources = [("metadata", metadata.get("annotations").string_map())]
    if obj.kind == "CronJob":
        annotation_sources.append(("job template", _annotations(props.dig("spec", "jobTemplate"))))
    pods: list[PodSpec] = []
    template_labels: dict[str, str] = {}
    for template, pod_spec in templates:
        own = {} if template is props else _annotations(template)
        if template is not props:
            annotation_sources.append(("pod template", own))
            template_labels.update(template.dig("metadata", "labels").string_map())
        pods.append(read_pod_spec(pod_spec, own if template is not props else annotation_sources[0][1]))
    key_path_key = config.annotations.key_path
    return Workload(
        obj=obj,
        kind=obj.kind,
        namespace=obj.namespace,
        name=obj.name,
        node=props,
        pods=pods,
        labels=metadata.get("labels").string_map(),
        template_labels=template_labels,
        annotation_sources=annotation_sources,
        problems=problems,
        has_key_path=any(key_path_key in annotations for _, annotations in annotation_sources),
        known=known,
        # Everything read so far decides whether the workload holds a key.
        key_uncertain=bool(problems),
    )


def _known_workload(obj: StackObject, config: PackConfig) -> Workload:
    path = TEMPLATE_PATHS.get(obj.kind)
    template = obj.props.dig(*path) if path else obj.props
    pod_spec = template.get("spec")
    workload_ref = obj.props.dig("spec", "workloadRef") if obj.kind == "Rollout" else None
    if workload_ref is not None and template.absent and not workload_ref.absent:
        workload = _workload(obj, [], True, config)
        kind, name = workload_ref.get("kind").text(), workload_ref.get("name").text()
        if kind and name:
            workload.workload_ref = (kind, name)
        else:
            obj.problems.add("spec.workloadRef does not name a kind and name")
            workload.key_uncertain = True
        return workload
    if pod_spec.absent:
        if not obj.orphan_patch:  # a patch may leave the pod spec alone; its target is judged apart
            obj.problems.add(f"{pod_spec.path} (the pod spec) is missing")
        return _workload(obj, [], True, config)
    return _workload(obj, [(template, pod_spec)], True, config)


def _scaler(obj: StackObject) -> Scaler:
    target = obj.props.dig("spec", "scaleTargetRef")
    target_kind = target.get("kind").text()
    if target_kind is None and obj.kind == "ScaledObject" and not target.get("kind").unknown:
        target_kind = "Deployment"  # KEDA's default target kind
    target_name = target.get("name").text()
    if not target_kind or not target_name:
        obj.problems.add("spec.scaleTargetRef does not name a target kind and name")
    return Scaler(obj.urn, obj.kind, obj.namespace, obj.name, target_kind, target_name, obj.problems)


class _Builder:
    """The four steps of :func:`build_index`, sharing one index and one scanner."""

    def __init__(self, config: PackConfig, resources: object = None) -> None:
        self.resources = resources
        """The stack as the policy was handed it: strings prepared at Analyze time come with it."""
        self.index = StackIndex(config, KeyBook(config))
        keys = config.annotations
        self.scanner = Scanner(self.index.book, frozenset({keys.key_path, keys.vault_mount}))
        self.objects: list[tuple[StackObject, Workload | SecretInfo | None]] = []

    def add_carrier(self, carrier: SecretInfo) -> None:
        if carrier.name is not None:
            self.index.carriers.setdefault((carrier.kind, carrier.namespace, carrier.name), []).append(
                carrier
            )

    def structure(self, obj: StackObject) -> None:
        index, config = self.index, self.index.config
        kind, known = obj.kind, obj.known_kind
        record: Workload | SecretInfo | None = None
        if obj.orphan_patch:
            index.orphan_patches.append(obj)
        if obj.urn is not None:
            index.provider_by_urn.setdefault(obj.urn, obj.provider)
        if obj.type.startswith(PROVIDER_PREFIX):
            index.providers.append(obj)
        if known == "Secret":
            secret = record = read_secret(obj, config, index.book)
            if secret.name is not None:
                index.secrets.setdefault((secret.namespace, secret.name), []).append(secret)
                self.add_carrier(secret)
            elif secret.is_key or secret.key_uncertain:
                index.unnamed_key_secrets.append(secret)
        elif known == "ConfigMap":
            record = read_config_map(obj)
            self.add_carrier(record)
        elif known == "SecretProviderClass":
            record, _ = read_provider_class(obj)
            self.add_carrier(record)
        elif known == "Namespace":
            name = obj.metadata.get("name").text()
            if name:
                labels = obj.metadata.get("labels").string_map()
                info = NamespaceInfo(obj.urn, name, labels, obj.problems, obj.fleet_subaccount)
                index.namespaces.setdefault(name, []).append(info)
        elif known in SCALER_KINDS:
            index.scalers.append(_scaler(obj))
        elif known in _RBAC_KINDS:
            index.rbac.add(obj)
        elif obj.rtype is not None and obj.rtype.workload:
            record = _known_workload(obj, config)
        elif obj.rtype is not None and known is None and not obj.rtype.builtin:
            templates = list(find_pod_specs(obj.props))
            if templates:
                record = _workload(obj, templates, False, config)
        if isinstance(record, Workload):
            index.workloads.append(record)
            index.by_name.setdefault((kind, record.namespace, record.name), []).append(record)
        self.objects.append((obj, record))

    def homes(self) -> None:
        """A key's material belongs in one Secret: its process's fleet Secret, else the first holding it."""
        homes: dict[int, SecretInfo] = {}
        for secret in self.index.key_secrets():
            if secret.origin is not None:
                continue  # written by a secrets operator: reported as the operator's route to the key
            for key in secret.held:
                if key.process is not None:
                    home = secret.fleet_process == key.process
                else:
                    home = homes.setdefault(id(key), secret) is secret
                if not home:
                    found = [h for h in secret.hits if h.key is key and h.how == "material"]
                    hit = found[0] if found else Hit(key, "material", "data")
                    self.index.copies.append(Copy(secret.ref, secret.urn, key, hit))

    def subaccount_namespaces(self) -> None:
        index = self.index
        names = index.subaccount_namespaces
        for name, namespaces in index.namespaces.items():
            if any(n.fleet_subaccount or index.config.labels.subaccount in n.labels for n in namespaces):
                names.add(name)
        for secret in index.key_secrets():
            names.add(secret.namespace)
        for key in index.book.keys:
            if key.process:
                names.add(key.namespace or key.process.split("/")[0])

    def scan(self, obj: StackObject, record: Workload | SecretInfo | None) -> None:
        skip = (
            frozenset({"stringData", "data"})
            if isinstance(record, SecretInfo) and record.fleet
            else frozenset()
        )
        self.scanner.truncated = False
        strings = prepared(self.resources, obj.raw)
        if isinstance(strings, Strings):
            hits = self.scanner.scan_prepared(strings, skip=skip)
        else:
            hits = self.scanner.scan(obj.raw, skip=skip)
        if self.scanner.truncated:
            self.index.unscanned.append(obj)
        if not hits:
            return
        if isinstance(record, Workload):
            self._hold(record, hits)
        elif isinstance(record, SecretInfo):
            record.hits.extend(hits)
            material = [h for h in hits if h.how == "material"]
            if record.key is None:
                record.key = (material or hits)[0].key
            record.is_key = record.is_key or record.kind == "Secret"
            for hit in material:
                if hit.key not in record.held:
                    record.held.append(hit.key)
        for hit in hits:
            route = hit.how == "path" and not isinstance(record, Workload)
            secret = isinstance(record, SecretInfo) and record.kind == "Secret"
            # keyfence's operator delivery: the key's own fleet process asks an operator for its key.
            delivery = (
                route
                and (obj.known_kind in DELIVERY_KINDS or obj.type == L.LEDGER_CLAIM_RECORD)
                and _own_process(obj, hit.key)
            )
            if ((hit.how == "material" and not secret) or route) and not delivery:
                self.index.copies.append(Copy(obj.ref, obj.urn, hit.key, hit, route=route))
            if route and obj.known_kind not in ("Secret", "ConfigMap") and not isinstance(record, Workload):
                for destination in destinations(obj):
                    self._synced(obj, destination, hit.key, own=delivery)

    def routes(self) -> None:
        """Routes to a key by a swept Vault folder or by its Secret's name (``routes``)."""
        book, names = self.index.book, key_secret_names(self.index.key_secrets())
        for obj, record in self.objects:
            if isinstance(record, Workload) or (isinstance(record, SecretInfo) and record.is_key):
                continue
            for route in [*sweeps(obj, book), *by_name(obj, names)]:
                hit = Hit(route.key, "path", route.where)
                self.index.copies.append(Copy(obj.ref, obj.urn, route.key, hit, route=True, via=route.via))
                if isinstance(record, SecretInfo) and record.kind == "Secret":
                    # A replicator or reflector fills this Secret with the key it names.
                    record.is_key, record.key = True, record.key or route.key
                    record.origin = record.origin or f"copied by what follows its {route.where}"
                    if route.key not in record.held:
                        record.held.append(route.key)
                elif record is None:
                    for destination in destinations(obj):
                        self._synced(obj, destination, route.key)

    def _synced(self, obj: StackObject, name: str, key: Key, *, own: bool = False) -> None:
        """A Secret a secrets operator writes from Vault: it holds the key whether declared or not.

        ``own``: the operator object is its fleet process's own delivery, so what it writes is that
        process's key Secret (its home), not a second route to the key.
        """
        found = self.index.secrets.get((obj.namespace, name))
        for secret in found or ():
            secret.is_key, secret.key = True, secret.key or key
            if key not in secret.held:
                secret.held.append(key)
        if not found:
            synced = SecretInfo(obj.urn, obj.namespace, name, {}, {}, Problems(), True, False, key=key)
            synced.held.append(key)
            synced.origin = f"written by {obj.ref}"
            if own:
                synced.fleet_process = obj.fleet_process
            self.index.secrets.setdefault((obj.namespace, name), []).append(synced)
            self.add_carrier(synced)

    def _hold(self, workload: Workload, hits: list[Hit]) -> None:
        for hit in hits:
            container = next(
                (
                    c
                    for pod in workload.pods
                    for c in pod.containers
                    if hit.where.startswith(c.node.path + ".") or hit.where.startswith(c.node.path + "[")
                ),
                None,
            )
            injected = container is None and f"annotations.{AGENT_PREFIX}" in hit.where
            workload.holdings.append(Holding(hit.key, hit, container, injected))

    def resolve(self, workload: Workload) -> None:
        """Link a workload's references to the key carriers declared in (or synced into) the stack."""
        index = self.index
        if workload.workload_ref is not None:
            kind, name = workload.workload_ref
            for target in index.lookup(kind, workload.namespace, name):
                workload.pods.extend(target.pods)
        subaccount = workload.namespace in index.subaccount_namespaces
        for pod in workload.pods:
            for ref in pod.refs:
                found = index.carriers.get((ref.source, workload.namespace, ref.secret))
                if not found:
                    if subaccount and ref.source != "ConfigMap":
                        workload.undeclared.append(ref)
                    continue
                for carrier in found:
                    self._link(workload, ref, carrier)

    def _link(self, workload: Workload, ref: SecretRef, carrier: SecretInfo) -> None:
        if carrier.key_uncertain:
            workload.key_uncertain = True
            workload.problems.extend(f"{carrier.ref}: {p}" for p in carrier.problems)
            return
        if not (carrier.is_key or carrier.held or carrier.hits):
            return
        workload.key_refs.append(ref)
        if carrier not in workload.carriers:
            workload.carriers.append(carrier)
            if carrier.kind == "Secret":
                workload.key_secrets.append(carrier)
            workload.problems.extend(f"{carrier.ref}: {p}" for p in carrier.problems)


def build_index(resources: Iterable[object], config: PackConfig) -> StackIndex:
    """Index the stack's resources for the policies, in time linear in their number."""
    builder = _Builder(config, resources)
    try:
        items = list(resources)
    except Exception:  # not even a list of resources: nothing to index
        items = []
    for obj in expand(items):
        builder.structure(obj)
    builder.subaccount_namespaces()
    for obj, record in builder.objects:
        builder.scan(obj, record)
    builder.routes()
    builder.homes()
    for workload in builder.index.workloads:
        builder.resolve(workload)
    return builder.index


def _own_process(obj: StackObject, key: Key) -> bool:
    """Whether ``obj`` is declared by the fleet process component that holds ``key`` (its URN says so)."""
    return obj.fleet_process is not None and obj.fleet_process == key.process
