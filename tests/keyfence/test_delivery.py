"""Delivery modes and workload kinds under the SDK's mocks: resources, inputs and dependencies."""

from __future__ import annotations

import json
from typing import Any

import pytest
from keyfence_policies import labels as L

from keyfence import fleet as resources
from keyfence.check.harness import Collected, RegisteredResource, collect
from keyfence.errors import SpecError
from keyfence.spec import FleetSpec, load_spec_text
from tests.fleet_fixtures import canary_strings, resolved_keys

MIXED = """
version: 1
delivery: pulumi-secret
operators:
  vault_address: https://vault.example.com:8200
  refresh_interval: 15m
subaccounts:
  - name: momentum
    venue: futures
    delivery: vault-secrets-operator
    processes:
      - {name: executor, role: trader, image: "ghcr.io/acme/momentum:1.4.2", workload: statefulset,
         termination_grace_period_seconds: 5}
      - {name: feed, role: market-data, image: "ghcr.io/acme/feed:0.9.0"}
      - {name: risk, role: risk, image: "ghcr.io/acme/risk:1.0.3", delivery: external-secrets}
  - name: basis
    venue: futures
    workload: statefulset
    processes:
      - {name: executor, role: trader, image: "ghcr.io/acme/basis:0.7.1"}
      - {name: feed, role: market-data, image: "ghcr.io/acme/feed:0.9.0", delivery: external-secrets,
         workload: deployment}
"""


def mixed_spec(text: str = MIXED) -> FleetSpec:
    return load_spec_text(text, "mixed.yaml")


def operator_keys(spec: FleetSpec) -> list[Any]:
    """Keys as deploy mode resolves them: material only where the program delivers it."""
    keys = resolved_keys(spec)
    return [k if k.entry.delivery == "pulumi-secret" else _without_material(k) for k in keys]


def _without_material(key: Any) -> Any:
    from dataclasses import replace

    return replace(key, material=None, identity_source="metadata")


@pytest.fixture(scope="module")
def declared() -> tuple[Collected, list[Any]]:
    spec = mixed_spec()
    keys = operator_keys(spec)
    return collect(lambda: resources.declare_fleet(spec, keys)), keys


def by_name(collected: Collected) -> dict[str, RegisteredResource]:
    return {f"{r.type}::{r.name}": r for r in collected.resources}


def test_effective_settings_inherit_fleet_then_subaccount_then_process() -> None:
    entries = {e.ref: e for e in mixed_spec().entries()}
    assert entries["momentum/executor"].delivery == "vault-secrets-operator"
    assert entries["momentum/executor"].workload == "statefulset"
    assert entries["momentum/executor"].grace_seconds == 5
    assert entries["momentum/feed"].workload == "deployment" and entries["momentum/feed"].grace_seconds == 30
    assert entries["momentum/risk"].delivery == "external-secrets"
    assert entries["basis/executor"].delivery == "pulumi-secret"
    assert entries["basis/executor"].workload == "statefulset"
    assert entries["basis/feed"].workload == "deployment"


def test_spec_refuses_bad_settings() -> None:
    with pytest.raises(SpecError) as err:
        mixed_spec(MIXED.replace("vault_address: https://vault.example.com:8200\n", ""))
    assert "operators.vault_address" in "\n".join(err.value.problems)
    for bad, said in (
        ("delivery: pulumi-secret\n", "delivery: sidecar\n"),
        ("refresh_interval: 15m", "refresh_interval: 0s"),
        ("termination_grace_period_seconds: 5", "termination_grace_period_seconds: 0"),
    ):
        with pytest.raises(SpecError):
            mixed_spec(MIXED.replace(bad, said))
    # The operators add /v1 themselves, as the Vault client does for VAULT_ADDR.
    with pytest.raises(SpecError) as err:
        mixed_spec(MIXED.replace("https://vault.example.com:8200", "https://vault.example.com:8200/v1/"))
    assert "API path /v1" in "\n".join(err.value.problems)
    assert "https://vault.example.com:8200" in "\n".join(err.value.problems)


def test_vault_secrets_operator_resources(declared: tuple[Collected, list[Any]]) -> None:
    collected, keys = declared
    named = by_name(collected)
    key = next(k for k in keys if k.entry.ref == "momentum/executor")
    static = named["kubernetes:secrets.hashicorp.com/v1beta1:VaultStaticSecret::momentum/executor/key"]
    auth = named["kubernetes:secrets.hashicorp.com/v1beta1:VaultAuth::momentum/executor/vault-auth"]
    spec = static.inputs()["spec"]
    assert spec["type"] == "kv-v2" and spec["mount"] == "secret" and spec["path"] == key.path
    assert spec["hmacSecretData"] is True and spec["refreshAfter"] == "15m"
    assert spec["rolloutRestartTargets"] == [{"kind": "StatefulSet", "name": "executor"}]
    assert spec["vaultAuthRef"] == auth.inputs()["metadata"]["name"]
    destination = spec["destination"]
    assert destination["name"] == "executor-key" and destination["create"] is True
    assert destination["labels"][L.EXCHANGE_KEY] == "true"
    assert destination["annotations"][L.FINGERPRINT] == key.fingerprint
    assert destination["annotations"][L.KEY_PATH] == key.path
    auth_spec = auth.inputs()["spec"]
    assert auth_spec["method"] == "kubernetes"
    assert auth_spec["kubernetes"] == {
        "role": "keyfence-momentum.executor",
        "serviceAccount": "executor",
        "audiences": ["vault"],
    }
    assert auth.inputs()["metadata"]["namespace"] == "momentum"
    assert auth.urn in static.dependencies
    # The pod template carries no version: VSO restarts the workload itself on rotation.
    workload = named["kubernetes:apps/v1:StatefulSet::momentum/executor"].inputs()
    assert L.KEY_VERSION not in workload["spec"]["template"]["metadata"]["annotations"]
    assert workload["metadata"]["annotations"][L.KEY_VERSION] == "3"
    assert static.urn in named["kubernetes:apps/v1:StatefulSet::momentum/executor"].dependencies


def test_external_secrets_resources(declared: tuple[Collected, list[Any]]) -> None:
    collected, keys = declared
    named = by_name(collected)
    key = next(k for k in keys if k.entry.ref == "momentum/risk")
    external = named["kubernetes:external-secrets.io/v1:ExternalSecret::momentum/risk/key"]
    store = named["kubernetes:external-secrets.io/v1:SecretStore::momentum/risk/secret-store"]
    spec = external.inputs()["spec"]
    assert spec["refreshInterval"] == "15m"
    assert spec["secretStoreRef"] == {"kind": "SecretStore", "name": "risk-vault"}
    assert spec["target"]["name"] == "risk-key"
    assert spec["target"]["template"]["metadata"]["labels"][L.EXCHANGE_KEY] == "true"
    assert spec["data"] == [
        {"secretKey": f, "remoteRef": {"key": key.path, "property": f, "version": "3"}} for f in L.KEY_FILES
    ]
    vault = store.inputs()["spec"]["provider"]["vault"]
    assert vault["server"] == "https://vault.example.com:8200" and vault["path"] == "secret"
    assert vault["version"] == "v2"
    assert vault["auth"]["kubernetes"]["role"] == "keyfence-momentum.risk"
    assert vault["auth"]["kubernetes"]["serviceAccountRef"]["name"] == "risk"
    assert store.urn in external.dependencies
    deployment = named["kubernetes:apps/v1:Deployment::momentum/risk"].inputs()
    # The pinned version and the pod template's annotation move together: one rollout per rotation.
    assert deployment["spec"]["template"]["metadata"]["annotations"][L.KEY_VERSION] == "3"


def test_reloader_restart_follows_latest_and_annotates() -> None:
    spec = mixed_spec(MIXED.replace("refresh_interval: 15m", "refresh_interval: 15m\n  restart: reloader"))
    collected = collect(lambda: resources.declare_fleet(spec, operator_keys(spec)))
    named = by_name(collected)
    external = named["kubernetes:external-secrets.io/v1:ExternalSecret::momentum/risk/key"].inputs()
    assert all("version" not in d["remoteRef"] for d in external["spec"]["data"])
    deployment = named["kubernetes:apps/v1:Deployment::momentum/risk"].inputs()
    assert deployment["metadata"]["annotations"]["secret.reloader.stakater.com/reload"] == "risk-key"


def test_each_pod_mounts_its_own_delivered_secret(declared: tuple[Collected, list[Any]]) -> None:
    collected, keys = declared
    for key in keys:
        kind = "StatefulSet" if key.entry.workload == "statefulset" else "Deployment"
        workload = by_name(collected)[f"kubernetes:apps/v1:{kind}::{key.entry.ref}"].inputs()
        pod = workload["spec"]["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if "secret" in v]
        expected = f"{key.entry.process.name}-key" + ("-v3" if key.entry.delivery == "pulumi-secret" else "")
        assert volume["secret"]["secretName"] == expected
        assert pod["terminationGracePeriodSeconds"] == key.entry.grace_seconds
        assert workload["metadata"]["annotations"][L.KEY_PATH] == key.path
        assert workload["metadata"]["annotations"][L.FINGERPRINT] == key.fingerprint


def test_statefulset_single_writer_with_governing_service(declared: tuple[Collected, list[Any]]) -> None:
    collected, _ = declared
    named = by_name(collected)
    for ref in ("momentum/executor", "basis/executor"):
        sts = named[f"kubernetes:apps/v1:StatefulSet::{ref}"]
        spec = sts.inputs()["spec"]
        assert spec["replicas"] == 1 and spec["podManagementPolicy"] == "OrderedReady"
        service = named[f"kubernetes:core/v1:Service::{ref}/governing"]
        assert service.inputs()["spec"]["clusterIP"] == "None"
        assert spec["serviceName"] == service.inputs()["metadata"]["name"]
        assert spec["selector"]["matchLabels"] == service.inputs()["spec"]["selector"]
        assert service.urn in sts.dependencies
        pod = spec["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    assert not [r for r in collected.resources if r.name.startswith("basis/feed") and "StatefulSet" in r.type]


def test_operator_modes_declare_no_secret_and_no_material(declared: tuple[Collected, list[Any]]) -> None:
    collected, keys = declared
    secrets = [r.inputs()["metadata"]["name"] for r in collected.resources if r.type.endswith(":Secret")]
    assert sorted(secrets) == ["executor-key-v3"], "only the pulumi-secret process has a declared Secret"
    operator = [k for k in keys if k.entry.operator_delivered]
    assert len(operator) == 4
    everything = json.dumps([r.properties for r in collected.resources], default=str)
    everything += json.dumps(collected.stack_outputs, default=str)
    full = resolved_keys(mixed_spec())
    for key in full:
        if key.entry.operator_delivered:
            for canary in canary_strings([key]):
                assert canary not in everything


HYPHENS = """
version: 1
delivery: vault-secrets-operator
operators:
  vault_address: https://vault.example.com:8200
subaccounts:
  - name: alpha-beta
    venue: futures
    processes:
      - {name: feed, role: market-data, image: "ghcr.io/acme/feed:0.9.0"}
  - name: alpha
    venue: futures
    processes:
      - {name: beta-feed, role: market-data, image: "ghcr.io/acme/feed:0.9.0", delivery: external-secrets}
"""


def test_each_process_has_its_own_vault_role_and_policy_even_when_names_hold_hyphens() -> None:
    """alpha-beta/feed and alpha/beta-feed: one shared role name would bind the last one written only."""
    from keyfence.delivery.vaultpolicy import process_access, render

    spec = mixed_spec(HYPHENS)
    names = {a.entry.ref: a.name for a in process_access(spec)}
    assert len(set(names.values())) == 2, names
    collected = collect(lambda: resources.declare_fleet(spec, operator_keys(spec)))
    named = by_name(collected)
    vso = named["kubernetes:secrets.hashicorp.com/v1beta1:VaultAuth::alpha-beta/feed/vault-auth"]
    eso = named["kubernetes:external-secrets.io/v1:SecretStore::alpha/beta-feed/secret-store"]
    assert vso.inputs()["spec"]["kubernetes"]["role"] == names["alpha-beta/feed"]
    assert eso.inputs()["spec"]["provider"]["vault"]["auth"]["kubernetes"]["role"] == names["alpha/beta-feed"]
    text = render(spec)
    for name in names.values():
        assert f"role/{name} " in text and f"vault policy write {name} " in text
