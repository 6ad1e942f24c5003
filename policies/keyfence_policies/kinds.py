"""Which Pulumi resource types the pack looks at, across Kubernetes API versions.

Pulumi names Kubernetes resources ``kubernetes:<group>/<version>:<Kind>`` (the core
group is spelled ``core``); a CustomResource takes its CRD's group and kind, a Patch
resource appends ``Patch`` to the kind it patches and a list resource ``List``. The pack
matches on group and kind, never on the version, so an old ``extensions/v1beta1``
Deployment or a ``batch/v1beta1`` CronJob is held to the same rules as the current one.
Every other resource type is still read: what runs containers is found by shape
(``podspec``), and key material is searched in every string of every resource (``scan``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

PROVIDER_PREFIX: Final = "pulumi:providers:"
"""Type prefix of provider resources (``pulumi:providers:kubernetes``), default providers included."""
KUBERNETES_PROVIDER: Final = f"{PROVIDER_PREFIX}kubernetes"

WORKLOAD_KINDS: Final[tuple[str, ...]] = (
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "ReplicationController",
    "Job",
    "CronJob",
    "Pod",
    "PodTemplate",
    "Rollout",
    "ScaledJob",
)
"""Controllers whose pod-running semantics the pack knows (keyBearingKinds may name them)."""

DEFAULT_KEY_BEARING_KINDS: Final[tuple[str, ...]] = ("Deployment", "StatefulSet", "ReplicaSet", "Pod")
"""Kinds that can be pinned to exactly one running pod; the rest run one pod per node or per run."""

_WORKLOAD_GROUPS: Final[dict[str, frozenset[str]]] = {
    "Deployment": frozenset({"apps", "extensions"}),
    "StatefulSet": frozenset({"apps"}),
    "DaemonSet": frozenset({"apps", "extensions"}),
    "ReplicaSet": frozenset({"apps", "extensions"}),
    "ReplicationController": frozenset({"core"}),
    "Job": frozenset({"batch"}),
    "CronJob": frozenset({"batch"}),
    "Pod": frozenset({"core"}),
    "PodTemplate": frozenset({"core"}),
    "Rollout": frozenset({"argoproj.io"}),
    "ScaledJob": frozenset({"keda.sh"}),
}

TEMPLATE_PATHS: Final[dict[str, tuple[str, ...]]] = {
    "Deployment": ("spec", "template"),
    "StatefulSet": ("spec", "template"),
    "DaemonSet": ("spec", "template"),
    "ReplicaSet": ("spec", "template"),
    "ReplicationController": ("spec", "template"),
    "Job": ("spec", "template"),
    "CronJob": ("spec", "jobTemplate", "spec", "template"),
    "PodTemplate": ("template",),
    "Rollout": ("spec", "template"),
    "ScaledJob": ("spec", "jobTargetRef", "template"),
}
"""Where each known controller keeps its pod template (a Pod is its own template)."""

_OTHER_GROUPS: Final[dict[str, frozenset[str]]] = {
    "Secret": frozenset({"core"}),
    "ConfigMap": frozenset({"core"}),
    "Namespace": frozenset({"core"}),
    "HorizontalPodAutoscaler": frozenset({"autoscaling"}),
    "ScaledObject": frozenset({"keda.sh"}),
    "VaultStaticSecret": frozenset({"secrets.hashicorp.com"}),
    "ExternalSecret": frozenset({"external-secrets.io"}),
    "Role": frozenset({"rbac.authorization.k8s.io"}),
    "ClusterRole": frozenset({"rbac.authorization.k8s.io"}),
    "RoleBinding": frozenset({"rbac.authorization.k8s.io"}),
    "ClusterRoleBinding": frozenset({"rbac.authorization.k8s.io"}),
    "SecretProviderClass": frozenset({"secrets-store.csi.x-k8s.io"}),
}
"""Non-workload kinds the pack reads for what they are, not only for the strings they hold."""

DELIVERY_KINDS: Final[frozenset[str]] = frozenset({"VaultStaticSecret", "ExternalSecret"})
"""What keyfence's operator delivery modes declare in a process: an in-cluster operator writes its Secret."""

SCALER_KINDS: Final[frozenset[str]] = frozenset({"HorizontalPodAutoscaler", "ScaledObject"})
"""Resources that change a workload's replica count behind the program's back."""

Variant = Literal["", "Patch", "List"]


@dataclass(frozen=True)
class ResourceKind:
    """The API group, version and kind of a Kubernetes resource type, and whether it is a Patch or List."""

    group: str
    version: str
    kind: str
    variant: Variant = ""

    @property
    def known(self) -> str | None:
        """The kind's name when the pack knows its semantics in this group, else ``None``."""
        groups = _WORKLOAD_GROUPS.get(self.kind) or _OTHER_GROUPS.get(self.kind)
        return self.kind if groups is not None and self.group in groups else None

    @property
    def workload(self) -> bool:
        """A controller (or Pod) whose pod template the pack knows where to find."""
        groups = _WORKLOAD_GROUPS.get(self.kind)
        return groups is not None and self.group in groups

    @property
    def builtin(self) -> bool:
        """A Kubernetes API group: its kinds that run pods are all known (``WORKLOAD_KINDS``)."""
        return "." not in self.group or self.group.endswith(".k8s.io")

    @property
    def qualified(self) -> str:
        """``group/Kind``: how config names a custom kind."""
        return f"{self.group}/{self.kind}"


def parse_type(resource_type: object) -> ResourceKind | None:
    """The kind of a Kubernetes resource type whose semantics the pack knows, or ``None``."""
    parsed = resource_kind(resource_type)
    if parsed is None or parsed.variant or parsed.known is None:
        return None
    return parsed


def resource_kind(resource_type: object) -> ResourceKind | None:
    """The group, version and kind of any Kubernetes resource type, or ``None`` for other providers."""
    if not isinstance(resource_type, str):
        return None
    parts = resource_type.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes" or not parts[2]:
        return None
    group, _, version = parts[1].rpartition("/")
    if not group or not version:
        return None
    kind = parts[2]
    variant: Variant = ""
    if kind.endswith("Patch") and kind[:1].isupper() and len(kind) > 5:
        kind, variant = kind[:-5], "Patch"
    elif kind.endswith("List") and kind[:1].isupper() and len(kind) > 4:
        kind, variant = kind[:-4], "List"
    return ResourceKind(group=group, version=version, kind=kind, variant=variant)
