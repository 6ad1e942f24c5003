"""least-privilege-key: declared key permissions stay within the role's allowance."""

from __future__ import annotations

from typing import Any

import pytest
from keyfence_policies import labels as L

from tests.policies.builders import (
    DEPLOYMENT,
    SECRET,
    Proc,
    clean_stack,
    clean_stack_props,
    deployment_urn,
    run,
    urns,
    wrap,
)

POLICY = "least-privilege-key"


def edited(p: Proc, edit: Any) -> list[Any]:
    """The stack of one process after ``edit(resource_type, props)`` ran on every resource."""
    out = []
    for resource_type, props, name in clean_stack_props([p]):
        edit(resource_type, props)
        out.append(wrap(resource_type, props, name))
    return out


def workload_annotations(props: dict[str, Any]) -> list[dict[str, str]]:
    return [props["metadata"]["annotations"], props["spec"]["template"]["metadata"]["annotations"]]


def test_the_example_fleet_passes_including_the_master_treasury_withdrawal_key() -> None:
    assert run(POLICY, clean_stack()) == []


def test_withdrawal_rights_on_a_subaccount_key_are_reported() -> None:
    p = Proc("momentum", "executor", permissions=["general-full", "withdrawal"])
    violations = run(POLICY, clean_stack([p]))
    assert urns(violations) == [deployment_urn(p)]
    message = violations[0].message
    assert message.startswith(
        "Deployment momentum/executor holds exchange key secret/kraken/momentum/executor with more rights "
        "than role trader needs: withdrawal: Kraken blocks withdrawals from subaccounts"
    )
    assert "Re-issue the key" in message


def test_a_subaccount_treasury_may_not_withdraw_even_when_allowed() -> None:
    p = Proc(
        "momentum",
        "treasury",
        role="treasury",
        allow_withdrawals=True,
        permissions=["general-read", "withdrawal"],
    )
    violations = run(POLICY, clean_stack([p]))
    assert urns(violations) == [deployment_urn(p)]
    assert "Kraken blocks withdrawals from subaccounts" in violations[0].message


def test_the_master_treasury_needs_allow_withdrawals() -> None:
    p = Proc("main", "treasury", role="treasury", venue="spot", master=True, allow_withdrawals=False)
    p.permissions = ["query-funds", "deposit-funds", "withdraw-funds"]
    violations = run(POLICY, clean_stack([p]))
    assert urns(violations) == [deployment_urn(p)]
    assert "only the master's treasury process with allow_withdrawals: true" in violations[0].message


def test_a_master_claim_contradicted_by_the_namespace_is_not_master() -> None:
    p = Proc("main", "treasury", role="treasury", venue="spot", master=True, allow_withdrawals=True)

    def demote(resource_type: str, props: dict[str, Any]) -> None:
        if resource_type.endswith(":Namespace"):
            props["metadata"]["labels"][L.MASTER] = "false"

    violations = run(POLICY, edited(p, demote))
    assert urns(violations) == [deployment_urn(p)]
    assert "withdraw-funds: Kraken blocks withdrawals from subaccounts" in violations[0].message


def test_permissions_beyond_the_role_are_reported() -> None:
    p = Proc("momentum", "feed", role="market-data", permissions=["general-full"])
    violations = run(POLICY, clean_stack([p]))
    assert urns(violations) == [deployment_urn(p)]
    assert "general-full: role market-data on futures may hold only general-read" in violations[0].message


def test_permissions_on_the_key_secret_count_too() -> None:
    p = Proc("momentum", "feed", role="market-data")

    def widen_secret(resource_type: str, props: dict[str, Any]) -> None:
        if resource_type == SECRET:
            props["metadata"]["annotations"][L.PERMISSIONS] = "general-read,general-full"

    violations = run(POLICY, edited(p, widen_secret))
    assert urns(violations) == [deployment_urn(p)]
    assert "general-full: role market-data" in violations[0].message


def test_permissions_only_on_the_key_secret_are_enough() -> None:
    p = Proc("momentum", "executor")

    def strip_workload(resource_type: str, props: dict[str, Any]) -> None:
        if resource_type == DEPLOYMENT:
            for annotations in workload_annotations(props):
                del annotations[L.PERMISSIONS]

    assert run(POLICY, edited(p, strip_workload)) == []


@pytest.mark.parametrize(("value", "state"), [(None, "has no"), (" , ", "has an empty")])
def test_unknown_permissions_are_reported(value: str | None, state: str) -> None:
    p = Proc("momentum", "executor")

    def unset(resource_type: str, props: dict[str, Any]) -> None:
        if resource_type in (DEPLOYMENT, SECRET):
            targets = (
                workload_annotations(props)
                if resource_type == DEPLOYMENT
                else [props["metadata"]["annotations"]]
            )
            for annotations in targets:
                if value is None:
                    del annotations[L.PERMISSIONS]
                else:
                    annotations[L.PERMISSIONS] = value

    violations = run(POLICY, edited(p, unset))
    assert urns(violations) == [deployment_urn(p)]
    assert f"{state} keyfence.io/permissions annotation" in violations[0].message
    assert "the key's rights are unknown" in violations[0].message


def test_unknown_permission_ids_are_reported() -> None:
    p = Proc("momentum", "executor", permissions=["general-full", "trade-everything"])
    violations = run(POLICY, clean_stack([p]))
    assert urns(violations) == [deployment_urn(p)]
    assert "lists trade-everything, not permissions of a futures key" in violations[0].message


@pytest.mark.parametrize(
    ("role", "expected"), [(None, "has no keyfence.io/role label"), ("quant", "unknown role 'quant'")]
)
def test_unknown_or_missing_roles_are_reported(role: str | None, expected: str) -> None:
    p = Proc("momentum", "executor")

    def set_role(resource_type: str, props: dict[str, Any]) -> None:
        if resource_type == DEPLOYMENT:
            for meta in (props["metadata"], props["spec"]["template"]["metadata"]):
                if role is None:
                    del meta["labels"][L.ROLE]
                else:
                    meta["labels"][L.ROLE] = role

    violations = run(POLICY, edited(p, set_role))
    assert urns(violations) == [deployment_urn(p)]
    assert expected in violations[0].message


def test_withdrawal_rights_are_caught_even_when_the_role_is_unknown() -> None:
    p = Proc("momentum", "executor", permissions=["general-full", "withdrawal"])

    def drop_role(resource_type: str, props: dict[str, Any]) -> None:
        if resource_type == DEPLOYMENT:
            for meta in (props["metadata"], props["spec"]["template"]["metadata"]):
                meta["labels"][L.ROLE] = "quant"

    violations = run(POLICY, edited(p, drop_role))
    assert urns(violations) == [deployment_urn(p)] * 2
    assert "withdrawal rights (withdrawal) on a subaccount key" in violations[1].message


def test_an_odd_master_label_is_reported_and_treated_as_subaccount() -> None:
    p = Proc("momentum", "executor")

    def odd(resource_type: str, props: dict[str, Any]) -> None:
        if resource_type == DEPLOYMENT:
            props["metadata"]["labels"][L.MASTER] = "yes"

    violations = run(POLICY, edited(p, odd))
    assert urns(violations) == [deployment_urn(p)]
    assert "label keyfence.io/master is yes, expected true or false" in violations[0].message


def test_role_allowances_can_be_overridden() -> None:
    p = Proc("momentum", "feed", role="market-data", permissions=["general-full"])
    config = {"roleAllowances": {"market-data": {"futures": ["general-read", "general-full"]}}}
    assert run(POLICY, clean_stack([p]), config) == []
    narrowed = {"roleAllowances": {"trader": {"futures": ["general-read"]}}}
    violations = run(POLICY, clean_stack([Proc("momentum", "executor")]), narrowed)
    assert len(violations) == 1
    assert "general-full: role trader on futures may hold only general-read" in violations[0].message


def test_a_custom_role_label_is_honoured() -> None:
    p = Proc("momentum", "executor")
    violations = run(POLICY, clean_stack([p]), {"labels": {"role": "acme.io/desk"}})
    assert urns(violations) == [deployment_urn(p)]
    assert "has no acme.io/desk label" in violations[0].message


def test_require_permissions_false_skips_only_keys_that_declare_none() -> None:
    """Offline checks cannot see Vault metadata: undeclared permissions pass, declared ones stay bounded."""
    silent = Proc("momentum", "feed", role="market-data")
    greedy = Proc("momentum", "executor", permissions=["general-full", "withdrawal"])

    def strip(resource_type: str, props: dict[str, Any]) -> None:
        if props["metadata"].get("labels", {}).get(L.PROCESS) != "feed":
            return
        if resource_type == DEPLOYMENT:
            for annotations in workload_annotations(props):
                del annotations[L.PERMISSIONS]
        elif resource_type == SECRET:
            del props["metadata"]["annotations"][L.PERMISSIONS]

    stack = []
    for resource_type, props, name in clean_stack_props([silent, greedy]):
        strip(resource_type, props)
        stack.append(wrap(resource_type, props, name))
    assert deployment_urn(silent) in urns(run(POLICY, stack))
    assert "has no keyfence.io/permissions" in " ".join(v.message for v in run(POLICY, stack, {}))
    violations = run(POLICY, stack, {"requirePermissions": False})
    assert urns(violations) == [deployment_urn(greedy)]


def test_a_key_of_the_other_venue_is_named_as_such_not_as_a_typo() -> None:
    p = Proc("momentum", "executor", permissions=["query-funds", "modify-orders"])  # spot ids, futures
    violations = run(POLICY, clean_stack([p]))
    messages = " ".join(v.message for v in violations)
    assert "spot permissions: this is a spot key on a futures process" in messages
    assert "typo" not in messages.lower() and "misspelt" not in messages
