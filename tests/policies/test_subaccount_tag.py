"""subaccount-tag-required: workload, key Secret and Namespace agree on the subaccount."""

from __future__ import annotations

from typing import Any

from keyfence_policies import labels as L

from tests.policies.builders import (
    DEPLOYMENT,
    NAMESPACE,
    SECRET,
    Proc,
    bare_pod_spec,
    clean_stack,
    clean_stack_props,
    deployment_props,
    deployment_urn,
    namespace_props,
    run,
    secret_props,
    urn_of,
    urns,
    workload_props,
    wrap,
)

POLICY = "subaccount-tag-required"
P = Proc("momentum", "executor")


def replace(stack: list[Any], resource_type: str, props: dict[str, Any], name: str) -> list[Any]:
    return [r for r in stack if r.urn != urn_of(resource_type, name)] + [wrap(resource_type, props, name)]


def test_the_example_fleet_passes() -> None:
    assert run(POLICY, clean_stack()) == []


def test_a_key_bearing_workload_without_subaccount_label_is_reported() -> None:
    props = deployment_props(P)
    del props["metadata"]["labels"][L.SUBACCOUNT]
    violations = run(POLICY, replace(clean_stack([P]), DEPLOYMENT, props, P.resource_name))
    assert urns(violations) == [deployment_urn(P)]
    assert violations[0].message.startswith(
        "Deployment momentum/executor holds exchange key secret/kraken/momentum/executor but has no "
        "keyfence.io/subaccount label"
    )


def test_a_key_secret_of_another_subaccount_is_reported() -> None:
    secret = secret_props(P)
    secret["metadata"]["labels"][L.SUBACCOUNT] = "basis"  # basis's key copied into momentum's namespace
    violations = run(POLICY, replace(clean_stack([P]), SECRET, secret, f"{P.resource_name}/key"))
    assert urns(violations) == [deployment_urn(P)]
    message = violations[0].message
    assert "Deployment momentum/executor (subaccount momentum) holds the key of subaccount basis" in message
    assert "Secret momentum/executor-key-v3" in message
    assert urn_of(SECRET, f"{P.resource_name}/key") in message


def test_a_key_secret_without_subaccount_label_is_reported() -> None:
    secret = secret_props(P)
    del secret["metadata"]["labels"][L.SUBACCOUNT]
    violations = run(POLICY, replace(clean_stack([P]), SECRET, secret, f"{P.resource_name}/key"))
    assert urns(violations) == [deployment_urn(P)]
    assert "which has no keyfence.io/subaccount label" in violations[0].message


def test_a_venue_mismatch_is_reported() -> None:
    secret = secret_props(P)
    secret["metadata"]["labels"][L.VENUE] = "spot"
    violations = run(POLICY, replace(clean_stack([P]), SECRET, secret, f"{P.resource_name}/key"))
    assert urns(violations) == [deployment_urn(P)]
    assert (
        "(keyfence.io/venue=futures) holds a spot key via Secret momentum/executor-key-v3"
        in violations[0].message
    )


def test_a_workload_keyed_only_by_annotation_is_reported() -> None:
    props = deployment_props(P)
    props["spec"]["template"]["spec"]["volumes"] = []
    props["spec"]["template"]["spec"]["containers"][0]["volumeMounts"] = []
    violations = run(POLICY, replace(clean_stack([P]), DEPLOYMENT, props, P.resource_name))
    assert urns(violations) == [deployment_urn(P)]
    assert "only by annotation" in violations[0].message
    assert "the key's subaccount cannot be seen" in violations[0].message


def test_a_namespace_of_another_subaccount_is_reported() -> None:
    namespace = namespace_props("momentum")
    namespace["metadata"]["labels"][L.SUBACCOUNT] = "basis"
    violations = run(POLICY, replace(clean_stack([P]), NAMESPACE, namespace, "momentum"))
    assert urns(violations) == [deployment_urn(P)]
    assert "runs in Namespace momentum" in violations[0].message
    assert "which belongs to subaccount basis" in violations[0].message


def test_a_pod_template_of_another_subaccount_is_reported() -> None:
    props = deployment_props(P)
    props["spec"]["template"]["metadata"]["labels"][L.SUBACCOUNT] = "basis"
    violations = run(POLICY, replace(clean_stack([P]), DEPLOYMENT, props, P.resource_name))
    assert urns(violations) == [deployment_urn(P)]
    assert "but its pod template says basis" in violations[0].message


def test_a_hand_written_workload_borrowing_a_key_is_reported_with_its_own_urn() -> None:
    spec = bare_pod_spec(volumes=[{"name": "k", "secret": {"secretName": P.secret_name}}])
    rogue = workload_props("Deployment", spec, namespace="momentum", name="rogue")
    violations = run(POLICY, [*clean_stack([P]), wrap(DEPLOYMENT, rogue, "rogue")])
    assert urns(violations) == [urn_of(DEPLOYMENT, "rogue")]
    assert "Deployment momentum/rogue holds exchange key" in violations[0].message


def test_workloads_without_a_key_need_no_subaccount() -> None:
    web = workload_props("Deployment", bare_pod_spec(), namespace="momentum", name="web")
    assert run(POLICY, [*clean_stack([P]), wrap(DEPLOYMENT, web, "web")]) == []


def test_a_custom_subaccount_label_is_honoured() -> None:
    config = {"labels": {"subaccount": "acme.io/strategy"}}
    violations = run(POLICY, clean_stack([P]), config)
    assert urns(violations) == [deployment_urn(P), deployment_urn(P)]
    assert "has no acme.io/strategy label" in violations[0].message
    assert "which has no acme.io/strategy label" in violations[1].message
    relabelled = []
    for resource_type, props, name in clean_stack_props([P]):
        for meta in (props.get("metadata"), props.get("spec", {}).get("template", {}).get("metadata")):
            labels = (meta or {}).get("labels", {})
            if L.SUBACCOUNT in labels:
                labels["acme.io/strategy"] = labels.pop(L.SUBACCOUNT)
        relabelled.append(wrap(resource_type, props, name))
    assert run(POLICY, relabelled, config) == []
