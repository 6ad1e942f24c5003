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
from keyfence_policies import labels as L

from ..keys import ResolvedKey
from ..spec import OperatorSection
from .operator import Login, declare_pair

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
    process = key.entry.process.name
    login = Login("VaultAuth", auth_name(process), "vault-auth", vault_auth_spec(key, role, operators))
    spec = static_secret_spec(key, secret, labels, annotations, operators)
    return declare_pair(key, API_VERSION, login, "VaultStaticSecret", secret, spec, labels, annotations, opts)
