"""Every kind of path to a key (issue #10) through the real pack process, as ``pulumi preview`` runs it.

The fleet is declared as under ``pulumi up`` (its key Secrets hold the canary key material,
as Pulumi secrets) and the pack gets no key facts, as with ``pulumi preview --policy-pack``:
what it knows of each key is only what the fleet itself declares (the fixture's keys carry
no permissions, so only ``requirePermissions`` is relaxed). Beside the fleet sit
hand-written resources, one per kind of attack; each must come back as a mandatory
violation naming it, and no message may ever carry the material. Then each field of those
resources is replaced by odd values: nothing may crash the pack.
"""

from __future__ import annotations

import copy
import json
from collections import defaultdict
from typing import Any

import pytest
from google.protobuf import struct_pb2
from pulumi.runtime import rpc

from keyfence.check.analyzer import run_policy_pack
from keyfence.check.harness import RegisteredResource, collect
from keyfence.check.packconfig import ConfigEntry
from keyfence.check.runner import default_policy_pack
from keyfence.check.verdict import Analysis, Violation
from keyfence.fleet import declare_fleet
from keyfence.spec import load_spec
from tests.fleet_fixtures import EXAMPLE_SPEC, canary_material, resolved_keys
from tests.hostile.test_policy_pack_process import ODD_VALUES, field_paths, with_field

EXECUTOR = "momentum/executor"
SECRET_SIG = {rpc._special_sig_key: rpc._special_secret_sig}


def secret(value: Any) -> dict[str, Any]:
    """A value as the SDK serialises a Pulumi secret."""
    return {**SECRET_SIG, "value": value}


def resource(resource_type: str, name: str, props: dict[str, Any]) -> RegisteredResource:
    struct = struct_pb2.Struct()
    struct.update(props)
    urn = f"urn:pulumi:check::keyfence::{resource_type}::hand-written/{name}"
    return RegisteredResource(resource_type, f"hand-written/{name}", urn, "", True, struct)


def pod(volume_secret: str | None = None, **container: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {"containers": [{"name": "bot", "image": "ghcr.io/acme/bot:1.0.0", **container}]}
    if volume_secret:
        spec["volumes"] = [{"name": "k", "secret": {"secretName": volume_secret}}]
    return spec


def external_secret(name: str, store_kind: str, data_from: dict[str, Any]) -> RegisteredResource:
    """An ExternalSecret in namespace tools, fetching ``data_from`` into a Secret of its own name."""
    return resource(
        "kubernetes:external-secrets.io/v1:ExternalSecret",
        name,
        {
            "metadata": {"name": name, "namespace": "tools"},
            "spec": {
                "secretStoreRef": {"kind": store_kind, "name": "store"},
                "target": {"name": name},
                "dataFrom": [data_from],
            },
        },
    )


def attacks(executor_secret: str) -> dict[str, RegisteredResource]:
    api_key, api_secret = (lambda m: (m.api_key, m.api_secret))(canary_material(EXECUTOR))
    meta = {"namespace": "momentum"}
    return {
        "config-map-copy": resource(
            "kubernetes:core/v1:ConfigMap",
            "cfg",
            {"metadata": {"name": "cfg", **meta}, "data": {"bot.json": json.dumps({"secret": api_secret})}},
        ),
        "secret-copy": resource(
            "kubernetes:core/v1:Secret",
            "bot-creds",
            {"metadata": {"name": "bot-creds", **meta}, "stringData": secret({"k": api_key})},
        ),
        "env-literal-copy": resource(
            "kubernetes:apps/v1:Deployment",
            "bot",
            {
                "metadata": {"name": "bot", "namespace": "tools"},
                "spec": {"template": {"spec": pod(env=[{"name": "MODE", "value": api_key}])}},
            },
        ),
        "patch": resource(
            "kubernetes:apps/v1:DeploymentPatch",
            "executor-patch",
            {
                "metadata": {"name": "executor", **meta},
                "spec": {"replicas": 3, "strategy": {"type": "RollingUpdate"}},
            },
        ),
        "rollout": resource(
            "kubernetes:argoproj.io/v1alpha1:Rollout",
            "rollout",
            {
                "metadata": {"name": "rollout", **meta},
                "spec": {
                    "replicas": 2,
                    "strategy": {"canary": {}},
                    "template": {"spec": pod(executor_secret)},
                },
            },
        ),
        "role": resource(
            "kubernetes:rbac.authorization.k8s.io/v1:Role",
            "reader",
            {
                "metadata": {"name": "reader", **meta},
                "rules": [
                    {
                        "apiGroups": [""],
                        "resources": ["secrets"],
                        "verbs": ["get"],
                        "resourceNames": [executor_secret],
                    }
                ],
            },
        ),
        "vault-route": resource(
            "kubernetes:secrets.hashicorp.com/v1beta1:VaultStaticSecret",
            "vso",
            {
                "metadata": {"name": "vso", **meta},
                "spec": {"mount": "secret", "path": "kraken/momentum/executor"},
            },
        ),
        "undeclared": resource(
            "kubernetes:apps/v1:Deployment",
            "stray",
            {"metadata": {"name": "stray", **meta}, "spec": {"template": {"spec": pod("executor-key-v9")}}},
        ),
        # Routes that name neither the key's material nor its exact Vault path.
        "folder-sweep": external_secret(
            "sweep", "ClusterSecretStore", {"find": {"path": "kraken/momentum", "name": {"regexp": ".*"}}}
        ),
        "mount-sweep": resource(
            "kubernetes:external-secrets.io/v1:ClusterExternalSecret",
            "everything",
            {
                "metadata": {"name": "everything"},
                "spec": {
                    "namespaceSelectors": [{"matchLabels": {"team": "tools"}}],
                    "externalSecretSpec": {
                        "secretStoreRef": {"kind": "ClusterSecretStore", "name": "vault"},
                        "dataFrom": [{"find": {"tags": {"subaccount": "momentum"}}}],
                    },
                },
            },
        ),
        "replicator": resource(
            "kubernetes:core/v1:Secret",
            "replica",
            {
                "metadata": {
                    "name": "replica",
                    "namespace": "tools",
                    "annotations": {
                        "replicator.v1.mittwald.de/replicate-from": f"momentum/{executor_secret}"
                    },
                },
            },
        ),
        # External Secrets' Kubernetes provider reading the key Secret by its name.
        "kubernetes-store": external_secret("mirror", "SecretStore", {"extract": {"key": executor_secret}}),
        "push-secret": resource(
            "kubernetes:external-secrets.io/v1alpha1:PushSecret",
            "push",
            {
                "metadata": {"name": "push", **meta},
                "spec": {
                    "secretStoreRefs": [{"kind": "ClusterSecretStore", "name": "elsewhere"}],
                    "selector": {"secret": {"name": executor_secret}},
                    "data": [{"match": {"secretKey": "api_secret", "remoteRef": {"remoteKey": "x/y"}}}],
                },
            },
        ),
        "reads-sweep": resource(
            "kubernetes:apps/v1:Deployment",
            "sweeper",
            {
                "metadata": {"name": "sweeper", "namespace": "tools"},
                "spec": {"template": {"spec": pod("sweep")}},
            },
        ),
    }


class DeployedStack:
    """The fleet as ``pulumi up`` declares it, every attack beside it, and the pack's verdict."""

    def __init__(self) -> None:
        spec = load_spec(EXAMPLE_SPEC)
        keys = resolved_keys(spec)
        self.base = collect(lambda: declare_fleet(spec, keys), project="keyfence", stack="check").resources
        self.attacks = attacks("executor-key-v3")
        self.analysis = self.run([*self.base, *self.attacks.values()])
        self.by_urn: dict[str, list[Violation]] = defaultdict(list)
        for violation in self.analysis.violations:
            self.by_urn[violation.urn].append(violation)

    @staticmethod
    def run(resources: list[RegisteredResource]) -> Analysis:
        relaxed = {"least-privilege-key": ConfigEntry(None, {"requirePermissions": False})}
        return run_policy_pack(
            default_policy_pack(), resources, project="keyfence", stack="check", base_config=relaxed
        )


@pytest.fixture(scope="module")
def deployed() -> DeployedStack:
    return DeployedStack()


def test_the_deployed_fleet_alone_passes() -> None:
    spec = load_spec(EXAMPLE_SPEC)
    keys = resolved_keys(spec)
    resources = collect(lambda: declare_fleet(spec, keys), project="keyfence", stack="check").resources
    assert DeployedStack.run(resources).mandatory == []


@pytest.mark.parametrize(
    "attack",
    [
        "config-map-copy",
        "secret-copy",
        "env-literal-copy",
        "patch",
        "rollout",
        "role",
        "vault-route",
        "undeclared",
        "folder-sweep",
        "mount-sweep",
        "replicator",
        "kubernetes-store",
        "push-secret",
        "reads-sweep",
    ],
)
def test_each_attack_is_a_mandatory_violation_naming_it(deployed: DeployedStack, attack: str) -> None:
    urn = deployed.attacks[attack].urn
    assert any(v.level == "mandatory" for v in deployed.by_urn[urn]), (attack, deployed.by_urn[urn])


def test_no_message_carries_key_material(deployed: DeployedStack) -> None:
    text = "\n".join(v.message for v in deployed.analysis.violations)
    assert "CANARY" not in text
    material = canary_material(EXECUTOR)
    assert material.api_key not in text and material.api_secret not in text


def test_odd_values_in_every_field_of_the_attacks_never_crash_the_pack() -> None:
    """Every field of every attack resource null, a number, a list, a mapping or unknown: one pack run."""
    spec = load_spec(EXAMPLE_SPEC)
    base = collect(
        lambda: declare_fleet(spec, resolved_keys(spec)), project="keyfence", stack="check"
    ).resources
    hostile: list[RegisteredResource] = []
    for original in attacks("executor-key-v3").values():
        props = rpc.deserialize_properties(original.properties, keep_unknowns=True)
        for path in field_paths(props):
            for label, value in ODD_VALUES.items():
                name = f"{original.name}~{len(hostile)}~{label}"
                urn = f"{original.urn.rsplit('::', 1)[0]}::{name}"
                changed = with_field(copy.deepcopy(props), path, value)
                hostile.append(RegisteredResource(original.type, name, urn, "", True, changed))
    analysis = DeployedStack.run([*base, *hostile])
    crashed = [v for v in analysis.violations if "could not evaluate the stack" in v.message]
    assert not crashed, crashed[:3]
