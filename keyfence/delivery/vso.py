"""``delivery: vault-secrets-operator``: HashiCorp's operator reads the key inside the cluster.

Per process, in the subaccount's namespace: a ``VaultAuth`` logging in with Kubernetes auth as
the process's own ServiceAccount (a Vault role that can read this one key, nothing else), and a
``VaultStaticSecret`` syncing the KV v2 key into the process's Secret. ``hmacSecretData`` lets
the operator notice a new version and restart the process's workload (``rolloutRestartTargets``).
Field names follow the operator's v1beta1 CRDs (tests/crds/ ships the published CRDs).
"""

from __future__ import annotations

from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from keyfence_policies import labels as L

from ..keys import ResolvedKey
from ..spec import OperatorSection

API_VERSION = "secrets.hashicorp.com/v1beta1"
VERSION_ANNOTATION_KEY = L.KEY_VERSION
WORKLOAD_KINDS = {"deployment": "Deployment", "statefulset": "StatefulSet"}


def auth_name(process: str) -> str:
    return f"{process}-vault"


def vault_auth_spec(key: ResolvedKey, role: str, operators: OperatorSection) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "method": "kubernetes",
        "mount": operators.kubernetes_auth_mount,
        "kubernetes": {
            "role": role,
            "serviceAccount": key.entry.process.name,
            "audiences": [operators.audience],
        },
    }
    if operators.vault_connection:
        spec["vaultConnectionRef"] = operators.vault_connection
    return spec


def static_secret_spec(
    key: ResolvedKey,
    secret: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    operators: OperatorSection,
) -> dict[str, Any]:
    entry = key.entry
    return {
        "vaultAuthRef": auth_name(entry.process.name),
        "type": "kv-v2",
        "mount": key.mount,
        "path": key.path,
        "refreshAfter": operators.refresh_interval,
        "hmacSecretData": True,
        "rolloutRestartTargets": [{"kind": WORKLOAD_KINDS[entry.workload], "name": entry.process.name}],
        "destination": {
            "name": secret,
            "create": True,
            "overwrite": False,
            "type": "Opaque",
            "labels": labels,
            "annotations": annotations,
            # Only api_key and api_secret: no '_raw' copy of the whole KV entry in the Secret.
            "transformation": {"excludeRaw": True},
        },
    }


def declare(
    key: ResolvedKey,
    secret: str,
    role: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    operators: OperatorSection,
    opts: pulumi.ResourceOptions,
) -> list[pulumi.Resource]:
    """The VaultAuth and VaultStaticSecret of one process."""
    entry = key.entry
    namespace = entry.subaccount.name
    meta_labels = {k: v for k, v in labels.items() if k != L.EXCHANGE_KEY}
    auth = k8s.apiextensions.CustomResource(
        f"{entry.ref}/vault-auth",
        api_version=API_VERSION,
        kind="VaultAuth",
        metadata={"name": auth_name(entry.process.name), "namespace": namespace, "labels": meta_labels},
        spec=vault_auth_spec(key, role, operators),
        opts=opts,
    )
    static = k8s.apiextensions.CustomResource(
        f"{entry.ref}/key",
        api_version=API_VERSION,
        kind="VaultStaticSecret",
        metadata={
            "name": secret,
            "namespace": namespace,
            "labels": meta_labels,
            "annotations": annotations,
        },
        spec=static_secret_spec(key, secret, labels, annotations, operators),
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[auth])),
    )
    return [auth, static]
