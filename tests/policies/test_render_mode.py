"""key-not-in-env: no provider in render mode (renderYamlToDirectory) writes key material to disk."""

from __future__ import annotations

from typing import Any

import pytest
from keyfence_policies import labels as L
from pulumi_policy import PolicyProviderResource, PolicyResource
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE, unknown_checking_proxy

from tests.policies.builders import (
    CONFIG_MAP,
    DEPLOYMENT,
    SECRET,
    Proc,
    fleet_stack,
    fleet_urn,
    material_of,
    run,
    urn_of,
    wrap,
)

POLICY = "key-not-in-env"
PROVIDER = "pulumi:providers:kubernetes"
P = Proc("momentum", "executor")
Q = Proc("momentum", "feed", role="market-data")
DEFAULT = {"version": "4.18.0"}
RENDER = {"renderYamlToDirectory": "rendered", "version": "4.18.0"}


def provider(name: str, props: dict[str, Any]) -> tuple[PolicyResource, PolicyProviderResource]:
    """A provider resource of the stack and the description the engine attaches to its users."""
    resource = wrap(PROVIDER, props, name)
    return resource, PolicyProviderResource(PROVIDER, unknown_checking_proxy(dict(props)), resource.urn, name)


def on(resources: list[PolicyResource], ref: PolicyProviderResource | None) -> list[PolicyResource]:
    """Every Kubernetes resource declared with provider ``ref``."""
    for resource in resources:
        if resource.resource_type.startswith("kubernetes:"):
            resource.provider = ref
    return resources


def rendered(violations: list[Any]) -> list[Any]:
    return [v for v in violations if "render mode" in v.message or "renderYamlToDirectory" in v.message]


def test_key_secrets_declared_with_a_rendering_provider_are_reported_without_material() -> None:
    render, ref = provider("render", RENDER)
    violations = run(POLICY, [render, *on(fleet_stack([P, Q], material=True), ref)])
    assert sorted(v.urn for v in violations) == sorted(fleet_urn(SECRET, p, "/key") for p in (P, Q)), (
        violations
    )
    for v in violations:
        assert "renders manifests to 'rendered' (renderYamlToDirectory)" in v.message
        assert "delivery: vault-secrets-operator" in v.message
        assert all(m not in v.message for p in (P, Q) for m in material_of(p))


def test_the_placeholder_of_keyfence_check_counts_as_material() -> None:
    render, ref = provider("render", RENDER)
    violations = run(POLICY, [render, *on(fleet_stack([P]), ref)])
    assert [v.urn for v in violations] == [fleet_urn(SECRET, P, "/key")]


def test_the_default_provider_set_to_render_by_stack_config_is_caught_too() -> None:
    default, ref = provider("default", RENDER)
    assert len(run(POLICY, [default, *on(fleet_stack([P]), ref)])) == 1


def test_a_provider_without_render_mode_passes() -> None:
    default, ref = provider("default", DEFAULT)
    empty, empty_ref = provider("empty", {"renderYamlToDirectory": ""})
    assert run(POLICY, [default, *on(fleet_stack([P], material=True), ref)]) == []
    assert run(POLICY, [empty, *on(fleet_stack([P], material=True), empty_ref)]) == []


def test_a_rendering_provider_beside_the_keys_is_fine_when_it_declares_no_material() -> None:
    default, ref = provider("default", DEFAULT)
    render, render_ref = provider("render", RENDER)
    config = wrap(CONFIG_MAP, {"metadata": {"name": "settings", "namespace": "tools"}, "data": {"a": "b"}})
    config.provider = render_ref
    assert run(POLICY, [default, render, *on(fleet_stack([P], material=True), ref), config]) == []


def test_a_hand_written_key_secret_on_a_rendering_provider_is_reported() -> None:
    default, ref = provider("default", DEFAULT)
    render, render_ref = provider("render", RENDER)
    stray = wrap(
        SECRET,
        {
            "metadata": {"name": "bot-key", "namespace": "tools", "labels": {L.EXCHANGE_KEY: "true"}},
            "stringData": {"api_key": "whatever-it-is", "api_secret": "not-shown-anyway"},
        },
    )
    stray.provider = render_ref
    violations = run(POLICY, [default, render, *on(fleet_stack([P]), ref), stray])
    assert [v.urn for v in violations] == [urn_of(SECRET, "tools/bot-key")]
    assert "not-shown-anyway" not in violations[0].message


def test_a_copy_of_key_material_on_a_rendering_provider_is_reported() -> None:
    default, ref = provider("default", DEFAULT)
    render, render_ref = provider("render", RENDER)
    _, api_secret = material_of(P)
    copy = wrap(CONFIG_MAP, {"metadata": {"name": "bot", "namespace": "tools"}, "data": {"auth": api_secret}})
    copy.provider = render_ref
    violations = rendered(run(POLICY, [default, render, *on(fleet_stack([P], material=True), ref), copy]))
    assert [v.urn for v in violations] == [urn_of(CONFIG_MAP, "tools/bot")]
    assert api_secret not in violations[0].message


def test_without_provider_information_a_rendering_provider_fails_closed() -> None:
    render, _ = provider("render", RENDER)
    violations = run(POLICY, [render, *fleet_stack([P])])  # nobody says which provider declares what
    assert [v.urn for v in violations] == [fleet_urn(SECRET, P, "/key")]
    assert "cannot tell which provider" in violations[0].message and "fails closed" in violations[0].message
    assert run(POLICY, fleet_stack([P])) == []  # no rendering provider anywhere: nothing to fear


@pytest.mark.parametrize("value", [UNKNOWN_STRING_VALUE, 7, {"dir": "x"}])
def test_a_render_setting_that_cannot_be_read_fails_closed(value: object) -> None:
    render, ref = provider("render", {"renderYamlToDirectory": value})
    violations = run(POLICY, [render, *on(fleet_stack([P]), ref)])
    assert [v.urn for v in violations] == [fleet_urn(SECRET, P, "/key")]
    assert "renderYamlToDirectory" in violations[0].message


def test_a_provider_seen_only_on_its_users_is_judged_too() -> None:
    """A stack listing no provider resources still names each resource's provider."""
    _, ref = provider("render", RENDER)
    violations = run(POLICY, on(fleet_stack([P]), ref))
    assert [v.urn for v in violations] == [fleet_urn(SECRET, P, "/key")]


def test_operator_delivery_under_render_mode_passes() -> None:
    """An operator writes the Secret in the cluster: the rendered manifests hold no key."""
    render, ref = provider("render", RENDER)
    stack = [r for r in fleet_stack([P]) if r.resource_type != SECRET]
    static = wrap(
        "kubernetes:secrets.hashicorp.com/v1beta1:VaultStaticSecret",
        {
            "apiVersion": "secrets.hashicorp.com/v1beta1",
            "kind": "VaultStaticSecret",
            "metadata": {"name": P.secret_name, "namespace": P.subaccount},
            "spec": {"type": "kv-v2", "mount": "secret", "path": "kraken/momentum/executor"},
        },
    )
    violations = run(POLICY, [render, *on([*stack, static], ref)])
    assert rendered(violations) == [], violations
    assert any(r.resource_type == DEPLOYMENT for r in stack)
