"""Which Pulumi resource types the pack looks at, across Kubernetes API versions.

Pulumi names Kubernetes resources ``kubernetes:<group>/<version>:<Kind>`` (the core
group is spelled ``core``). The pack matches on group and kind, never on the version,
so an old ``extensions/v1beta1`` Deployment or a ``batch/v1beta1`` CronJob is held to
the same rules as the current one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

WORKLOAD_KINDS: Final[tuple[str, ...]] = (
    "Deployment",
    "StatefulSet",
    "DaemonSet",
    "ReplicaSet",
    "Job",
    "CronJob",
    "Pod",
)
"""Everything that runs containers and so may hold an exchange key."""

DEFAULT_KEY_BEARING_KINDS: Final[tuple[str, ...]] = ("Deployment", "StatefulSet", "ReplicaSet", "Pod")
"""Kinds that can be pinned to exactly one running pod; the rest run one pod per node or per run."""

_GROUPS: Final[dict[str, frozenset[str]]] = {
    "Deployment": frozenset({"apps", "extensions"}),
    "StatefulSet": frozenset({"apps"}),
    "DaemonSet": frozenset({"apps", "extensions"}),
    "ReplicaSet": frozenset({"apps", "extensions"}),
    "Job": frozenset({"batch"}),
    "CronJob": frozenset({"batch"}),
    "Pod": frozenset({"core"}),
    "Secret": frozenset({"core"}),
    "Namespace": frozenset({"core"}),
    "HorizontalPodAutoscaler": frozenset({"autoscaling"}),
    "ScaledObject": frozenset({"keda.sh"}),
    "VaultStaticSecret": frozenset({"secrets.hashicorp.com"}),
    "ExternalSecret": frozenset({"external-secrets.io"}),
}

DELIVERY_KINDS: Final[frozenset[str]] = frozenset({"VaultStaticSecret", "ExternalSecret"})
"""Resources that make an in-cluster operator write a Secret (see ``delivered``)."""

SCALER_KINDS: Final[frozenset[str]] = frozenset({"HorizontalPodAutoscaler", "ScaledObject"})
"""Resources that change a workload's replica count behind the program's back."""


@dataclass(frozen=True)
class ResourceKind:
    """The API group, version and kind of a Kubernetes resource type."""

    group: str
    version: str
    kind: str


def parse_type(resource_type: object) -> ResourceKind | None:
    """The kind of a Kubernetes resource type the pack cares about, or ``None``."""
    if not isinstance(resource_type, str):
        return None
    parts = resource_type.split(":")
    if len(parts) != 3 or parts[0] != "kubernetes":
        return None
    group, _, version = parts[1].rpartition("/")
    kind = parts[2]
    if kind not in _GROUPS or group not in _GROUPS[kind]:
        return None
    return ResourceKind(group=group, version=version, kind=kind)
