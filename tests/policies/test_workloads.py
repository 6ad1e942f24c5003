"""The stack index: kinds across API versions, pod specs, Secret references, key-bearing-ness."""

from __future__ import annotations

from typing import Any

import pytest
from keyfence_policies import labels as L
from keyfence_policies.config import PackConfig
from keyfence_policies.kinds import parse_type
from keyfence_policies.workloads import StackIndex, Workload, build_index

from tests.policies.builders import (
    KIND_TYPES,
    SECRET,
    Proc,
    bare_pod_spec,
    clean_stack,
    secret_props,
    workload_props,
    wrap,
)


def index_of(resources: list[Any]) -> StackIndex:
    return build_index(resources, PackConfig())


def only(index: StackIndex, name: str) -> Workload:
    found = [w for w in index.workloads if w.name == name]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize(
    ("resource_type", "kind"),
    [
        ("kubernetes:apps/v1:Deployment", "Deployment"),
        ("kubernetes:apps/v1beta2:Deployment", "Deployment"),
        ("kubernetes:extensions/v1beta1:Deployment", "Deployment"),
        ("kubernetes:extensions/v1beta1:DaemonSet", "DaemonSet"),
        ("kubernetes:apps/v1:StatefulSet", "StatefulSet"),
        ("kubernetes:apps/v1:ReplicaSet", "ReplicaSet"),
        ("kubernetes:batch/v1:Job", "Job"),
        ("kubernetes:batch/v1:CronJob", "CronJob"),
        ("kubernetes:batch/v1beta1:CronJob", "CronJob"),
        ("kubernetes:core/v1:Pod", "Pod"),
        ("kubernetes:core/v1:Secret", "Secret"),
        ("kubernetes:core/v1:Namespace", "Namespace"),
        ("kubernetes:autoscaling/v1:HorizontalPodAutoscaler", "HorizontalPodAutoscaler"),
        ("kubernetes:autoscaling/v2:HorizontalPodAutoscaler", "HorizontalPodAutoscaler"),
        ("kubernetes:keda.sh/v1alpha1:ScaledObject", "ScaledObject"),
    ],
)
def test_resource_types_are_matched_by_group_and_kind(resource_type: str, kind: str) -> None:
    parsed = parse_type(resource_type)
    assert parsed is not None and parsed.kind == kind


@pytest.mark.parametrize(
    "resource_type",
    [
        "kubernetes:core/v1:ServiceAccount",
        "kubernetes:apps/v1:DeploymentPatch",
        "kubernetes:example.com/v1:Deployment",
        "aws:s3/bucket:Bucket",
        "keyfence:fleet:Process",
        "pulumi:providers:kubernetes",
        "",
        None,
        42,
    ],
)
def test_other_types_are_ignored(resource_type: object) -> None:
    assert parse_type(resource_type) is None


def test_clean_stack_indexes_every_process_as_key_bearing() -> None:
    index = index_of(clean_stack())
    assert len(index.workloads) == 7
    assert all(w.key_bearing and not w.problems and not w.key_uncertain for w in index.workloads)
    assert all(len(w.key_secrets) == 1 and w.key_refs[0].channel == "volume" for w in index.workloads)
    assert set(index.namespaces) == {"main", "momentum", "basis"}
    executor = index.lookup("Deployment", "momentum", "executor")
    assert [w.urn for w in executor] == [
        "urn:pulumi:dev::keyfence::kubernetes:apps/v1:Deployment::momentum/executor"
    ]
    assert executor[0].key_volumes() == {"exchange-key"}


@pytest.mark.parametrize("kind", list(KIND_TYPES))
def test_each_kind_finds_its_pod_spec(kind: str) -> None:
    p = Proc("alpha", "maker")
    spec = bare_pod_spec(volumes=[{"name": "k", "secret": {"secretName": p.secret_name}}])
    props = workload_props(kind, spec, namespace="alpha", name="rogue")
    index = index_of([wrap(SECRET, secret_props(p)), wrap(KIND_TYPES[kind], props)])
    workload = only(index, "rogue")
    assert workload.kind == kind
    assert workload.key_bearing and [s.name for s in workload.key_secrets] == [p.secret_name]
    assert [c.name for c in workload.containers] == ["app"]
    assert not workload.problems


@pytest.mark.parametrize("containers", ["containers", "initContainers", "ephemeralContainers"])
@pytest.mark.parametrize(
    ("channel", "container_fields", "volumes"),
    [
        (
            "env",
            {
                "env": [
                    {"name": "K", "valueFrom": {"secretKeyRef": {"name": "maker-key-v3", "key": "api_key"}}}
                ]
            },
            [],
        ),
        ("envFrom", {"envFrom": [{"secretRef": {"name": "maker-key-v3"}}]}, []),
        ("volume", {}, [{"name": "k", "secret": {"secretName": "maker-key-v3"}}]),
        (
            "projected volume",
            {},
            [{"name": "k", "projected": {"sources": [{"secret": {"name": "maker-key-v3"}}]}}],
        ),
    ],
)
def test_every_reference_channel_makes_a_workload_key_bearing(
    containers: str, channel: str, container_fields: dict[str, Any], volumes: list[Any]
) -> None:
    p = Proc("alpha", "maker")
    spec: dict[str, Any] = {
        "containers": [{"name": "main", "image": "x:1"}],
        containers: [{"name": "app", "image": "x:1", **container_fields}],
        "volumes": volumes,
    }
    props = workload_props("Deployment", spec, namespace="alpha", name="rogue")
    index = index_of([wrap(SECRET, secret_props(p)), wrap(KIND_TYPES["Deployment"], props)])
    workload = only(index, "rogue")
    assert workload.key_bearing
    assert [r.channel for r in workload.key_refs] == [channel]


def test_secret_references_resolve_in_the_pods_namespace_only() -> None:
    p = Proc("alpha", "maker")
    spec = bare_pod_spec(volumes=[{"name": "k", "secret": {"secretName": p.secret_name}}])
    elsewhere = workload_props("Deployment", spec, namespace="beta", name="rogue")
    index = index_of([wrap(SECRET, secret_props(p)), wrap(KIND_TYPES["Deployment"], elsewhere)])
    assert not only(index, "rogue").key_bearing


def test_a_missing_namespace_means_default() -> None:
    p = Proc("default", "maker")
    spec = bare_pod_spec(volumes=[{"name": "k", "secret": {"secretName": p.secret_name}}])
    pod = workload_props("Pod", spec, namespace=None, name="rogue")
    index = index_of([wrap(SECRET, secret_props(p)), wrap(KIND_TYPES["Pod"], pod)])
    workload = only(index, "rogue")
    assert workload.namespace == "default" and workload.key_bearing


def test_plain_secrets_do_not_make_a_workload_key_bearing() -> None:
    p = Proc("alpha", "maker")
    plain = secret_props(p)
    plain["metadata"]["labels"][L.EXCHANGE_KEY] = "false"
    spec = bare_pod_spec(volumes=[{"name": "k", "secret": {"secretName": p.secret_name}}])
    props = workload_props("Deployment", spec, namespace="alpha", name="app")
    index = index_of([wrap(SECRET, plain), wrap(KIND_TYPES["Deployment"], props)])
    workload = only(index, "app")
    assert not workload.key_bearing and not workload.in_scope


def test_an_odd_exchange_key_label_makes_referencing_workloads_uncertain() -> None:
    p = Proc("alpha", "maker")
    odd = secret_props(p)
    odd["metadata"]["labels"][L.EXCHANGE_KEY] = "yes"
    spec = bare_pod_spec(volumes=[{"name": "k", "secret": {"secretName": p.secret_name}}])
    props = workload_props("Deployment", spec, namespace="alpha", name="app")
    workload = only(index_of([wrap(SECRET, odd), wrap(KIND_TYPES["Deployment"], props)]), "app")
    assert workload.key_uncertain and workload.in_scope
    assert any('expected "true" or "false"' in p for p in workload.problems)


@pytest.mark.parametrize("where", ["metadata", "template", "jobTemplate"])
def test_the_key_path_annotation_anywhere_makes_a_workload_key_bearing(where: str) -> None:
    props = workload_props("CronJob", bare_pod_spec(), namespace="alpha", name="job")
    annotation = {L.KEY_PATH: "kraken/alpha/job"}
    if where == "metadata":
        props["metadata"]["annotations"] = annotation
    elif where == "template":
        props["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["annotations"] = annotation
    else:
        props["spec"]["jobTemplate"]["metadata"] = {"annotations": annotation}
    workload = only(index_of([wrap(KIND_TYPES["CronJob"], props)]), "job")
    assert workload.has_key_path and workload.key_bearing


def test_a_workload_without_pod_spec_cannot_be_evaluated() -> None:
    props = {"metadata": {"name": "empty", "namespace": "alpha"}, "spec": {"replicas": 1.0}}
    workload = only(index_of([wrap(KIND_TYPES["Deployment"], props)]), "empty")
    assert workload.key_uncertain
    assert "spec.template.spec (the pod spec) is missing" in workload.problems
