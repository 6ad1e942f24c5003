"""Kubernetes resources for a verified fleet: a Namespace per subaccount, a hardened pod per process.

Each process gets its own ServiceAccount, its own key Secret (declared by the program, or
synced by an operator: ``delivery``) and one single-writer workload (``workload``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from keyfence_policies import labels as L
from keyfence_policies.permissions import format_permissions

from . import delivery, workload
from .claims import Claim, current_stack
from .delivery.pulumi_secret import NOT_FETCHED, secret_name
from .keys import ResolvedKey
from .spec import FleetSpec, OperatorSection, ProcessEntry, Subaccount
from .workload import KEY_FILE_MODE, KEY_VOLUME, RUN_AS

__all__ = [
    "KEY_FILE_MODE",
    "KEY_VOLUME",
    "NOT_FETCHED",
    "RUN_AS",
    "Fleet",
    "ProcessResources",
    "SubaccountResources",
    "declare",
    "declare_fleet",
    "key_annotations",
    "process_labels",
    "secret_name",
]


def process_labels(entry: ProcessEntry) -> dict[str, str]:
    """Labels every resource of a process carries (recommended app labels plus keyfence's own)."""
    sub, proc = entry.subaccount, entry.process
    return {
        "app.kubernetes.io/name": proc.name,
        "app.kubernetes.io/instance": f"{sub.name}-{proc.name}",
        "app.kubernetes.io/component": proc.role,
        "app.kubernetes.io/part-of": sub.name,
        "app.kubernetes.io/managed-by": L.MANAGED_BY,
        L.SUBACCOUNT: sub.name,
        L.PROCESS: proc.name,
        L.ROLE: proc.role,
        L.VENUE: sub.venue,
        L.MASTER: _bool(sub.master),
    }


def key_annotations(key: ResolvedKey) -> dict[str, str]:
    """The key facts the policy pack compares; only values known before declaration, as plain strings."""
    out = {
        L.KEY_PATH: key.path,
        L.VAULT_MOUNT: key.mount,
        L.ALLOW_WITHDRAWALS: _bool(key.entry.process.allow_withdrawals),
    }
    if key.fingerprint:
        out[L.FINGERPRINT] = key.fingerprint
    if key.version is not None:
        out[L.KEY_VERSION] = str(key.version)
    if key.permissions is not None:
        out[L.PERMISSIONS] = format_permissions(key.permissions)
    if key.ledger_conflict:
        out[L.LEDGER_CONFLICT] = key.ledger_conflict
    return out


def _bool(value: bool) -> str:
    return "true" if value else "false"


class ProcessResources(pulumi.ComponentResource):
    """One process: ServiceAccount, the delivery of its key, and its single-writer hardened workload."""

    def __init__(
        self,
        key: ResolvedKey,
        namespace: k8s.core.v1.Namespace,
        master_subaccounts: frozenset[str],
        operators: OperatorSection,
        stack: str,
        opts: pulumi.ResourceOptions,
    ) -> None:
        entry = key.entry
        super().__init__(L.PROCESS_COMPONENT, entry.ref, None, opts)
        self.ref = entry.ref
        # The key is claimed in the ledger before anything that carries or uses it exists.
        self.claim = Claim(key, stack, pulumi.ResourceOptions(parent=self))
        child = pulumi.ResourceOptions(parent=self, depends_on=[namespace, self.claim])
        namespace_name = entry.subaccount.name
        proc = entry.process
        labels = process_labels(entry)
        annotations = key_annotations(key)

        self.service_account = k8s.core.v1.ServiceAccount(
            entry.ref,
            metadata={"name": proc.name, "namespace": namespace_name, "labels": labels},
            automount_service_account_token=False,
            opts=child,
        )

        secret_labels = {
            **labels,
            L.EXCHANGE_KEY: "true",
            # The key's own subaccount and venue (Vault's word): the policy pack compares them with the
            # workload's labels, so a key from another subaccount is caught even in a hand-written stack.
            L.SUBACCOUNT: key.subaccount,
            L.VENUE: key.venue,
            L.MASTER: _bool(key.subaccount in master_subaccounts),
        }
        if key.fingerprint:
            secret_labels[L.FINGERPRINT_LABEL] = key.fingerprint[: L.FINGERPRINT_LABEL_LENGTH]
        delivered = delivery.declare(
            key,
            delivery.SecretMeta(secret_labels, annotations),
            operators,
            pulumi.ResourceOptions.merge(child, pulumi.ResourceOptions(depends_on=[self.service_account])),
        )
        self.delivery = delivered
        pod_annotations = {k: v for k, v in annotations.items() if k not in delivered.pod_annotations_exclude}
        self.workload, self.extras = workload.declare(
            key,
            delivered.secret_name,
            labels,
            {**annotations, **delivered.workload_annotations},
            pod_annotations,
            [namespace, self.claim, self.service_account, *delivered.resources],
            self,
        )

        self.outputs: dict[str, Any] = {
            "namespace": namespace_name,
            "deployment": proc.name,
            "workload": entry.workload,
            "delivery": entry.delivery,
            "key_path": key.vault_ref,
            "fingerprint": key.fingerprint,
            "version": key.version,
        }
        self.resources: list[pulumi.Resource] = [
            self,
            self.claim,
            self.service_account,
            *delivered.resources,
            self.workload,
            *self.extras,
        ]
        """Every resource of this process, this component first."""
        self.register_outputs(self.outputs)


class SubaccountResources(pulumi.ComponentResource):
    """One subaccount (one strategy): a labelled Namespace, default-deny ingress, and its processes."""

    def __init__(
        self,
        sub: Subaccount,
        keys: list[ResolvedKey],
        master_subaccounts: frozenset[str],
        operators: OperatorSection,
        stack: str,
    ) -> None:
        super().__init__(L.SUBACCOUNT_COMPONENT, sub.name, None, None)
        ns_labels = {
            L.SUBACCOUNT: sub.name,
            L.VENUE: sub.venue,
            L.MASTER: _bool(sub.master),
            "app.kubernetes.io/managed-by": L.MANAGED_BY,
            # Our pods meet the 'restricted' Pod Security Standard; enforce it for anything else too.
            "pod-security.kubernetes.io/enforce": "restricted",
        }
        self.namespace = k8s.core.v1.Namespace(
            sub.name,
            metadata={"name": sub.name, "labels": ns_labels},
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.network_policy = k8s.networking.v1.NetworkPolicy(
            f"{sub.name}/default-deny-ingress",
            metadata={"name": "default-deny-ingress", "namespace": sub.name, "labels": ns_labels},
            spec={"pod_selector": {}, "policy_types": ["Ingress"]},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.namespace]),
        )
        opts = pulumi.ResourceOptions(parent=self)
        self.processes = [
            ProcessResources(key, self.namespace, master_subaccounts, operators, stack, opts) for key in keys
        ]
        self.resources: list[pulumi.Resource] = [self, self.namespace, self.network_policy]
        """Every resource of this subaccount and its processes, this component first."""
        for process in self.processes:
            self.resources.extend(process.resources)
        self.register_outputs({"namespace": sub.name, "processes": [p.ref for p in self.processes]})


@dataclass(frozen=True)
class Fleet:
    """What :func:`declare` declared: the per-process facts and every resource."""

    outputs: dict[str, dict[str, Any]]
    """Per process (``SUBACCOUNT/PROCESS``): namespace, workload, key path, fingerprint, version."""
    resources: tuple[pulumi.Resource, ...]

    async def registered(self) -> None:
        """Return once the engine has answered every registration of the fleet.

        Why: a synchronous Python program leaves the SDK's shutdown loop
        (``pulumi.runtime.stack.wait_for_rpcs``) to wait for it, and that loop calls
        ``asyncio.wait(FIRST_COMPLETED)`` over every pending output (about 57 per process) each
        time one resolves: time quadratic in the fleet when the engine answers registrations one
        by one. At 1000 processes that loop was 44% of the program's CPU under ``keyfence check``
        (README, Performance). Awaiting each resource's URN here is one callback per resource.
        Pass it to ``pulumi.run`` (Pulumi >= 3.254.0). Failures are not raised here: the SDK
        reports a failed registration itself, as it would have without this wait.
        """
        await asyncio.gather(*(r.urn.future() for r in self.resources), return_exceptions=True)


def declare(spec: FleetSpec, keys: list[ResolvedKey], stack: str | None = None) -> Fleet:
    """Declare every resource of a fleet whose keys are already resolved and verified.

    ``stack`` (``org/project/stack``) is who claims the keys in the ledger; by default the
    stack the program runs in. Exports the per-process facts as the ``processes`` stack output;
    never key material.
    """
    stack = stack or current_stack()
    masters = frozenset(s.name for s in spec.subaccounts if s.master)
    by_sub: dict[str, list[ResolvedKey]] = {s.name: [] for s in spec.subaccounts}
    for key in keys:
        by_sub[key.entry.subaccount.name].append(key)
    outputs: dict[str, dict[str, Any]] = {}
    resources: list[pulumi.Resource] = []
    for sub in spec.subaccounts:
        component = SubaccountResources(sub, by_sub[sub.name], masters, spec.operators, stack)
        resources.extend(component.resources)
        for key, proc in zip(by_sub[sub.name], component.processes, strict=True):
            outputs[key.entry.ref] = proc.outputs
    pulumi.export("processes", outputs)
    return Fleet(outputs, tuple(resources))


def declare_fleet(
    spec: FleetSpec, keys: list[ResolvedKey], stack: str | None = None
) -> dict[str, dict[str, Any]]:
    """:func:`declare`, returning (and exporting as the ``processes`` stack output) per-process facts."""
    return declare(spec, keys, stack).outputs
