"""One signer per key: one container per pod, and nobody reading the key Secret through the API (#10, 3)."""

from __future__ import annotations

from typing import Any

import pytest

from tests.policies.builders import (
    CLUSTER_ROLE,
    CLUSTER_ROLE_BINDING,
    DEPLOYMENT,
    ROLE,
    ROLE_BINDING,
    Proc,
    deployment_props,
    fleet_stack,
    fleet_urn,
    known_keys,
    run,
    urns,
    wrap,
)

P = Proc("momentum", "executor")
SINGLE, DUPLICATE = "single-writer-per-key", "no-duplicate-key-assignment"


def executor_with(edit: Any) -> list[Any]:
    """The one-process fleet after ``edit(pod_spec)`` changed the executor's pod."""
    out = []
    for resource in fleet_stack([P]):
        if resource.resource_type == DEPLOYMENT:
            props = deployment_props(P)
            edit(props["spec"]["template"])
            resource = type(resource)(
                resource.resource_type,
                props,
                resource.urn,
                resource.name,
                resource.opts,
                None,
                resource.parent,
                [],
                {},
            )
        out.append(resource)
    return out


def mounted(name: str, **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "image": "x:1",
        "volumeMounts": [{"name": "exchange-key", "mountPath": "/k", "readOnly": True}],
        **extra,
    }


@pytest.mark.parametrize(
    ("field", "container"),
    [
        ("containers", mounted("metrics")),
        (
            "containers",
            {"name": "metrics", "image": "x:1", "envFrom": [{"secretRef": {"name": P.secret_name}}]},
        ),
        (
            "containers",
            {
                "name": "m",
                "image": "x:1",
                "env": [
                    {"name": "K", "valueFrom": {"secretKeyRef": {"name": P.secret_name, "key": "api_key"}}}
                ],
            },
        ),
        ("initContainers", mounted("warmup")),
        ("initContainers", mounted("proxy", restartPolicy="Always")),
        ("ephemeralContainers", mounted("debug")),
    ],
    ids=["sidecar", "env-from", "secret-key-ref", "init", "native-sidecar", "ephemeral"],
)
def test_a_second_container_that_can_read_the_key_is_a_second_signer(
    field: str, container: dict[str, Any]
) -> None:
    def add(template: dict[str, Any]) -> None:
        template["spec"].setdefault(field, []).append(container)

    violations = run(SINGLE, executor_with(add))
    assert urns(violations) == [fleet_urn(DEPLOYMENT, P)]
    assert (
        "gives exchange key secret/kraken/momentum/executor to 2 containers of one pod"
        in violations[0].message
    )
    assert 'container executor (via volume "exchange-key")' in violations[0].message


def test_a_projected_key_volume_counts_too() -> None:
    def add(template: dict[str, Any]) -> None:
        spec = template["spec"]
        spec["volumes"].append(
            {"name": "all", "projected": {"sources": [{"secret": {"name": P.secret_name}}]}}
        )
        spec["containers"].append(
            {"name": "m", "image": "x:1", "volumeMounts": [{"name": "all", "mountPath": "/a"}]}
        )

    assert 'container m (via volume "all")' in run(SINGLE, executor_with(add))[0].message


def test_a_second_container_without_access_is_fine() -> None:
    def add(template: dict[str, Any]) -> None:
        template["spec"]["containers"].append({"name": "metrics", "image": "x:1"})

    assert run(SINGLE, executor_with(add)) == []


@pytest.mark.parametrize(("only", "count"), [(None, 2), ("executor", 0)])
def test_the_vault_agent_writes_into_every_container_it_is_not_told_to_skip(
    only: str | None, count: int
) -> None:
    def inject(template: dict[str, Any]) -> None:
        template["metadata"]["annotations"]["vault.hashicorp.com/agent-inject-secret-key"] = (
            "secret/data/kraken/momentum/executor"
        )
        if only:
            template["metadata"]["annotations"]["vault.hashicorp.com/agent-inject-containers"] = only
        template["spec"]["containers"].append({"name": "metrics", "image": "x:1"})

    violations = run(SINGLE, executor_with(inject))
    if count:
        assert "container metrics (via the Vault Agent injector)" in violations[0].message
    else:
        assert violations == []


def rbac(resource_type: str, name: str, namespace: str | None, **fields: Any) -> Any:
    metadata = {"name": name, **({"namespace": namespace} if namespace else {})}
    return wrap(resource_type, {"metadata": metadata, **fields}, f"hand/{name}")


@pytest.mark.parametrize(
    "rule",
    [
        {"apiGroups": [""], "resources": ["secrets"], "resourceNames": [P.secret_name], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["list"]},
        {"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]},
        {
            "apiGroups": [""],
            "resources": ["secrets", "configmaps"],
            "resourceNames": ["other", P.secret_name],
            "verbs": ["watch"],
        },
    ],
    ids=["by-name", "all-secrets", "wildcards", "watch"],
)
def test_a_role_reading_a_key_secret_is_a_second_holder(rule: dict[str, Any]) -> None:
    role = rbac(ROLE, "reader", "momentum", rules=[rule])
    binding = rbac(
        ROLE_BINDING,
        "reader",
        "momentum",
        roleRef={"kind": "Role", "name": "reader", "apiGroup": "rbac.authorization.k8s.io"},
        subjects=[{"kind": "ServiceAccount", "name": "spy", "namespace": "momentum"}],
    )
    violations = run(DUPLICATE, [*fleet_stack([P]), role, binding])
    assert urns(violations) == [role.urn, binding.urn]
    assert "Role momentum/reader lets ServiceAccount momentum/spy" in violations[0].message
    assert (
        "RoleBinding momentum/reader gives ServiceAccount momentum/spy Role reader" in violations[1].message
    )


def test_cluster_roles_and_built_in_roles_on_subaccount_namespaces() -> None:
    cluster = rbac(
        CLUSTER_ROLE,
        "secret-reader",
        None,
        rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list"]}],
    )
    admin = rbac(
        ROLE_BINDING,
        "ops-admin",
        "momentum",
        roleRef={"kind": "ClusterRole", "name": "admin"},
        subjects=[{"kind": "Group", "name": "ops"}],
    )
    everywhere = rbac(
        CLUSTER_ROLE_BINDING,
        "all",
        None,
        roleRef={"kind": "ClusterRole", "name": "cluster-admin"},
        subjects=[{"kind": "User", "name": "bob"}],
    )
    violations = run(DUPLICATE, [*fleet_stack([P]), cluster, admin, everywhere])
    assert urns(violations) == [cluster.urn, admin.urn, everywhere.urn]
    assert "every Secret of subaccount namespace momentum" in violations[1].message
    assert "User bob" in violations[2].message


def test_roles_that_cannot_read_key_secrets_are_fine() -> None:
    harmless = [
        rbac(
            ROLE, "cm", "momentum", rules=[{"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]}]
        ),
        rbac(
            ROLE,
            "other",
            "momentum",
            rules=[{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["tls"], "verbs": ["get"]}],
        ),
        rbac(ROLE, "tools", "tools", rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["*"]}]),
        rbac(
            ROLE,
            "write",
            "momentum",
            rules=[{"apiGroups": [""], "resources": ["secrets"], "verbs": ["create"]}],
        ),
        rbac(ROLE_BINDING, "edit", "tools", roleRef={"kind": "ClusterRole", "name": "edit"}, subjects=[]),
    ]
    assert run(DUPLICATE, [*fleet_stack([P]), *harmless], known_keys([P])) == []


def test_an_unreadable_rule_in_a_subaccount_namespace_fails_closed() -> None:
    role = rbac(ROLE, "odd", "momentum", rules="everything")
    violations = run(DUPLICATE, [*fleet_stack([P]), role])
    assert urns(violations) == [role.urn] and "cannot evaluate" in violations[0].message
