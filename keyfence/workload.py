"""The single-writer workload of one process: a hardened pod as a Deployment or a StatefulSet.

- ``deployment`` (default): ``replicas: 1``, ``strategy: Recreate``. A rollout never overlaps
  two pods, but a deleted, evicted or drained pod is replaced at once while it may still be
  terminating (up to its grace period).
- ``statefulset``: ``replicas: 1``, ``OrderedReady``, a governing headless Service. The
  replacement of pod ``<name>-0`` waits until the old pod is gone, so deletes, evictions and
  drains never overlap either (a force delete or a lost node still can: docs/security.md).

Both use ``terminationGracePeriodSeconds`` from the spec; the process must stop signing at once
on SIGTERM.
"""

from __future__ import annotations

from collections.abc import Sequence

import pulumi
import pulumi_kubernetes as k8s
from keyfence_policies import labels as L

from .keys import ResolvedKey

KEY_VOLUME = "exchange-key"
KEY_FILE_MODE = 0o400
RUN_AS = 10001


def pod_spec(key: ResolvedKey, secret: str) -> k8s.core.v1.PodSpecArgsDict:
    """The hardened pod: non-root, read-only, no capabilities, the key Secret mounted read-only."""
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
        "termination_grace_period_seconds": entry.grace_seconds,
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


def declare(
    key: ResolvedKey,
    secret: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    pod_annotations: dict[str, str],
    depends_on: Sequence[pulumi.Resource],
    parent: pulumi.Resource,
) -> tuple[pulumi.CustomResource, list[pulumi.Resource]]:
    """The process's workload, and what else it needs (a StatefulSet's headless Service)."""
    entry = key.entry
    proc = entry.process
    namespace = entry.subaccount.name
    selector = {L.SUBACCOUNT: namespace, L.PROCESS: proc.name}
    metadata: k8s.meta.v1.ObjectMetaArgsDict = {
        "name": proc.name,
        "namespace": namespace,
        "labels": labels,
        "annotations": annotations,
    }
    template: k8s.core.v1.PodTemplateSpecArgsDict = {
        "metadata": {"labels": labels, "annotations": pod_annotations},
        "spec": pod_spec(key, secret),
    }
    opts = pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on))
    if entry.workload == "statefulset":
        service = k8s.core.v1.Service(
            f"{entry.ref}/governing",
            metadata={"name": proc.name, "namespace": namespace, "labels": labels},
            spec={"cluster_ip": "None", "selector": selector},
            opts=opts,
        )
        stateful = k8s.apps.v1.StatefulSet(
            entry.ref,
            metadata=metadata,
            spec={
                "replicas": 1,
                "service_name": proc.name,
                "pod_management_policy": "OrderedReady",
                "update_strategy": {"type": "RollingUpdate"},
                "revision_history_limit": 3,
                "selector": {"match_labels": selector},
                "template": template,
            },
            opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[service])),
        )
        return stateful, [service]
    deployment = k8s.apps.v1.Deployment(
        entry.ref,
        metadata=metadata,
        spec={
            "replicas": 1,
            "strategy": {"type": "Recreate"},
            "revision_history_limit": 3,
            "selector": {"match_labels": selector},
            "template": template,
        },
        opts=opts,
    )
    return deployment, []
