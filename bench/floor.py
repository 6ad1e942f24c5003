"""The floor: the Pulumi SDK registering keyfence's resources, and nothing else.

A bare Pulumi program, run under the same SDK mocks as ``keyfence check`` (through
``keyfence.check.harness.collect``), that declares exactly what keyfence declares for a fleet: the
same resource types, names and parents, the same component tree, the same input shapes
(labels, annotations, a secret ``string_data``, depends_on) and the same stack output. It
reads no spec, talks to no Vault and runs no policy: its cost is what the SDK itself
charges for the stack, the least any tool declaring these resources can pay. Written
independently of ``keyfence.fleet`` on purpose, so an optimisation there never moves it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Final

import pulumi
import pulumi.dynamic
import pulumi_kubernetes as k8s
from keyfence_policies import labels as L

from keyfence.check.harness import Collected, collect

from .fleet import BenchProcess, BenchSubaccount, Fleet

KEY_VERSION: Final = 1
"""Every seeded key is at version 1."""
REQUESTS: Final = {"cpu": "50m", "memory": "64Mi"}
LIMITS: Final = {"cpu": "500m", "memory": "256Mi"}


def _flag(value: bool) -> str:
    return "true" if value else "false"


def _labels(process: BenchProcess) -> dict[str, str]:
    sub = process.subaccount
    return {
        "app.kubernetes.io/name": process.name,
        "app.kubernetes.io/instance": f"{sub.name}-{process.name}",
        "app.kubernetes.io/component": process.role,
        "app.kubernetes.io/part-of": sub.name,
        "app.kubernetes.io/managed-by": L.MANAGED_BY,
        L.SUBACCOUNT: sub.name,
        L.PROCESS: process.name,
        L.ROLE: process.role,
        L.VENUE: sub.venue,
        L.MASTER: _flag(sub.master),
    }


def _annotations(fleet: Fleet, process: BenchProcess) -> dict[str, str]:
    return {
        L.KEY_PATH: process.key_path,
        L.VAULT_MOUNT: fleet.mount,
        L.ALLOW_WITHDRAWALS: _flag(process.allow_withdrawals),
        L.FINGERPRINT: process.material.fingerprint,
        L.KEY_VERSION: str(KEY_VERSION),
        L.PERMISSIONS: ",".join(process.permissions),
    }


def _pod(process: BenchProcess, secret: str) -> k8s.core.v1.PodSpecArgsDict:
    sub = process.subaccount
    env: list[k8s.core.v1.EnvVarArgsDict] = [{"name": k, "value": v} for k, v in process.env]
    env += [
        {"name": "KEYFENCE_KEY_DIR", "value": L.KEY_MOUNT_PATH},
        {"name": "KEYFENCE_SUBACCOUNT", "value": sub.name},
        {"name": "KEYFENCE_PROCESS", "value": process.name},
        {"name": "KEYFENCE_ROLE", "value": process.role},
        {"name": "KEYFENCE_VENUE", "value": sub.venue},
    ]
    return {
        "service_account_name": process.name,
        "automount_service_account_token": False,
        "enable_service_links": False,
        "security_context": {
            "run_as_non_root": True,
            "run_as_user": 10001,
            "run_as_group": 10001,
            "fs_group": 10001,
            "seccomp_profile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": process.name,
                "image": process.image,
                "args": list(process.args),
                "env": env,
                "resources": {"requests": dict(REQUESTS), "limits": dict(LIMITS)},
                "security_context": {
                    "allow_privilege_escalation": False,
                    "read_only_root_filesystem": True,
                    "run_as_non_root": True,
                    "privileged": False,
                    "capabilities": {"drop": ["ALL"]},
                },
                "volume_mounts": [
                    {"name": "exchange-key", "mount_path": L.KEY_MOUNT_PATH, "read_only": True},
                    {"name": "tmp", "mount_path": "/tmp"},
                ],
            }
        ],
        "volumes": [
            {
                "name": "exchange-key",
                "secret": {
                    "secret_name": secret,
                    "default_mode": 0o400,
                    "items": [{"key": f, "path": f} for f in L.KEY_FILES],
                },
            },
            {"name": "tmp", "empty_dir": {"size_limit": "64Mi"}},
        ],
    }


class _NoProvider(pulumi.dynamic.ResourceProvider):
    """Never called under the mocks; the floor only pays for declaring the claim."""


class _ClaimRecord(pulumi.dynamic.Resource, module="ledger", name="Claim"):
    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(_NoProvider(), name, {**props, "claimed_at": None}, opts)


class _Claim(pulumi.ComponentResource):
    def __init__(self, fleet: Fleet, process: BenchProcess, parent: pulumi.Resource) -> None:
        super().__init__("keyfence:ledger:Claim", process.ref, None, pulumi.ResourceOptions(parent=parent))
        inputs = {
            "mount": fleet.mount,
            "ledger": "keyfence/ledger",
            "fingerprint": process.material.fingerprint,
            "path": process.key_path,
            "stack": "organization/keyfence/dev",
            "process": process.ref,
        }
        _ClaimRecord(f"{process.ref}/claim", inputs, pulumi.ResourceOptions(parent=self))
        self.register_outputs(dict(inputs))


class _Process(pulumi.ComponentResource):
    def __init__(
        self, fleet: Fleet, process: BenchProcess, namespace: pulumi.Resource, parent: pulumi.Resource
    ) -> None:
        super().__init__("keyfence:fleet:Process", process.ref, None, pulumi.ResourceOptions(parent=parent))
        sub = process.subaccount
        labels = _labels(process)
        annotations = _annotations(fleet, process)
        claim = _Claim(fleet, process, self)
        child = pulumi.ResourceOptions(parent=self, depends_on=[namespace, claim])
        account = k8s.core.v1.ServiceAccount(
            process.ref,
            metadata={"name": process.name, "namespace": sub.name, "labels": labels},
            automount_service_account_token=False,
            opts=child,
        )
        secret_name = f"{process.name}-key-v{KEY_VERSION}"
        secret = k8s.core.v1.Secret(
            f"{process.ref}/key",
            metadata={
                "name": secret_name,
                "namespace": sub.name,
                "labels": {
                    **labels,
                    L.EXCHANGE_KEY: "true",
                    L.SUBACCOUNT: sub.name,
                    L.VENUE: sub.venue,
                    L.MASTER: _flag(sub.master),
                    L.FINGERPRINT_LABEL: process.material.fingerprint[: L.FINGERPRINT_LABEL_LENGTH],
                },
                "annotations": annotations,
            },
            type="Opaque",
            immutable=True,
            string_data=pulumi.Output.secret(
                {"api_key": process.material.api_key, "api_secret": process.material.api_secret}
            ),
            opts=pulumi.ResourceOptions.merge(
                child, pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"])
            ),
        )
        spec: k8s.apps.v1.DeploymentSpecArgsDict = {
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revision_history_limit": 3,
            "selector": {"match_labels": {L.SUBACCOUNT: sub.name, L.PROCESS: process.name}},
            "template": {
                "metadata": {"labels": labels, "annotations": annotations},
                "spec": _pod(process, secret_name),
            },
        }
        k8s.apps.v1.Deployment(
            process.ref,
            metadata={
                "name": process.name,
                "namespace": sub.name,
                "labels": labels,
                "annotations": annotations,
            },
            spec=spec,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace, claim, secret, account]),
        )
        self.outputs: dict[str, Any] = {
            "namespace": sub.name,
            "deployment": process.name,
            "key_path": f"{fleet.mount}/{process.key_path}",
            "fingerprint": process.material.fingerprint,
            "version": KEY_VERSION,
        }
        self.register_outputs(self.outputs)


class _Subaccount(pulumi.ComponentResource):
    def __init__(self, fleet: Fleet, sub: BenchSubaccount, processes: list[BenchProcess]) -> None:
        super().__init__("keyfence:fleet:Subaccount", sub.name, None, None)
        labels = {
            L.SUBACCOUNT: sub.name,
            L.VENUE: sub.venue,
            L.MASTER: _flag(sub.master),
            "app.kubernetes.io/managed-by": L.MANAGED_BY,
            "pod-security.kubernetes.io/enforce": "restricted",
        }
        namespace = k8s.core.v1.Namespace(
            sub.name, metadata={"name": sub.name, "labels": labels}, opts=pulumi.ResourceOptions(parent=self)
        )
        k8s.networking.v1.NetworkPolicy(
            f"{sub.name}/default-deny-ingress",
            metadata={"name": "default-deny-ingress", "namespace": sub.name, "labels": labels},
            spec={"pod_selector": {}, "policy_types": ["Ingress"]},
            opts=pulumi.ResourceOptions(parent=self, depends_on=[namespace]),
        )
        self.processes = [_Process(fleet, p, namespace, self) for p in processes]
        self.register_outputs({"namespace": sub.name, "processes": [p.ref for p in processes]})


def floor_program(fleet: Fleet) -> Callable[[], None]:
    """The bare program for ``fleet``: every resource keyfence would declare, from plain data."""

    def program() -> None:
        grouped = fleet.by_subaccount()
        outputs: dict[str, dict[str, Any]] = {}
        for sub in fleet.subaccounts:
            component = _Subaccount(fleet, sub, grouped[sub.name])
            for process, proc in zip(grouped[sub.name], component.processes, strict=True):
                outputs[process.ref] = proc.outputs
        pulumi.export("processes", outputs)

    return program


def run_floor(fleet: Fleet, *, project: str = "keyfence", stack: str = "dev") -> Collected:
    """Run the floor program under the SDK's mocks and return what it registered."""
    return collect(floor_program(fleet), project=project, stack=stack)
