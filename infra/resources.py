"""Kubernetes resources for a verified fleet: a Namespace per subaccount, a hardened pod per process.

Each process gets its own ServiceAccount, its own immutable key Secret and a Deployment
that can never run two pods at once (``replicas: 1``, ``Recreate``): a rolling update
would briefly run two pods on one key and break its nonce sequence.
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from keyfence_policies import labels as L
from keyfence_policies.permissions import format_permissions

from .keys import ResolvedKey
from .spec import FleetSpec, ProcessEntry, Subaccount

KEY_VOLUME = "exchange-key"
KEY_FILE_MODE = 0o400
RUN_AS = 10001
NOT_FETCHED = L.MATERIAL_PLACEHOLDER
"""Stands in for key material when the program runs in check or offline mode."""


def secret_name(process: str, version: int | None) -> str:
    """The key Secret's name; a new Vault version gets a new Secret, so rotation replaces it."""
    return f"{process}-key-v{version}" if version is not None else f"{process}-key"


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
    return out


def _bool(value: bool) -> str:
    return "true" if value else "false"


class ProcessResources(pulumi.ComponentResource):
    """One process: ServiceAccount, immutable key Secret and a single-writer hardened Deployment."""

    def __init__(
        self,
        key: ResolvedKey,
        namespace: k8s.core.v1.Namespace,
        master_subaccounts: frozenset[str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        entry = key.entry
        super().__init__(L.PROCESS_COMPONENT, entry.ref, None, opts)
        self.ref = entry.ref
        child = pulumi.ResourceOptions(parent=self, depends_on=[namespace])
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

        name = secret_name(proc.name, key.version)
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
        material = key.material
        data = (
            {"api_key": material.api_key, "api_secret": material.api_secret}
            if material is not None
            else dict.fromkeys(L.KEY_FILES, NOT_FETCHED)
        )
        self.secret = k8s.core.v1.Secret(
            f"{entry.ref}/key",
            metadata={
                "name": name,
                "namespace": namespace_name,
                "labels": secret_labels,
                "annotations": annotations,
            },
            type="Opaque",
            immutable=True,
            string_data=pulumi.Output.secret(data),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"])
            ),
        )

        self.deployment = k8s.apps.v1.Deployment(
            entry.ref,
            metadata={
                "name": proc.name,
                "namespace": namespace_name,
                "labels": labels,
                "annotations": annotations,
            },
            spec={
                "replicas": 1,
                "strategy": {"type": "Recreate"},
                "revision_history_limit": 3,
                "selector": {"match_labels": {L.SUBACCOUNT: entry.subaccount.name, L.PROCESS: proc.name}},
                "template": {
                    "metadata": {"labels": labels, "annotations": annotations},
                    "spec": _pod_spec(key, name),
                },
            },
            opts=pulumi.ResourceOptions(
                parent=self, depends_on=[namespace, self.secret, self.service_account]
            ),
        )

        self.outputs: dict[str, Any] = {
            "namespace": namespace_name,
            "deployment": proc.name,
            "key_path": key.vault_ref,
            "fingerprint": key.fingerprint,
            "version": key.version,
        }
        self.register_outputs(self.outputs)


def _pod_spec(key: ResolvedKey, secret: str) -> k8s.core.v1.PodSpecArgsDict:
    entry = key.entry
    proc = entry.process
    requests, limits = proc.resources.effective()
    env: list[k8s.core.v1.EnvVarArgsDict] = [{"name": k, "value": v} for k, v in proc.env.items()]
    env += [
        {"name": "KEYFENCE_KEY_DIR", "value": L.KEY_MOUNT_PATH},
        {"name": "KEYFENCE_SUBACCOUNT", "value": entry.subaccount.name},
        {"name": "KEYFENCE_PROCESS", "value": proc.name},
        {"name": "KEYFENCE_ROLE", "value": proc.role},
        {"name": "KEYFENCE_VENUE", "value": entry.subaccount.venue},
    ]
    return {
        "service_account_name": proc.name,
        "automount_service_account_token": False,
        "enable_service_links": False,
        "security_context": {
            "run_as_non_root": True,
            "run_as_user": RUN_AS,
            "run_as_group": RUN_AS,
            "fs_group": RUN_AS,
            "seccomp_profile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": proc.name,
                "image": proc.image,
                "args": list(proc.args),
                "env": env,
                "resources": {"requests": requests.as_dict(), "limits": limits.as_dict()},
                "security_context": {
                    "allow_privilege_escalation": False,
                    "read_only_root_filesystem": True,
                    "run_as_non_root": True,
                    "privileged": False,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volume_mounts": [
                    {"name": KEY_VOLUME, "mount_path": L.KEY_MOUNT_PATH, "read_only": True},
                    {"name": "tmp", "mount_path": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {
                "name": KEY_VOLUME,
                "secret": {
                    "secret_name": secret,
                    "default_mode": KEY_FILE_MODE,
                    "items": [{"key": f, "path": f} for f in L.KEY_FILES],
                },
            },
            {"name": "tmp", "empty_dir": {"size_limit": "64Mi"}},
        ],
    }


class SubaccountResources(pulumi.ComponentResource):
    """One subaccount (one strategy): a labelled Namespace, default-deny ingress, and its processes."""

    def __init__(self, sub: Subaccount, keys: list[ResolvedKey], master_subaccounts: frozenset[str]) -> None:
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
        self.processes = [ProcessResources(key, self.namespace, master_subaccounts, opts) for key in keys]
        self.register_outputs({"namespace": sub.name, "processes": [p.ref for p in self.processes]})


def declare_fleet(spec: FleetSpec, keys: list[ResolvedKey]) -> dict[str, dict[str, Any]]:
    """Declare every resource of a fleet whose keys are already resolved and verified.

    Returns (and exports as the ``processes`` stack output) per-process facts; never key material.
    """
    masters = frozenset(s.name for s in spec.subaccounts if s.master)
    by_sub: dict[str, list[ResolvedKey]] = {s.name: [] for s in spec.subaccounts}
    for key in keys:
        by_sub[key.entry.subaccount.name].append(key)
    outputs: dict[str, dict[str, Any]] = {}
    for sub in spec.subaccounts:
        component = SubaccountResources(sub, by_sub[sub.name], masters)
        for key, proc in zip(by_sub[sub.name], component.processes, strict=True):
            outputs[key.entry.ref] = proc.outputs
    pulumi.export("processes", outputs)
    return outputs
