"""Workloads by shape: whatever runs a pod spec holds what it mounts, whatever its kind (issue #10, 1)."""

from __future__ import annotations

from typing import Any

import pytest
from keyfence_policies import labels as L
from keyfence_policies.config import parse_config
from keyfence_policies.kinds import resource_kind

from tests.policies.builders import (
    DEPLOYMENT,
    HPA_V2,
    REPLICATION_CONTROLLER,
    ROLLOUT,
    Proc,
    bare_pod_spec,
    fleet_stack,
    fleet_urn,
    hpa_props,
    plain_deployment,
    run,
    urn_of,
    urns,
    wrap,
)

P = Proc("momentum", "executor")
DUPLICATE, SINGLE = "no-duplicate-key-assignment", "single-writer-per-key"


def mounting(secret: str = P.secret_name, **container: Any) -> dict[str, Any]:
    return bare_pod_spec(
        {"name": "bot", "image": "ghcr.io/acme/bot:1.0.0", **container},
        [{"name": "key", "secret": {"secretName": secret}}],
    )


def custom(resource_type: str, spec: dict[str, Any], name: str = "rogue", namespace: str = "momentum") -> Any:
    return wrap(
        resource_type, {"metadata": {"name": name, "namespace": namespace}, "spec": spec}, f"hand/{name}"
    )


@pytest.mark.parametrize(
    ("resource_type", "kind", "variant"),
    [
        ("kubernetes:apps/v1:DeploymentPatch", "Deployment", "Patch"),
        ("kubernetes:apps/v1:DeploymentList", "Deployment", "List"),
        ("kubernetes:argoproj.io/v1alpha1:Rollout", "Rollout", ""),
        ("kubernetes:apps.kruise.io/v1alpha1:CloneSet", "CloneSet", ""),
        ("kubernetes:core/v1:ReplicationController", "ReplicationController", ""),
    ],
)
def test_every_kubernetes_type_is_parsed(resource_type: str, kind: str, variant: str) -> None:
    parsed = resource_kind(resource_type)
    assert parsed is not None and (parsed.kind, parsed.variant) == (kind, variant)


def test_a_replication_controller_on_the_key_is_a_second_holder_with_replicas() -> None:
    props = {
        "metadata": {"name": "twin", "namespace": "momentum"},
        "spec": {"replicas": 2.0, "template": {"metadata": {}, "spec": mounting()}},
    }
    rc = wrap(REPLICATION_CONTROLLER, props, "hand/twin")
    stack = [*fleet_stack([P]), rc]
    duplicates = run(DUPLICATE, stack)
    assert sorted(urns(duplicates)) == sorted([rc.urn, fleet_urn(DEPLOYMENT, P)])
    singles = run(SINGLE, stack)
    assert urns(singles) == [rc.urn]
    assert "a ReplicationController may not hold an exchange key" in singles[0].message
    allowed = run(SINGLE, stack, {"keyBearingKinds": ["Deployment", "ReplicationController"]})
    assert urns(allowed) == [rc.urn] and "sets spec.replicas: 2" in allowed[0].message


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"replicas": 3.0}, "sets spec.replicas: 3"),
        ({"strategy": {"type": "RollingUpdate"}}, "uses spec.strategy.type RollingUpdate"),
        (
            {"replicas": 2, "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}},
            "spec.replicas: 2",
        ),
    ],
)
def test_a_patch_is_merged_onto_the_deployment_it_names(change: dict[str, Any], expected: str) -> None:
    patch = wrap(
        "kubernetes:apps/v1:DeploymentPatch",
        {"metadata": {"name": "executor", "namespace": "momentum"}, "spec": change},
        "hand/executor-patch",
    )
    violations = run(SINGLE, [*fleet_stack([P]), patch])
    assert violations and set(urns(violations)) == {patch.urn}
    assert any(expected in v.message for v in violations)
    assert "(as patched by DeploymentPatch momentum/executor)" in violations[0].message


def test_a_patch_adding_a_container_merges_by_name() -> None:
    added = {
        "name": "spy",
        "image": "x:1",
        "volumeMounts": [{"name": "exchange-key", "mountPath": "/k", "readOnly": True}],
    }
    patch = wrap(
        "kubernetes:apps/v1:DeploymentPatch",
        {
            "metadata": {"name": "executor", "namespace": "momentum"},
            "spec": {"template": {"spec": {"containers": [{"name": "executor", "image": "x:2"}, added]}}},
        },
        "hand/p",
    )
    violations = run(SINGLE, [*fleet_stack([P]), patch])
    assert urns(violations) == [patch.urn]
    assert "container executor" in violations[0].message and "container spy" in violations[0].message


def test_a_harmless_patch_passes() -> None:
    patch = wrap(
        "kubernetes:apps/v1:DeploymentPatch",
        {"metadata": {"name": "executor", "namespace": "momentum", "annotations": {"team": "desk"}}},
        "hand/p",
    )
    for policy in (DUPLICATE, SINGLE, "key-not-in-env", "subaccount-tag-required"):
        assert run(policy, [*fleet_stack([P]), patch]) == [], policy


def test_a_patch_of_something_the_stack_does_not_declare_fails_closed() -> None:
    patch = wrap(
        "kubernetes:apps/v1:DeploymentPatch",
        {"metadata": {"name": "ghost", "namespace": "momentum"}, "spec": {"replicas": 4.0}},
        "hand/ghost",
    )
    violations = run(SINGLE, [*fleet_stack([P]), patch])
    assert urns(violations) == [patch.urn]
    assert "patches a Deployment that this stack does not declare" in violations[0].message
    elsewhere = wrap(
        "kubernetes:apps/v1:DeploymentPatch",
        {"metadata": {"name": "web", "namespace": "web"}, "spec": {"replicas": 4.0}},
        "hand/web",
    )
    assert run(SINGLE, [*fleet_stack([P]), elsewhere]) == []


def test_a_list_resource_is_judged_item_by_item() -> None:
    listed = wrap(
        "kubernetes:apps/v1:DeploymentList",
        {
            "items": [
                {
                    "metadata": {"name": "web", "namespace": "momentum"},
                    "spec": {"template": {"spec": bare_pod_spec()}},
                },
                {
                    "metadata": {"name": "twin", "namespace": "momentum"},
                    "spec": {"replicas": 2.0, "template": {"spec": mounting()}},
                },
            ]
        },
        "hand/list",
    )
    duplicates = run(DUPLICATE, [*fleet_stack([P]), listed])
    assert listed.urn in urns(duplicates)
    assert any("Deployment momentum/twin (item 1 of DeploymentList" in v.message for v in duplicates)
    assert not any("momentum/web" in v.message for v in duplicates)


@pytest.mark.parametrize(
    ("strategy", "replicas", "expected"),
    [
        ({"canary": {"steps": [{"setWeight": 50}]}}, 1.0, "a canary strategy with surge"),
        ({"blueGreen": {"activeService": "bot"}}, 1.0, "a blue-green strategy"),
        ({"canary": {"maxSurge": "0%"}}, 2.0, "sets spec.replicas: 2"),
    ],
)
def test_an_argo_rollout_is_a_workload_with_rollout_semantics(
    strategy: dict[str, Any], replicas: float, expected: str
) -> None:
    rollout = custom(ROLLOUT, {"replicas": replicas, "strategy": strategy, "template": {"spec": mounting()}})
    stack = [*fleet_stack([P]), rollout]
    assert rollout.urn in urns(run(DUPLICATE, stack))
    default = run(SINGLE, stack)
    assert urns(default) == [rollout.urn] and "a Rollout may not hold an exchange key" in default[0].message
    allowed = run(SINGLE, stack, {"keyBearingKinds": ["Deployment", "Rollout"]})
    assert urns(allowed) == [rollout.urn] and expected in allowed[0].message


def test_a_rollout_referencing_a_key_bearing_deployment_holds_its_key() -> None:
    rollout = custom(
        ROLLOUT, {"workloadRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "executor"}}
    )
    violations = run(DUPLICATE, [*fleet_stack([P]), rollout])
    assert sorted(urns(violations)) == sorted([rollout.urn, fleet_urn(DEPLOYMENT, P)])


def test_keda_scaled_jobs_and_objects() -> None:
    job = custom(
        "kubernetes:keda.sh/v1alpha1:ScaledJob",
        {"jobTargetRef": {"template": {"spec": mounting()}}, "maxReplicaCount": 1.0},
    )
    stack = [*fleet_stack([P]), job]
    assert job.urn in urns(run(DUPLICATE, stack))
    assert (
        "a ScaledJob may not hold an exchange key (KEDA starts a Job per event"
        in run(SINGLE, stack)[0].message
    )
    scaled = custom(
        "kubernetes:keda.sh/v1alpha1:ScaledObject", {"scaleTargetRef": {"kind": "Rollout", "name": "r"}}
    )
    rollout = custom(ROLLOUT, {"template": {"spec": mounting()}}, name="r")
    found = run(SINGLE, [*fleet_stack([P]), rollout, scaled], {"keyBearingKinds": ["Deployment", "Rollout"]})
    assert scaled.urn in urns(found)


@pytest.mark.parametrize(
    "resource_type",
    [
        "kubernetes:apps.kruise.io/v1alpha1:CloneSet",
        "kubernetes:serving.knative.dev/v1:Service",
        "kubernetes:example.com/v1:Deployment",
        "kubernetes:core/v1:PodTemplate",
    ],
)
def test_an_unknown_kind_holding_a_key_cannot_be_proved_single_writer(resource_type: str) -> None:
    spec = {"template": {"spec": mounting()}}
    props = {"metadata": {"name": "rogue", "namespace": "momentum"}, "spec": spec}
    if resource_type.endswith(":PodTemplate"):
        props = {"metadata": {"name": "rogue", "namespace": "momentum"}, "template": {"spec": mounting()}}
    rogue = wrap(resource_type, props, "hand/rogue")
    stack = [*fleet_stack([P]), rogue]
    assert rogue.urn in urns(run(DUPLICATE, stack))
    violations = run(SINGLE, stack)
    assert urns(violations) == [rogue.urn]
    assert (
        "cannot prove one pod at a time" in violations[0].message or "may not hold" in violations[0].message
    )


def test_a_custom_kind_configured_as_safe_is_held_to_one_replica() -> None:
    rogue = custom(
        "kubernetes:acme.io/v1:Trader", {"replicas": 1.0, "template": {"spec": mounting("sidecar")}}
    )
    config = {"keyBearingKinds": ["Deployment", "acme.io/Trader"]}
    sidecar = Proc("momentum", "sidecar")
    stack = [
        *fleet_stack([P]),
        wrap("kubernetes:core/v1:Secret", _labelled(sidecar), "hand/sidecar-key"),
        rogue,
    ]
    assert run(SINGLE, stack, config) == []
    rogue.props["spec"]["replicas"] = 2.0
    assert "sets spec.replicas: 2" in run(SINGLE, stack, config)[0].message
    assert parse_config(config).errors == ()


def _labelled(p: Proc) -> dict[str, Any]:
    return {
        "metadata": {
            "name": p.name,
            "namespace": p.subaccount,
            "labels": {L.EXCHANGE_KEY: "true", L.SUBACCOUNT: p.subaccount},
        }
    }


def test_a_pod_spec_deep_inside_any_resource_is_found() -> None:
    odd = wrap(
        "kubernetes:batch.acme.io/v2:Pipeline",
        {
            "metadata": {"name": "etl", "namespace": "momentum"},
            "spec": {"stages": [{"name": "a", "runner": {"podSpec": mounting()}}]},
        },
        "hand/etl",
    )
    assert odd.urn in urns(run(DUPLICATE, [*fleet_stack([P]), odd]))


def test_snake_case_fields_of_a_custom_resource_are_read_too() -> None:
    spec = {
        "containers": [
            {"name": "bot", "image": "x:1", "env_from": [{"secret_ref": {"name": P.secret_name}}]}
        ],
    }
    rogue = custom("kubernetes:acme.io/v1:Bot", {"template": {"spec": spec}})
    assert rogue.urn in urns(run(DUPLICATE, [*fleet_stack([P]), rogue]))


def test_an_hpa_on_a_patched_deployment_is_still_reported() -> None:
    hpa = wrap(HPA_V2, hpa_props("momentum", "executor"), "hand/hpa")
    assert urns(run(SINGLE, [*fleet_stack([P]), hpa])) == [hpa.urn]


def test_workloads_that_hold_nothing_are_left_alone() -> None:
    web = plain_deployment("momentum", "web", bare_pod_spec())
    rogue = custom("kubernetes:apps.kruise.io/v1alpha1:CloneSet", {"template": {"spec": bare_pod_spec()}})
    for policy in (DUPLICATE, SINGLE):
        assert run(policy, [*fleet_stack([P]), web, rogue]) == [], policy
    assert urn_of(DEPLOYMENT, "hand/web") == web.urn
