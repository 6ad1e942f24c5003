"""Keys by identity, not labels: fleet components, material digests, Vault paths and facts (#10, 2, 4)."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest
from keyfence_policies import labels as L

from tests.policies.builders import (
    CONFIG_MAP,
    DEPLOYMENT,
    PROCESS_COMPONENT,
    SECRET,
    SECRET_PROVIDER_CLASS,
    Proc,
    bare_pod_spec,
    child,
    component,
    fleet_stack,
    fleet_urn,
    known_keys,
    material_of,
    plain_deployment,
    run,
    secret_props,
    urns,
    wrap,
)

P = Proc("momentum", "executor")
OTHER = Proc("basis", "executor")
DUPLICATE = "no-duplicate-key-assignment"
FACTS = known_keys([P, OTHER])
API_KEY, API_SECRET = material_of(P)


def stack(*extra: Any, material: bool = False) -> list[Any]:
    return [*fleet_stack([P, OTHER], material=material), *extra]


def messages(violations: list[Any]) -> str:
    return "\n".join(v.message for v in violations)


def mounting(secret: str) -> dict[str, Any]:
    return bare_pod_spec(
        {"name": "bot", "image": "x:1", "volumeMounts": [{"name": "k", "mountPath": "/k", "readOnly": True}]},
        [{"name": "k", "secret": {"secretName": secret}}],
    )


def test_a_fleet_secret_is_a_key_secret_whatever_its_labels() -> None:
    stripped = []
    for resource in fleet_stack([P]):
        if resource.resource_type in (SECRET, DEPLOYMENT):
            for meta in (resource.props["metadata"]["__target"], None):
                if meta is not None:
                    meta["labels"] = {}
                    meta["annotations"] = {}
        stripped.append(resource)
    shadow = plain_deployment("momentum", "shadow", mounting(P.secret_name))
    violations = run(DUPLICATE, [*stripped, shadow], {"requireFingerprint": False})
    assert shadow.urn in urns(violations) and fleet_urn(DEPLOYMENT, P) in urns(violations)
    assert "Secret momentum/executor-key-v3" in messages(violations)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("stringData", {"api_key": API_KEY, "api_secret": API_SECRET}),
        ("stringData", {"token": API_SECRET}),
        ("data", {"token": base64.b64encode(API_SECRET.encode()).decode()}),
        ("stringData", {"bot.env": f"EXCHANGE=kraken\nKEY={API_KEY}\n"}),
    ],
    ids=["both", "secret-only", "base64-data", "env-file"],
)
def test_a_secret_holding_a_copy_of_the_material_is_a_copy_and_a_key(
    field: str, value: dict[str, str]
) -> None:
    copy = wrap(
        SECRET, {"metadata": {"name": "bot-creds", "namespace": "momentum"}, field: value}, "hand/bot-creds"
    )
    bot = plain_deployment("momentum", "bot", mounting("bot-creds"))
    violations = run(DUPLICATE, stack(copy, bot), FACTS)
    assert {copy.urn, bot.urn, fleet_urn(DEPLOYMENT, P)} <= set(urns(violations))
    copy_message = next(v.message for v in violations if v.urn == copy.urn)
    assert "Secret momentum/bot-creds holds a copy of the material of exchange key" in copy_message
    assert "secret/kraken/momentum/executor" in copy_message
    assert "(value not shown); delivered by Secret momentum/executor-key-v3" in copy_message
    assert "CANARY" not in messages(violations)


@pytest.mark.parametrize(
    "resource",
    [
        wrap(
            CONFIG_MAP,
            {
                "metadata": {"name": "cfg", "namespace": "tools"},
                "data": {"a.json": json.dumps({"k": API_SECRET})},
            },
            "hand/cfg",
        ),
        wrap(
            CONFIG_MAP,
            {
                "metadata": {"name": "cfg", "namespace": "tools"},
                "data": {"k": base64.b64encode(API_KEY.encode()).decode()},
            },
            "hand/cfg",
        ),
        plain_deployment(
            "tools",
            "bot",
            bare_pod_spec({"name": "b", "image": "x:1", "env": [{"name": "MODE", "value": API_KEY}]}),
        ),
        plain_deployment(
            "tools",
            "bot",
            bare_pod_spec({"name": "b", "image": "x:1", "args": ["--run", f"--signing={API_SECRET}"]}),
        ),
        plain_deployment("tools", "bot", bare_pod_spec(), annotations={"acme.io/note": API_KEY}),
        wrap("aws:ssm/parameter:Parameter", {"name": "/bot/key", "value": API_SECRET}, "hand/param"),
    ],
    ids=["config-map-json", "config-map-base64", "env-literal", "argument", "annotation", "other-provider"],
)
def test_material_anywhere_else_is_a_copy(resource: Any) -> None:
    violations = run(DUPLICATE, stack(resource), FACTS)
    assert resource.urn in urns(violations), messages(violations)
    assert any("holds a copy of the material" in v.message for v in violations if v.urn == resource.urn)
    assert "CANARY" not in messages(violations)


def test_an_env_literal_copy_is_also_a_key_in_env() -> None:
    bot = plain_deployment(
        "tools",
        "bot",
        bare_pod_spec({"name": "b", "image": "x:1", "env": [{"name": "MODE", "value": API_KEY}]}),
    )
    violations = run("key-not-in-env", stack(bot), FACTS)
    assert urns(violations) == [bot.urn]
    assert "writes the material of exchange key secret/kraken/momentum/executor" in violations[0].message
    assert "env[0].value of container b" in violations[0].message


def test_a_config_map_copy_makes_its_consumers_key_holders() -> None:
    cfg = wrap(
        CONFIG_MAP, {"metadata": {"name": "cfg", "namespace": "momentum"}, "data": {"k": API_KEY}}, "hand/cfg"
    )
    bot = plain_deployment(
        "momentum",
        "bot",
        bare_pod_spec({"name": "b", "image": "x:1", "envFrom": [{"configMapRef": {"name": "cfg"}}]}),
    )
    violations = run(DUPLICATE, stack(cfg, bot), FACTS)
    assert {cfg.urn, bot.urn, fleet_urn(DEPLOYMENT, P)} <= set(urns(violations))
    assert "loads key ConfigMap momentum/cfg" in run("key-not-in-env", stack(cfg, bot), FACTS)[0].message


def test_without_facts_the_fleets_own_material_and_fingerprints_are_known() -> None:
    """A real ``pulumi preview``: no config, but the fleet's Secrets hold the key and name its fingerprint."""
    by_secret = wrap(
        CONFIG_MAP, {"metadata": {"name": "a", "namespace": "tools"}, "data": {"k": API_SECRET}}, "hand/a"
    )
    by_key = wrap(
        CONFIG_MAP, {"metadata": {"name": "b", "namespace": "tools"}, "data": {"k": API_KEY}}, "hand/b"
    )
    violations = run(DUPLICATE, stack(by_secret, by_key, material=True))
    assert set(urns(violations)) == {by_secret.urn, by_key.urn}
    violations = run(DUPLICATE, stack(by_key))  # check mode: placeholders, the annotated fingerprint remains
    assert urns(violations) == [by_key.urn]


def test_two_fleet_secrets_with_one_material_are_one_key() -> None:
    twin = Proc("basis", "twin")
    resources = fleet_stack([P, twin], material=True)
    for resource in resources:
        if resource.resource_type == SECRET and resource.name.startswith("basis/twin"):
            resource.props["stringData"]["__target"].update({"api_key": API_KEY, "api_secret": API_SECRET})
    violations = run(DUPLICATE, resources)
    assert fleet_urn(SECRET, twin, "/key") in urns(violations)


@pytest.mark.parametrize(
    "annotations",
    [
        {"vault.hashicorp.com/agent-inject-secret-key": "secret/data/kraken/momentum/executor"},
        {
            "vault.hashicorp.com/agent-inject-template-key": '{{ with secret "secret/data/kraken/momentum/'
            'executor" }}{{ .Data.data.api_key }}{{ end }}'
        },
        {"acme.io/vault": "https://vault.example.com:8200/v1/secret/data/kraken/momentum/executor"},
    ],
    ids=["agent-secret", "agent-template", "api-url"],
)
def test_naming_the_key_by_its_vault_path_is_holding_it(annotations: dict[str, str]) -> None:
    injected = plain_deployment("momentum", "injected", bare_pod_spec(), annotations=annotations)
    violations = run(DUPLICATE, stack(injected), FACTS)
    assert sorted(urns(violations)) == sorted([injected.urn, fleet_urn(DEPLOYMENT, P)])
    assert "Vault key secret/kraken/momentum/executor" in messages(violations)
    assert "also used by Deployment momentum/injected" in messages(violations)


@pytest.mark.parametrize(
    ("resource_type", "spec"),
    [
        (
            SECRET_PROVIDER_CLASS,
            {
                "provider": "vault",
                "parameters": {
                    "objects": '- objectName: k\n  secretPath: "secret/data/kraken/momentum/executor"\n'
                },
            },
        ),
        (
            "kubernetes:secrets.hashicorp.com/v1beta1:VaultStaticSecret",
            {"mount": "secret", "path": "kraken/momentum/executor", "destination": {"name": "synced"}},
        ),
        (
            "kubernetes:external-secrets.io/v1beta1:ExternalSecret",
            {"data": [{"remoteRef": {"key": "secret/kraken/momentum/executor"}}]},
        ),
    ],
    ids=["csi", "vault-secrets-operator", "external-secrets"],
)
def test_a_vault_route_to_the_key_is_a_second_delivery(resource_type: str, spec: dict[str, Any]) -> None:
    route = wrap(
        resource_type, {"metadata": {"name": "route", "namespace": "momentum"}, "spec": spec}, "hand/route"
    )
    violations = run(DUPLICATE, stack(route))
    assert urns(violations) == [route.urn]
    assert (
        "names exchange key secret/kraken/momentum/executor (process momentum/executor) by its Vault path"
        in (violations[0].message)
    )


def test_a_workload_mounting_what_a_route_delivers_holds_the_key() -> None:
    spc = wrap(
        SECRET_PROVIDER_CLASS,
        {
            "metadata": {"name": "keys", "namespace": "momentum"},
            "spec": {
                "parameters": {"objects": "secretPath: secret/data/kraken/momentum/executor"},
                "secretObjects": [{"secretName": "synced"}],
            },
        },
        "hand/keys",
    )
    csi = plain_deployment(
        "momentum",
        "csi",
        bare_pod_spec(
            {"name": "b", "image": "x:1"},
            [
                {
                    "name": "k",
                    "csi": {
                        "driver": "secrets-store.csi.k8s.io",
                        "volumeAttributes": {"secretProviderClass": "keys"},
                    },
                }
            ],
        ),
    )
    synced = plain_deployment("momentum", "synced", mounting("synced"))
    violations = run(DUPLICATE, stack(spc, csi, synced))
    assert {spc.urn, csi.urn, synced.urn, fleet_urn(DEPLOYMENT, P)} <= set(urns(violations))


def test_an_unregistered_path_under_the_key_prefix_is_reported() -> None:
    route = wrap(
        "kubernetes:secrets.hashicorp.com/v1beta1:VaultStaticSecret",
        {
            "metadata": {"name": "r", "namespace": "tools"},
            "spec": {"path": "secret/data/kraken/momentum/ghost"},
        },
        "hand/r",
    )
    violations = run(DUPLICATE, stack(route), FACTS)
    assert urns(violations) == [route.urn]
    assert "secret/kraken/momentum/ghost (no registered key is at that path)" in violations[0].message
    elsewhere = wrap(
        CONFIG_MAP,
        {
            "metadata": {"name": "c", "namespace": "x"},
            "data": {"p": "kv-archive/kraken/momentum/executor", "i": "ghcr.io/kraken/bot:1"},
        },
        "hand/c",
    )
    assert run(DUPLICATE, stack(elsewhere), FACTS) == []


def test_the_subaccount_of_a_key_comes_from_the_facts_not_the_labels() -> None:
    facts = known_keys([P, OTHER])
    facts["knownKeys"][0]["subaccount"] = "basis"  # Vault says the executor's key is basis's
    violations = run("subaccount-tag-required", fleet_stack([P, OTHER]), facts)
    assert urns(violations) == [fleet_urn(DEPLOYMENT, P), fleet_urn(DEPLOYMENT, P)]
    text = messages(violations)
    assert (
        "labelled keyfence.io/subaccount=momentum, but Vault says the key belongs to subaccount basis" in text
    )
    assert "(subaccount momentum) holds the key of subaccount basis" in text


def test_without_facts_the_fleet_component_names_the_subaccount() -> None:
    relabelled = []
    for resource in fleet_stack([P]):
        meta = resource.props.get("metadata") if resource.props else None
        if meta is not None and L.SUBACCOUNT in meta.get("labels", {}):
            meta["__target"]["labels"] = {**meta["labels"], L.SUBACCOUNT: "main"}
        relabelled.append(resource)
    violations = run("subaccount-tag-required", relabelled)
    text = messages(violations)
    assert (
        "its keyfence fleet component momentum/executor says the key belongs to subaccount momentum" in text
    )
    assert "(subaccount main) holds the key of subaccount momentum" in text


def test_vault_confirms_labelled_key_secrets() -> None:
    sidecar = Proc("momentum", "sidecar", fingerprint="ab" * 32)
    invented = wrap(SECRET, secret_props(sidecar), "hand/sidecar-key")
    violations = run(DUPLICATE, stack(invented), FACTS)
    assert urns(violations) == [invented.urn]
    assert "unverifiable key" in violations[0].message
    assert (
        "Vault holds no registered key at its keyfence.io/key-path 'kraken/momentum/sidecar'"
        in violations[0].message
    )
    assert "is the fingerprint of no key registered in Vault" in violations[0].message
    assert run(DUPLICATE, stack(invented), known_keys([P, OTHER], vault=False)) == []


def test_a_fleet_secret_claiming_another_fingerprint_is_unverifiable() -> None:
    resources = fleet_stack([P, OTHER])
    for resource in resources:
        if resource.urn == fleet_urn(SECRET, P, "/key"):
            resource.props["metadata"]["annotations"]["__target"][L.FINGERPRINT] = "cd" * 32
    violations = run(DUPLICATE, resources, FACTS)
    assert fleet_urn(SECRET, P, "/key") in urns(violations)


def test_permissions_are_checked_against_vault() -> None:
    facts = known_keys([P, OTHER])
    facts["knownKeys"][0]["permissions"] = ["general-full", "withdrawal"]
    violations = run("least-privilege-key", fleet_stack([P, OTHER]), facts)
    assert set(urns(violations)) == {fleet_urn(DEPLOYMENT, P)}
    text = messages(violations)
    assert "but Vault records general-full,withdrawal for secret/kraken/momentum/executor" in text
    assert "withdrawal" in text


def test_a_hand_made_fleet_component_cannot_vouch_for_a_key() -> None:
    forged = component(PROCESS_COMPONENT, "momentum/ghost")
    secret = child(SECRET, secret_props(Proc("momentum", "ghost")), "momentum/ghost/key", forged)
    violations = run(DUPLICATE, [*stack(), forged, secret], FACTS)
    assert set(urns(violations)) == {secret.urn}
    assert "no process of the fleet spec" in violations[0].message
    assert "unverifiable key" in violations[1].message


def test_undeclared_secrets_in_subaccount_namespaces_fail_closed_offline_too() -> None:
    stray = plain_deployment("momentum", "stray", mounting("executor-key-v1"))
    elsewhere = plain_deployment("tools", "web", mounting("tls"))
    violations = run(DUPLICATE, stack(stray, elsewhere), known_keys([P, OTHER], vault=False))
    assert urns(violations) == [stray.urn]
    assert (
        'reads Secret executor-key-v1 (volume "k") in subaccount namespace momentum' in violations[0].message
    )
    assert "this stack does not declare it" in violations[0].message
