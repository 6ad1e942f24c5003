"""Who may read key Secrets through the Kubernetes API: Roles, ClusterRoles and their bindings.

Reading a Secret over the API is mounting it by other means: a pod whose service account
may ``get``, ``list`` or ``watch`` a key Secret can sign with the key beside its process.
A rule grants that when its API groups cover the core group, its resources cover
``secrets`` and its verbs a read verb (wildcards included), and its ``resourceNames``
are empty (every Secret of the namespace, or of the cluster) or name a key Secret.
Bindings to the built-in ``cluster-admin``, ``admin`` and ``edit`` ClusterRoles grant the
same.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

from .objects import StackObject
from .props import Node

READ_VERBS: Final = frozenset({"get", "list", "watch", "*"})
READS_EVERY_SECRET: Final = frozenset({"cluster-admin", "admin", "edit"})
"""Built-in ClusterRoles that read every Secret where they are bound."""


@dataclass
class Grant:
    """A Role or ClusterRole that lets someone read Secrets."""

    obj: StackObject
    cluster: bool
    names: set[str] | None
    """The Secrets it may read by name; None: every Secret in its scope."""
    verbs: set[str]

    @property
    def ref(self) -> str:
        return (
            f"ClusterRole {self.obj.name}" if self.cluster else f"Role {self.obj.namespace}/{self.obj.name}"
        )


@dataclass
class Binding:
    """A RoleBinding or ClusterRoleBinding, with the role it names and its subjects in words."""

    obj: StackObject
    cluster: bool
    role_kind: str | None
    role_name: str | None
    subjects: list[str]

    @property
    def ref(self) -> str:
        return (
            f"ClusterRoleBinding {self.obj.name}"
            if self.cluster
            else f"RoleBinding {self.obj.namespace}/{self.obj.name}"
        )


@dataclass
class Rbac:
    """Every Secret-reading grant and every binding of the stack."""

    grants: list[Grant] = field(default_factory=list)
    bindings: list[Binding] = field(default_factory=list)
    unreadable: list[StackObject] = field(default_factory=list)

    def add(self, obj: StackObject) -> None:
        kind = obj.kind
        before = len(obj.problems)
        if kind in ("Role", "ClusterRole"):
            grant = _grant(obj, kind == "ClusterRole")
            if grant is not None:
                self.grants.append(grant)
        else:
            self.bindings.append(_binding(obj, kind == "ClusterRoleBinding"))
        if len(obj.problems) > before:
            self.unreadable.append(obj)

    def grants_named(self, kind: str | None, name: str | None, namespace: str) -> list[Grant]:
        return [
            g
            for g in self.grants
            if g.obj.name == name
            and (
                (kind == "ClusterRole" and g.cluster)
                or (kind == "Role" and not g.cluster and g.obj.namespace == namespace)
            )
        ]


def _covers(values: list[str], wanted: str) -> bool:
    return "*" in values or wanted in values


def _grant(obj: StackObject, cluster: bool) -> Grant | None:
    names: set[str] | None = set()
    verbs: set[str] = set()
    for rule in obj.props.get("rules").items():
        groups = rule.get("apiGroups").strings()
        resources = rule.get("resources").strings()
        rule_verbs = {v.lower() for v in rule.get("verbs").strings()}
        if not (_covers(groups, "") and (_covers(resources, "secrets") or "secrets/*" in resources)):
            continue
        reading = rule_verbs & READ_VERBS
        if not reading:
            continue
        verbs |= reading
        listed = rule.get("resourceNames").strings()
        if not listed or "list" in reading or "watch" in reading or "*" in reading:
            names = None  # list and watch ignore resourceNames for collections: every Secret
        elif names is not None:
            names.update(listed)
    if not verbs:
        return None
    return Grant(obj, cluster, names, verbs)


def _subject(subject: Node, namespace: str) -> str:
    kind = subject.get("kind").text() or "subject"
    name = subject.get("name").text() or "<unnamed>"
    if kind == "ServiceAccount":
        return f"ServiceAccount {subject.get('namespace').text() or namespace}/{name}"
    return f"{kind} {name}"


def _binding(obj: StackObject, cluster: bool) -> Binding:
    role = obj.props.get("roleRef")
    subjects = [_subject(s, obj.namespace) for s in obj.props.get("subjects").items()]
    return Binding(obj, cluster, role.get("kind").text(), role.get("name").text(), subjects)
