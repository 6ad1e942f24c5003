"""``delivery: pulumi-secret``: the key travels Vault -> program -> Pulumi state (as a secret) -> a Secret.

Each Vault version gets its own immutable Secret, so a rotation replaces the Secret and the
workload switches to it in one rollout.
"""

from __future__ import annotations

import pulumi
import pulumi_kubernetes as k8s
from keyfence_policies import labels as L

from ..keys import ResolvedKey

NOT_FETCHED = L.MATERIAL_PLACEHOLDER
"""Stands in for key material when the program runs in check or offline mode."""


def secret_name(process: str, version: int | None) -> str:
    """The key Secret's name; a new Vault version gets a new Secret, so rotation replaces it."""
    return f"{process}-key-v{version}" if version is not None else f"{process}-key"


def declare(
    key: ResolvedKey, labels: dict[str, str], annotations: dict[str, str], opts: pulumi.ResourceOptions
) -> k8s.core.v1.Secret:
    """The immutable key Secret, its data a Pulumi secret (placeholders when no material was read)."""
    entry = key.entry
    material = key.material
    data = (
        {"api_key": material.api_key, "api_secret": material.api_secret}
        if material is not None
        else dict.fromkeys(L.KEY_FILES, NOT_FETCHED)
    )
    return k8s.core.v1.Secret(
        f"{entry.ref}/key",
        metadata={
            "name": secret_name(entry.process.name, key.version),
            "namespace": entry.subaccount.name,
            "labels": labels,
            "annotations": annotations,
        },
        type="Opaque",
        immutable=True,
        string_data=pulumi.Output.secret(data),
        opts=pulumi.ResourceOptions.merge(
            opts, pulumi.ResourceOptions(additional_secret_outputs=["data", "stringData"])
        ),
    )
