"""hardened-workload (advisory): pods holding a key run locked down."""

from __future__ import annotations

from typing import Any

import pytest

from tests.policies.builders import (
    DEPLOYMENT,
    Proc,
    bare_pod_spec,
    clean_stack,
    clean_stack_props,
    deployment_urn,
    run,
    urns,
    workload_props,
    wrap,
)

POLICY = "hardened-workload"
P = Proc("momentum", "executor")


def with_pod(edit: Any) -> list[Any]:
    out = []
    for resource_type, props, name in clean_stack_props([P]):
        if resource_type == DEPLOYMENT:
            pod = props["spec"]["template"]["spec"]
            edit(pod["containers"][0]["securityContext"], pod)
        out.append(wrap(resource_type, props, name))
    return out


def test_the_example_fleet_passes() -> None:
    assert run(POLICY, clean_stack()) == []


@pytest.mark.parametrize(
    ("field", "value", "expected"),
    [
        ("readOnlyRootFilesystem", False, "securityContext.readOnlyRootFilesystem is not true"),
        ("readOnlyRootFilesystem", None, "securityContext.readOnlyRootFilesystem is not true"),
        ("allowPrivilegeEscalation", True, "securityContext.allowPrivilegeEscalation is not false"),
        ("allowPrivilegeEscalation", None, "securityContext.allowPrivilegeEscalation is not false"),
        ("capabilities", {"drop": ["NET_RAW"]}, 'capabilities.drop does not contain "ALL"'),
        ("capabilities", None, 'capabilities.drop does not contain "ALL"'),
        ("runAsNonRoot", False, "runAsNonRoot is not true"),
    ],
)
def test_each_missing_hardening_is_reported(field: str, value: object, expected: str) -> None:
    def weaken(context: dict[str, Any], pod: dict[str, Any]) -> None:
        if value is None:
            del context[field]
        else:
            context[field] = value

    violations = run(POLICY, with_pod(weaken))
    assert urns(violations) == [deployment_urn(P)]
    message = violations[0].message
    assert message.startswith(
        "Deployment momentum/executor holds exchange key secret/kraken/momentum/executor"
    )
    assert f"container executor: {expected}" in message or expected in message


def test_run_as_non_root_on_the_pod_alone_is_enough() -> None:
    def pod_level(context: dict[str, Any], pod: dict[str, Any]) -> None:
        del context["runAsNonRoot"]

    assert run(POLICY, with_pod(pod_level)) == []


def test_run_as_non_root_missing_everywhere_is_reported() -> None:
    def nowhere(context: dict[str, Any], pod: dict[str, Any]) -> None:
        del context["runAsNonRoot"]
        del pod["securityContext"]["runAsNonRoot"]

    violations = run(POLICY, with_pod(nowhere))
    assert "container executor: runAsNonRoot is not true" in violations[0].message


def test_a_mounted_service_account_token_is_reported() -> None:
    def mount_token(context: dict[str, Any], pod: dict[str, Any]) -> None:
        del pod["automountServiceAccountToken"]

    violations = run(POLICY, with_pod(mount_token))
    assert urns(violations) == [deployment_urn(P)]
    assert "automountServiceAccountToken is not false" in violations[0].message


def test_a_bare_key_bearing_pod_lists_every_shortfall_in_one_violation() -> None:
    spec = bare_pod_spec(volumes=[{"name": "k", "secret": {"secretName": P.secret_name}}])
    rogue = workload_props("Deployment", spec, namespace="momentum", name="rogue")
    violations = [v for v in run(POLICY, [*clean_stack([P]), wrap(DEPLOYMENT, rogue, "rogue")])]
    assert len(violations) == 1
    for expected in (
        "runAsNonRoot",
        "readOnlyRootFilesystem",
        "allowPrivilegeEscalation",
        "drop",
        "automount",
    ):
        assert expected in violations[0].message


def test_unhardened_workloads_without_a_key_are_not_reported() -> None:
    web = workload_props("Deployment", bare_pod_spec(), namespace="web", name="web")
    assert run(POLICY, [wrap(DEPLOYMENT, web, "web")]) == []
