"""key-not-in-env: keys arrive only as read-only files, never through the environment."""

from __future__ import annotations

from typing import Any

import pytest
from keyfence_policies.key_not_in_env import looks_like_key_material

from tests.policies.builders import (
    DEPLOYMENT,
    KIND_TYPES,
    Proc,
    bare_pod_spec,
    clean_stack,
    clean_stack_props,
    deployment_urn,
    run,
    urn_of,
    urns,
    workload_props,
    wrap,
)

POLICY = "key-not-in-env"
P = Proc("momentum", "executor")


def with_container(edit: Any, p: Proc = P) -> list[Any]:
    """The one-process stack after ``edit(container, pod_spec)`` changed its Deployment."""
    out = []
    for resource_type, props, name in clean_stack_props([p]):
        if resource_type == DEPLOYMENT:
            pod = props["spec"]["template"]["spec"]
            edit(pod["containers"][0], pod)
        out.append(wrap(resource_type, props, name))
    return out


def test_the_example_fleet_passes() -> None:
    assert run(POLICY, clean_stack()) == []


@pytest.mark.parametrize("containers", ["containers", "initContainers"])
def test_a_secret_key_ref_to_the_key_secret_is_reported(containers: str) -> None:
    def leak(container: dict[str, Any], pod: dict[str, Any]) -> None:
        ref = {"name": "KRAKEN_KEY", "valueFrom": {"secretKeyRef": {"name": P.secret_name, "key": "api_key"}}}
        if containers == "containers":
            container["env"].append(ref)
        else:
            pod["initContainers"] = [{"name": "warmup", "image": "x:1", "env": [ref]}]

    violations = run(POLICY, with_container(leak))
    assert urns(violations) == [deployment_urn(P)]
    message = violations[0].message
    assert "reads key Secret momentum/executor-key-v3 into environment variable KRAKEN_KEY" in message
    assert "Mount the Secret read-only (at /var/run/keyfence/key)" in message


def test_env_from_the_key_secret_is_reported() -> None:
    def leak(container: dict[str, Any], pod: dict[str, Any]) -> None:
        container["envFrom"] = [{"secretRef": {"name": P.secret_name}}]

    violations = run(POLICY, with_container(leak))
    assert urns(violations) == [deployment_urn(P)]
    assert "loads key Secret momentum/executor-key-v3 into the environment of container executor" in (
        violations[0].message
    )


def test_a_hand_written_workload_reading_the_key_into_env_is_reported() -> None:
    spec = bare_pod_spec({"name": "app", "image": "x:1", "envFrom": [{"secretRef": {"name": P.secret_name}}]})
    rogue = workload_props("Deployment", spec, namespace="momentum", name="rogue")
    violations = run(POLICY, [*clean_stack([P]), wrap(DEPLOYMENT, rogue, "rogue")])
    assert urns(violations) == [urn_of(DEPLOYMENT, "rogue")]


def test_a_literal_key_like_variable_is_reported_without_its_value() -> None:
    def leak(container: dict[str, Any], pod: dict[str, Any]) -> None:
        container["env"].append({"name": "KRAKEN_API_SECRET", "value": "c2VjcmV0LW1hdGVyaWFs"})

    violations = run(POLICY, with_container(leak))
    assert urns(violations) == [deployment_urn(P)]
    assert "sets environment variable KRAKEN_API_SECRET of container executor to a literal value" in (
        violations[0].message
    )
    assert "c2VjcmV0LW1hdGVyaWFs" not in violations[0].message


@pytest.mark.parametrize(
    "env",
    [
        {"name": "API_KEY", "value": ""},
        {"name": "API_SECRET_FILE", "value": "/var/run/keyfence/key/api_secret"},
        {"name": "KEYFENCE_KEY_DIR", "value": "/var/run/keyfence/key"},
        {"name": "MAX_TOKENS", "value": "5"},
    ],
)
def test_empty_or_pointer_variables_are_fine(env: dict[str, str]) -> None:
    def add(container: dict[str, Any], pod: dict[str, Any]) -> None:
        container["env"].append(env)

    assert run(POLICY, with_container(add)) == []


@pytest.mark.parametrize("kind", ["Deployment", "Job", "Pod"])
def test_credential_literals_on_workloads_without_a_key_are_reported_too(kind: str) -> None:
    """Issue #10, 5: a pasted KRAKEN_API_SECRET is a key in env whether or not the workload mounts one."""
    spec = bare_pod_spec(
        {"name": "app", "image": "x:1", "env": [{"name": "KRAKEN_API_SECRET", "value": "abc"}]}
    )
    web = wrap(KIND_TYPES[kind], workload_props(kind, spec, namespace="web", name="web"), "web")
    violations = run(POLICY, [web])
    assert urns(violations) == [web.urn]
    assert (
        "sets environment variable KRAKEN_API_SECRET of container app to a literal value"
        in violations[0].message
    )
    assert "value not shown" in violations[0].message


@pytest.mark.parametrize("read_only", [False, None, "true"])
def test_a_writable_key_mount_is_reported(read_only: object) -> None:
    def writable(container: dict[str, Any], pod: dict[str, Any]) -> None:
        mount = container["volumeMounts"][0]
        if read_only is None:
            del mount["readOnly"]
        else:
            mount["readOnly"] = read_only

    violations = run(POLICY, with_container(writable))
    assert deployment_urn(P) in urns(violations)
    assert any(
        "mounts key volume 'exchange-key' writable at /var/run/keyfence/key in container executor"
        in v.message
        for v in violations
    )


def test_a_writable_projected_key_volume_is_reported() -> None:
    def project(container: dict[str, Any], pod: dict[str, Any]) -> None:
        pod["volumes"][0] = {
            "name": "exchange-key",
            "projected": {"sources": [{"secret": {"name": P.secret_name}}]},
        }
        container["volumeMounts"][0]["readOnly"] = False

    violations = run(POLICY, with_container(project))
    assert urns(violations) == [deployment_urn(P)]
    assert "writable" in violations[0].message


def test_writable_mounts_of_other_volumes_are_fine() -> None:
    # The clean Deployment mounts /tmp writable: only key volumes must be read-only.
    assert run(POLICY, clean_stack([P])) == []


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("API_KEY", True),
        ("api_key", True),
        ("KRAKEN_APIKEY", True),
        ("KRAKEN_API_SECRET", True),
        ("SECRET", True),
        ("CLIENT_SECRET", True),
        ("PRIVATE_KEY", True),
        ("DB_PASSWORD", True),
        ("KRAKEN_OTP", True),
        ("AUTH_TOKEN", True),
        ("API_SECRET_FILE", False),
        ("PRIVATE_KEY_PATH", False),
        ("KEYFENCE_KEY_DIR", False),
        ("LOG_LEVEL", False),
        ("MAX_TOKENS", False),
        ("KEYFENCE_KEY_VERSION", False),
        ("HOTPATH", False),
    ],
)
def test_key_material_names(name: str, expected: bool) -> None:
    assert looks_like_key_material(name) is expected
