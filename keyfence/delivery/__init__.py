"""How a process's key reaches its pod: one module per delivery mode.

- ``pulumi_secret``: the program reads the key and declares an immutable Secret (key in Pulumi state);
- ``vso``: a VaultStaticSecret (HashiCorp Vault Secrets Operator) syncs the key into the Secret;
- ``eso``: an ExternalSecret (External Secrets Operator) does the same.

Every mode yields the name of the Kubernetes Secret the pod mounts, with the same labels and
annotations, so the policy pack judges all three alike.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pulumi

from ..keys import ResolvedKey
from ..spec import OperatorSection
from . import eso, pulumi_secret, vso

OPERATOR_SECRET_SUFFIX = "-key"
"""Operator-synced Secrets keep one name across rotations: the operator rewrites their data."""


@dataclass(frozen=True)
class SecretMeta:
    """What the delivered Secret carries besides the key: labels and annotations."""

    labels: dict[str, str]
    annotations: dict[str, str]


@dataclass
class Delivered:
    """The Secret a pod mounts and the resources that bring it there."""

    secret_name: str
    resources: list[pulumi.Resource] = field(default_factory=list)
    workload_annotations: dict[str, str] = field(default_factory=dict)
    """Annotations the workload needs for this mode (e.g. Stakater Reloader's)."""
    pod_annotations_exclude: Sequence[str] = ()
    """Annotation keys kept off the pod template (the operator restarts pods itself)."""


def role_name(key: ResolvedKey) -> str:
    """The Vault Kubernetes-auth role and policy name of a process (``ProcessEntry.vault_role``)."""
    return key.entry.vault_role


def declare(
    key: ResolvedKey,
    meta: SecretMeta,
    operators: OperatorSection,
    opts: pulumi.ResourceOptions,
) -> Delivered:
    """Declare the delivery of one process's key in the mode its spec entry selects."""
    mode = key.entry.delivery
    if mode == "pulumi-secret":
        secret = pulumi_secret.declare(key, meta.labels, meta.annotations, opts)
        return Delivered(pulumi_secret.secret_name(key.entry.process.name, key.version), [secret])
    name = f"{key.entry.process.name}{OPERATOR_SECRET_SUFFIX}"
    if mode == "vault-secrets-operator":
        resources = vso.declare(key, name, role_name(key), meta.labels, meta.annotations, operators, opts)
        # VSO restarts the workload itself when the key's data changes (hmacSecretData); a version on the
        # pod template would restart it a second time at the next deploy.
        return Delivered(name, resources, pod_annotations_exclude=(vso.VERSION_ANNOTATION_KEY,))
    if mode == "external-secrets":
        resources = eso.declare(key, name, role_name(key), meta.labels, meta.annotations, operators, opts)
        extra = {eso.RELOADER_ANNOTATION: name} if operators.restart == "reloader" else {}
        return Delivered(name, resources, workload_annotations=extra)
    raise ValueError(f"unknown delivery {mode!r}")  # the spec model admits only the three above
