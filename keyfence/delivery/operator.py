"""The shape both secrets-operator modes share: per process, a Vault login object and the key object.

``vso`` declares a ``VaultAuth`` and a ``VaultStaticSecret``, ``eso`` a ``SecretStore`` and an
``ExternalSecret``; each mode writes its own specs, and this module declares the pair alike: both
in the subaccount's namespace, labelled as the process without the exchange-key marker (neither
holds a key), the key object named after the Secret the operator writes and depending on the login.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from keyfence_policies import labels as L

from ..keys import ResolvedKey


@dataclass(frozen=True)
class Login:
    """The object an operator logs in to Vault with, as one mode names it."""

    kind: str
    name: str
    resource_suffix: str
    """Appended to the process's ref for the Pulumi resource name (``<sub>/<proc>/<suffix>``)."""
    spec: dict[str, Any]


def declare_pair(
    key: ResolvedKey,
    api_version: str,
    login: Login,
    key_kind: str,
    secret: str,
    key_spec: dict[str, Any],
    labels: dict[str, str],
    annotations: dict[str, str],
    opts: pulumi.ResourceOptions,
) -> list[pulumi.Resource]:
    """The login object and the key object of one process, in that order."""
    entry = key.entry
    namespace = entry.subaccount.name
    meta_labels = {k: v for k, v in labels.items() if k != L.EXCHANGE_KEY}
    auth = k8s.apiextensions.CustomResource(
        f"{entry.ref}/{login.resource_suffix}",
        api_version=api_version,
        kind=login.kind,
        metadata={"name": login.name, "namespace": namespace, "labels": meta_labels},
        spec=login.spec,
        opts=opts,
    )
    synced = k8s.apiextensions.CustomResource(
        f"{entry.ref}/key",
        api_version=api_version,
        kind=key_kind,
        metadata={"name": secret, "namespace": namespace, "labels": meta_labels, "annotations": annotations},
        spec=key_spec,
        opts=pulumi.ResourceOptions.merge(opts, pulumi.ResourceOptions(depends_on=[auth])),
    )
    return [auth, synced]
