"""``delivery: external-secrets``: the External Secrets Operator reads the key inside the cluster.

Per process, in the subaccount's namespace: a ``SecretStore`` for Vault KV v2 that logs in with
Kubernetes auth as the process's own ServiceAccount, and an ``ExternalSecret`` mapping the key's
``api_key``/``api_secret`` properties into the process's Secret. ESO restarts nothing itself, so:

- ``restart: keyfence-annotation`` (default) pins ``remoteRef.version`` to the version keyfence
  resolved; a rotation is a deploy that moves the pin and the pod template's
  ``keyfence.io/key-version`` annotation together, so the workload rolls out exactly once;
- ``restart: reloader`` follows the latest version and annotates the workload for Stakater
  Reloader (``secret.reloader.stakater.com/reload``), which restarts it when the Secret changes.

Field names follow ESO's ``external-secrets.io/v1`` CRDs (tests/crds/ ships the published CRDs).
"""

from __future__ import annotations

from typing import Any

import pulumi
from keyfence_policies import labels as L

from ..keys import ResolvedKey
from ..spec import OperatorSection
from .operator import Login, declare_pair

API_VERSION = "external-secrets.io/v1"
RELOADER_ANNOTATION = "secret.reloader.stakater.com/reload"


def store_name(process: str) -> str:
    return f"{process}-vault"


def secret_store_spec(key: ResolvedKey, role: str, operators: OperatorSection) -> dict[str, Any]:
    return {
        "provider": {
            "vault": {
                "server": operators.vault_address,
                "path": key.mount,
                "version": "v2",
                "auth": {
                    "kubernetes": {
                        "mountPath": operators.kubernetes_auth_mount,
                        "role": role,
                        "serviceAccountRef": {
                            "name": key.entry.process.name,
                            "audiences": [operators.audience],
                        },
                    }
                },
            }
        }
    }


def external_secret_spec(
    key: ResolvedKey,
    secret: str,
    labels: dict[str, str],
    annotations: dict[str, str],
    operators: OperatorSection,
) -> dict[str, Any]:
    pin = operators.restart == "keyfence-annotation" and key.version is not None

    def remote(prop: str) -> dict[str, Any]:
        ref: dict[str, Any] = {"key": key.path, "property": prop}
        if pin:
            ref["version"] = str(key.version)
        return ref

    return {
        "refreshInterval": operators.refresh_interval,
        "secretStoreRef": {"kind": "SecretStore", "name": store_name(key.entry.process.name)},
        "target": {
            "name": secret,
            "creationPolicy": "Owner",
            "deletionPolicy": "Delete",
            "template": {"type": "Opaque", "metadata": {"labels": labels, "annotations": annotations}},
        },
        "data": [{"secretKey": f, "remoteRef": remote(f)} for f in L.KEY_FILES],
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
    """The SecretStore and ExternalSecret of one process."""
    process = key.entry.process.name
    login = Login("SecretStore", store_name(process), "secret-store", secret_store_spec(key, role, operators))
    spec = external_secret_spec(key, secret, labels, annotations, operators)
    return declare_pair(key, API_VERSION, login, "ExternalSecret", secret, spec, labels, annotations, opts)
