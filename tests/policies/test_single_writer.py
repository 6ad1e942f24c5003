"""single-writer-per-key: a key-bearing workload can never run two pods at once."""

from __future__ import annotations

from typing import Any

import pytest

from tests.policies.builders import (
    DEPLOYMENT,
    HPA_V1,
    HPA_V2,
    KIND_TYPES,
    Proc,
    bare_pod_spec,
    clean_stack,
    deployment_props,
    deployment_urn,
    hpa_props,
    proc_workload,
    run,
    urn_of,
    urns,
    workload_props,
    wrap,
)

POLICY = "single-writer-per-key"
P = Proc("momentum", "executor")


def stack_with(props: dict[str, Any], p: Proc = P) -> list[Any]:
    """The one-process stack with its Deployment replaced by ``props``."""
    return [r for r in clean_stack([p]) if r.resource_type != DEPLOYMENT] + [
        wrap(DEPLOYMENT, props, p.resource_name)
    ]


def test_the_example_fleet_passes() -> None:
    assert run(POLICY, clean_stack()) == []


@pytest.mark.parametrize("replicas", [2.0, 2, 5.0])
def test_more_than_one_replica_is_reported(replicas: object) -> None:
    props = deployment_props(P)
    props["spec"]["replicas"] = replicas
    violations = run(POLICY, stack_with(props))
    assert urns(violations) == [deployment_urn(P)]
    message = violations[0].message
    assert message.startswith(
        "Deployment momentum/executor holds exchange key secret/kraken/momentum/executor"
    )
    assert "spec.replicas: 2" in message or "spec.replicas: 5" in message
    assert "Set spec.replicas: 1" in message


@pytest.mark.parametrize("replicas", [0.0, 1, None])
def test_zero_one_or_absent_replicas_pass(replicas: object) -> None:
    props = deployment_props(P)
    props["spec"]["replicas"] = replicas
    assert run(POLICY, stack_with(props)) == []


def test_a_rolling_update_is_reported() -> None:
    props = deployment_props(P)
    props["spec"]["strategy"] = {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": "25%"}}
    violations = run(POLICY, stack_with(props))
    assert urns(violations) == [deployment_urn(P)]
    assert "uses spec.strategy.type RollingUpdate" in violations[0].message
    assert "Set spec.strategy.type: Recreate" in violations[0].message


def test_a_missing_strategy_means_rolling_update_and_is_reported() -> None:
    props = deployment_props(P)
    del props["spec"]["strategy"]
    violations = run(POLICY, stack_with(props))
    assert urns(violations) == [deployment_urn(P)]
    assert "has no spec.strategy.type, so Kubernetes uses RollingUpdate" in violations[0].message


@pytest.mark.parametrize("kind", ["StatefulSet", "ReplicaSet"])
def test_statefulsets_and_replicasets_are_bounded_to_one_replica(kind: str) -> None:
    ok = proc_workload(kind, P, replicas=1.0)
    assert run(POLICY, [ok]) == []
    bad = proc_workload(kind, P, replicas=3.0)
    violations = run(POLICY, [bad])
    assert urns(violations) == [bad.urn]
    assert (
        f"{kind} momentum/executor" in violations[0].message and "spec.replicas: 3" in violations[0].message
    )


@pytest.mark.parametrize("kind", ["DaemonSet", "Job", "CronJob"])
def test_daemonsets_jobs_and_cronjobs_may_not_hold_a_key(kind: str) -> None:
    workload = proc_workload(kind, P)
    violations = run(POLICY, [workload])
    assert urns(violations) == [workload.urn]
    message = violations[0].message
    assert f"{kind} momentum/executor holds exchange key" in message
    assert f"a {kind} may not hold an exchange key" in message
    assert "Deployment, Pod, ReplicaSet, StatefulSet" in message
    assert f"add {kind} to keyBearingKinds" in message


@pytest.mark.parametrize("kind", ["DaemonSet", "Job", "CronJob"])
def test_the_same_kinds_without_a_key_are_fine(kind: str) -> None:
    props = workload_props(kind, bare_pod_spec(), namespace="ops", name="cleanup")
    assert run(POLICY, [wrap(KIND_TYPES[kind], props)]) == []


def test_key_bearing_kinds_can_allow_a_single_run_cronjob() -> None:
    config = {"keyBearingKinds": ["Deployment", "CronJob"]}
    assert run(POLICY, [proc_workload("CronJob", P, concurrencyPolicy="Forbid")], config) == []
    overlapping = proc_workload("CronJob", P)
    violations = run(POLICY, [overlapping], config)
    assert urns(violations) == [overlapping.urn]
    assert "spec.concurrencyPolicy is Allow (the default)" in violations[0].message
    parallel = proc_workload("CronJob", P, concurrencyPolicy="Forbid")
    parallel.props["spec"]["jobTemplate"]["spec"]["parallelism"] = 2.0
    assert "spec.jobTemplate.spec.parallelism: 2" in run(POLICY, [parallel], config)[0].message


def test_key_bearing_kinds_can_allow_a_non_parallel_job() -> None:
    config = {"keyBearingKinds": ["Job"]}
    assert run(POLICY, [proc_workload("Job", P)], config) == []
    violations = run(POLICY, [proc_workload("Job", P, parallelism=4.0)], config)
    assert len(violations) == 1 and "spec.parallelism: 4" in violations[0].message


def test_key_bearing_kinds_can_forbid_bare_pods() -> None:
    pod = proc_workload("Pod", P)
    assert run(POLICY, [pod]) == []
    violations = run(POLICY, [pod], {"keyBearingKinds": ["Deployment"]})
    assert urns(violations) == [pod.urn]
    assert "it is not in keyBearingKinds" in violations[0].message


@pytest.mark.parametrize("hpa_type", [HPA_V2, HPA_V1])
def test_an_autoscaler_on_a_key_bearing_workload_is_reported(hpa_type: str) -> None:
    hpa = wrap(hpa_type, hpa_props("momentum", "executor"), "executor-hpa")
    violations = run(POLICY, [*clean_stack([P]), hpa])
    assert urns(violations) == [urn_of(hpa_type, "executor-hpa")]
    message = violations[0].message
    assert message.startswith("HorizontalPodAutoscaler momentum/scale scales Deployment momentum/executor")
    assert deployment_urn(P) in message
    assert "Remove the autoscaler" in message


def test_a_keda_scaled_object_defaults_to_deployments() -> None:
    scaled = wrap(
        "kubernetes:keda.sh/v1alpha1:ScaledObject",
        {
            "metadata": {"name": "s", "namespace": "momentum"},
            "spec": {"scaleTargetRef": {"name": "executor"}},
        },
        "keda",
    )
    violations = run(POLICY, [*clean_stack([P]), scaled])
    assert urns(violations) == [scaled.urn]


@pytest.mark.parametrize(
    "props",
    [
        hpa_props("momentum", "web"),  # a workload that holds no key
        hpa_props("basis", "executor"),  # another namespace
        hpa_props("momentum", "executor", kind="StatefulSet"),  # another kind
    ],
)
def test_autoscalers_on_other_workloads_are_fine(props: dict[str, Any]) -> None:
    web = workload_props("Deployment", bare_pod_spec(), namespace="momentum", name="web", replicas=3.0)
    stack = [*clean_stack([P]), wrap(DEPLOYMENT, web, "web"), wrap(HPA_V2, props, "hpa")]
    assert run(POLICY, stack) == []


def test_an_autoscaler_without_a_readable_target_fails_closed() -> None:
    hpa = wrap(
        HPA_V2,
        {"metadata": {"name": "h", "namespace": "momentum"}, "spec": {"scaleTargetRef": "executor"}},
        "h",
    )
    violations = run(POLICY, [*clean_stack([P]), hpa])
    assert urns(violations) == [hpa.urn]
    assert "cannot evaluate single-writer-per-key" in violations[0].message
    assert "spec.scaleTargetRef is a string, expected an object" in violations[0].message


def test_an_unreadable_replica_count_fails_closed() -> None:
    props = deployment_props(P)
    props["spec"]["replicas"] = "2"
    violations = run(POLICY, stack_with(props))
    assert urns(violations) == [deployment_urn(P)]
    assert "cannot evaluate single-writer-per-key: spec.replicas is a string, expected a whole number" in (
        violations[0].message
    )
