"""Nothing a stack contains may crash a policy: garbage and unknowns are reported, never raised.

A raised exception inside a stack policy aborts the whole pack run, and an unknown
value touched through the SDK's proxy turns a mandatory check into an advisory
"can't run during preview". Both must become ordinary, fail-closed findings.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from keyfence_policies import labels as L
from keyfence_policies.pack import POLICY_NAMES
from pulumi_policy.proxy import (
    UNKNOWN_BOOLEAN_VALUE,
    UNKNOWN_NUMBER_VALUE,
    UNKNOWN_OBJECT_VALUE,
    UNKNOWN_STRING_VALUE,
)

from tests.policies.builders import (
    DEPLOYMENT,
    HPA_V2,
    KIND_TYPES,
    NAMESPACE,
    SECRET,
    Proc,
    clean_stack,
    clean_stack_props,
    deployment_props,
    deployment_urn,
    run,
    urn_of,
    wrap,
)

INTERNAL_ERROR = "could not evaluate the stack"
P = Proc("momentum", "executor")

FIELD_NAMES = [
    "metadata", "name", "namespace", "labels", "annotations", "spec", "template", "jobTemplate",
    "containers", "initContainers", "ephemeralContainers", "env", "envFrom", "value", "valueFrom",
    "secretKeyRef", "secretRef", "volumes", "volumeMounts", "readOnly", "secret", "secretName",
    "projected", "sources", "replicas", "strategy", "type", "parallelism", "concurrencyPolicy",
    "scaleTargetRef", "kind", "securityContext", "runAsNonRoot", "capabilities", "drop",
    "automountServiceAccountToken", L.KEY_PATH, L.FINGERPRINT, L.PERMISSIONS, L.EXCHANGE_KEY,
    L.SUBACCOUNT, L.ROLE, L.VENUE, L.MASTER,
]  # fmt: skip
UNKNOWNS = [UNKNOWN_STRING_VALUE, UNKNOWN_OBJECT_VALUE, UNKNOWN_BOOLEAN_VALUE, UNKNOWN_NUMBER_VALUE]

keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=6)
leaves = (
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
    | st.sampled_from(
        ["true", "false", "executor-key-v3", "momentum", "Deployment", "Recreate", "ALL", *UNKNOWNS]
    )
)
json_values = st.recursive(
    leaves,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=25,
)
resource_types = st.sampled_from(
    [*KIND_TYPES.values(), SECRET, NAMESPACE, HPA_V2, "kubernetes:core/v1:ConfigMap"]
)


def assert_runs_cleanly(resources: list[Any], config: dict[str, Any] | None = None) -> None:
    for policy in POLICY_NAMES:
        for violation in run(policy, resources, config):
            assert INTERNAL_ERROR not in violation.message, violation.message


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(resource_types, json_values, st.booleans()), max_size=6))
def test_random_resources_next_to_a_clean_stack_never_crash_a_policy(
    items: list[tuple[str, Any, bool]],
) -> None:
    garbage = [wrap(t, props, f"fuzz{i}", proxy=proxied) for i, (t, props, proxied) in enumerate(items)]
    assert_runs_cleanly([*clean_stack([P]), *garbage])


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


def _replace(tree: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        tree = tree[step]
    tree[path[-1]] = value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_field_of_a_process_replaced_by_garbage_never_crashes_a_policy(data: st.DataObject) -> None:
    items = clean_stack_props([P])
    index = data.draw(
        st.sampled_from([i for i, item in enumerate(items) if item[0] in (DEPLOYMENT, SECRET, NAMESPACE)])
    )
    resource_type, props, name = items[index]
    props = copy.deepcopy(props)
    for _ in range(data.draw(st.integers(1, 3))):
        paths = _paths(props)
        if not paths:
            break
        _replace(props, data.draw(st.sampled_from(paths)), data.draw(json_values))
    items[index] = (resource_type, props, name)
    assert_runs_cleanly([wrap(*item) for item in items])


@settings(max_examples=60, deadline=None)
@given(json_values)
def test_garbage_config_never_crashes_a_policy(config: Any) -> None:
    for policy in POLICY_NAMES:
        for violation in run(policy, clean_stack([P]), config if isinstance(config, dict) else None):
            assert INTERNAL_ERROR not in violation.message


@pytest.mark.parametrize("props", [None, [], "Deployment", 3, {"metadata": None, "spec": None}, {"spec": []}])
@pytest.mark.parametrize("resource_type", [*KIND_TYPES.values(), SECRET, NAMESPACE, HPA_V2])
def test_props_of_the_wrong_shape_never_crash(resource_type: str, props: Any) -> None:
    assert_runs_cleanly([*clean_stack([P]), wrap(resource_type, props, "odd", proxy=False)])


def test_objects_that_are_not_resources_are_skipped() -> None:
    class Odd:
        @property
        def props(self) -> Any:
            raise RuntimeError("unreadable")

        resource_type = DEPLOYMENT
        urn = 7

    assert_runs_cleanly([*clean_stack([P]), None, 5, "resource", Odd()])  # type: ignore[list-item]


def test_an_unknown_secret_name_in_a_mount_is_reported_by_every_mandatory_policy() -> None:
    props = deployment_props(P)
    props["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] = UNKNOWN_STRING_VALUE
    stack = [r for r in clean_stack([P]) if r.resource_type != DEPLOYMENT] + [
        wrap(DEPLOYMENT, props, P.resource_name)
    ]
    for policy in POLICY_NAMES:
        violations = [v for v in run(policy, stack) if "cannot evaluate" in v.message]
        assert [v.urn for v in violations] == [deployment_urn(P)], policy
        assert (
            "spec.template.spec.volumes[0].secret.secretName is not known during preview"
            in violations[0].message
        )


def test_a_hand_written_workload_whose_volumes_are_unknown_is_reported_not_skipped() -> None:
    rogue = {
        "metadata": {"name": "rogue", "namespace": "momentum"},
        "spec": {"template": {"spec": {"containers": [{"name": "c"}], "volumes": UNKNOWN_OBJECT_VALUE}}},
    }
    stack = [*clean_stack([P]), wrap(DEPLOYMENT, rogue, "rogue")]
    violations = run("no-duplicate-key-assignment", stack)
    assert [v.urn for v in violations] == [urn_of(DEPLOYMENT, "rogue")]
    assert "spec.template.spec.volumes is not known during preview" in violations[0].message


def test_an_unknown_key_secret_name_is_reported_against_the_secret() -> None:
    items = clean_stack_props([P])
    for resource_type, props, _ in items:
        if resource_type == SECRET:
            props["metadata"]["name"] = UNKNOWN_STRING_VALUE
    violations = run("no-duplicate-key-assignment", [wrap(*item) for item in items])
    secret_urn = urn_of(SECRET, f"{P.resource_name}/key")
    assert secret_urn in [v.urn for v in violations]
    message = next(v.message for v in violations if v.urn == secret_urn)
    assert "metadata.name is not known during preview" in message


def test_unknown_secret_labels_make_the_mounting_workload_uncertain() -> None:
    items = clean_stack_props([P])
    for resource_type, props, _ in items:
        if resource_type == SECRET:
            props["metadata"]["labels"] = UNKNOWN_OBJECT_VALUE
        if resource_type == DEPLOYMENT:  # without its annotations only the Secret could make it key-bearing
            for meta in (props["metadata"], props["spec"]["template"]["metadata"]):
                meta["annotations"] = {}
    violations = run("single-writer-per-key", [wrap(*item) for item in items])
    assert [v.urn for v in violations] == [deployment_urn(P)]
    assert (
        "Secret momentum/executor-key-v3: metadata.labels is not known during preview"
        in violations[0].message
    )


def test_a_key_secret_in_an_unknown_namespace_cannot_be_matched_and_is_reported() -> None:
    items = clean_stack_props([P])
    for resource_type, props, _ in items:
        if resource_type == SECRET:
            props["metadata"]["namespace"] = UNKNOWN_STRING_VALUE
    violations = run("no-duplicate-key-assignment", [wrap(*item) for item in items])
    secret_urn = urn_of(SECRET, f"{P.resource_name}/key")
    message = next(v.message for v in violations if v.urn == secret_urn)
    assert "metadata.namespace is not known during preview" in message


@pytest.mark.parametrize(
    "metadata",
    [UNKNOWN_OBJECT_VALUE, 7, "momentum/rogue-key", ["x"]],
    ids=["unknown", "number", "string", "list"],
)
def test_a_secret_whose_whole_metadata_is_unreadable_is_reported_not_taken_for_a_plain_secret(
    metadata: Any,
) -> None:
    """Its labels (is it a key?) and its name (who mounts it?) are both unreadable: fail closed."""
    stack = [*clean_stack([P]), wrap(SECRET, {"metadata": metadata, "type": "Opaque"}, "rogue-key")]
    violations = run("no-duplicate-key-assignment", stack)
    rogue = [v for v in violations if v.urn == urn_of(SECRET, "rogue-key")]
    assert len(rogue) == 1 and "cannot evaluate" in rogue[0].message, violations
    assert "metadata is" in rogue[0].message
