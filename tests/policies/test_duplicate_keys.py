"""no-duplicate-key-assignment: every holder of a shared key is reported, with the others named."""

from __future__ import annotations

from typing import Any

import pytest
from keyfence_policies import labels as L

from tests.policies.builders import (
    DEPLOYMENT,
    SECRET,
    Proc,
    bare_pod_spec,
    clean_stack,
    deployment_props,
    deployment_urn,
    example_fleet,
    proc_workload,
    run,
    secret_props,
    urn_of,
    urns,
    workload_props,
    wrap,
)

POLICY = "no-duplicate-key-assignment"


def test_the_example_fleet_passes() -> None:
    assert run(POLICY, clean_stack()) == []


def test_the_example_fleet_passes_the_offline_check_without_fingerprints() -> None:
    fleet = example_fleet()
    for p in fleet:
        p.fingerprint = ""
    assert run(POLICY, clean_stack(fleet), {"requireFingerprint": False}) == []


def test_two_processes_with_one_vault_path_are_both_reported() -> None:
    a = Proc("momentum", "executor")
    b = Proc("basis", "executor", key_path="kraken//momentum/executor/")  # same key, sloppier spelling
    violations = run(POLICY, clean_stack([a, b]))
    assert sorted(urns(violations)) == sorted([deployment_urn(a), deployment_urn(b)])
    first = next(v for v in violations if v.urn == deployment_urn(a))
    assert first.message.startswith("Deployment momentum/executor shares its exchange API key")
    assert (
        "Vault key secret/kraken/momentum/executor is also used by Deployment basis/executor" in first.message
    )
    assert deployment_urn(b) in first.message
    assert "EAPI:Invalid nonce" in first.message
    assert "give each process its own key" in first.message


def test_the_same_path_in_another_mount_is_another_key() -> None:
    a = Proc("momentum", "executor")
    b = Proc("basis", "executor", key_path="kraken/momentum/executor", mount="kv-archive")
    assert run(POLICY, clean_stack([a, b])) == []


def test_one_key_copied_under_two_paths_is_caught_by_fingerprint() -> None:
    a = Proc("momentum", "executor")
    b = Proc("basis", "executor", fingerprint=a.fingerprint.upper() if a.fingerprint else None)
    violations = run(POLICY, clean_stack([a, b]))
    assert sorted(urns(violations)) == sorted([deployment_urn(a), deployment_urn(b)])
    assert all("fingerprint " + (a.fingerprint or "")[:16] in v.message for v in violations)
    assert not any("Vault key" in v.message for v in violations)


def test_a_hand_written_deployment_mounting_another_process_secret_is_caught() -> None:
    victim = Proc("momentum", "executor")
    spec = bare_pod_spec(volumes=[{"name": "creds", "secret": {"secretName": victim.secret_name}}])
    rogue = workload_props("Deployment", spec, namespace="momentum", name="rogue", replicas=1.0)
    stack = [*clean_stack([victim]), wrap(DEPLOYMENT, rogue, "rogue")]
    violations = run(POLICY, stack)
    rogue_urn = urn_of(DEPLOYMENT, "rogue")
    assert sorted(urns(violations)) == sorted([deployment_urn(victim), rogue_urn])
    rogue_message = next(v.message for v in violations if v.urn == rogue_urn)
    # The rogue carries no annotations: its identities all come from the key Secret it mounts.
    assert "Secret momentum/executor-key-v3" in rogue_message
    assert "Vault key secret/kraken/momentum/executor" in rogue_message
    assert f"Deployment momentum/executor ({deployment_urn(victim)})" in rogue_message


@pytest.mark.parametrize(
    ("container", "volumes"),
    [
        ({"envFrom": [{"secretRef": {"name": "executor-key-v3"}}]}, []),
        (
            {
                "env": [
                    {
                        "name": "K",
                        "valueFrom": {"secretKeyRef": {"name": "executor-key-v3", "key": "api_key"}},
                    }
                ]
            },
            [],
        ),
        (
            {},
            [
                {
                    "name": "p",
                    "projected": {
                        "sources": [{"configMap": {"name": "c"}}, {"secret": {"name": "executor-key-v3"}}]
                    },
                }
            ],
        ),
    ],
    ids=["envFrom", "env-secretKeyRef", "projected-volume"],
)
def test_every_way_of_referencing_the_key_secret_is_a_duplicate(
    container: dict[str, Any], volumes: list[Any]
) -> None:
    victim = Proc("momentum", "executor")
    spec = bare_pod_spec({"name": "app", "image": "x:1", **container}, volumes)
    rogue = workload_props("Deployment", spec, namespace="momentum", name="rogue")
    violations = run(POLICY, [*clean_stack([victim]), wrap(DEPLOYMENT, rogue, "rogue")])
    assert sorted(urns(violations)) == sorted([deployment_urn(victim), urn_of(DEPLOYMENT, "rogue")])


def test_a_job_holding_a_deployment_key_is_a_duplicate_too() -> None:
    victim = Proc("momentum", "executor")
    job = proc_workload("Job", victim)
    violations = run(POLICY, [*clean_stack([victim]), job])
    assert sorted(urns(violations)) == sorted([deployment_urn(victim), job.urn])
    assert any("Job momentum/executor" in v.message for v in violations)


def test_three_holders_each_get_one_violation_naming_the_other_two() -> None:
    procs = [Proc(sub, "executor", key_path="kraken/shared") for sub in ("a", "b", "c")]
    violations = run(POLICY, clean_stack(procs))
    assert sorted(urns(violations)) == sorted(deployment_urn(p) for p in procs)
    for v, p in zip(sorted(violations, key=lambda v: v.urn or ""), procs, strict=True):
        others = [q for q in procs if q is not p]
        assert all(f"Deployment {q.subaccount}/executor ({deployment_urn(q)})" in v.message for q in others)
        assert f"Deployment {p.subaccount}/executor (" not in v.message


def test_a_crowd_on_one_key_keeps_messages_short() -> None:
    procs = [Proc(f"s{i:02d}", "executor", key_path="kraken/shared") for i in range(40)]
    violations = run(POLICY, clean_stack(procs))
    assert len(violations) == 40
    assert all("and 34 more" in v.message and len(v.message) < 2000 for v in violations)


def test_a_plain_secret_shared_by_two_workloads_is_no_key_clash() -> None:
    shared = {"metadata": {"name": "tls", "namespace": "momentum", "labels": {"app": "x"}}}
    procs = [Proc("momentum", "executor"), Proc("momentum", "risk", role="risk")]
    stack = [r for r in clean_stack(procs) if r.resource_type != DEPLOYMENT]
    for p in procs:
        props = deployment_props(p)
        props["spec"]["template"]["spec"]["volumes"].append({"name": "tls", "secret": {"secretName": "tls"}})
        stack.append(wrap(DEPLOYMENT, props, p.resource_name))
    stack.append(wrap(SECRET, shared, "tls"))
    assert run(POLICY, stack) == []


def test_a_key_without_fingerprint_is_unverifiable() -> None:
    p = Proc("momentum", "executor", fingerprint="")
    violations = run(POLICY, clean_stack([p]))
    assert urns(violations) == [deployment_urn(p)]
    assert violations[0].message.startswith("Deployment momentum/executor: unverifiable key identity")
    assert L.FINGERPRINT in violations[0].message
    # Deployed by keyfence already (it names its Vault key): the fix is in Vault.
    assert "keyfence keys register --rotate" in violations[0].message
    assert "bao kv metadata patch" in violations[0].message and "docs/pipeline.md" in violations[0].message
    assert "Deploy it through keyfence" not in violations[0].message


def test_a_fingerprint_on_the_key_secret_alone_is_enough() -> None:
    p = Proc("momentum", "executor")
    props = deployment_props(p)
    for meta in (props["metadata"], props["spec"]["template"]["metadata"]):
        del meta["annotations"][L.FINGERPRINT]
    stack = [r for r in clean_stack([p]) if r.resource_type != DEPLOYMENT] + [
        wrap(DEPLOYMENT, props, p.resource_name)
    ]
    assert run(POLICY, stack) == []


def test_require_fingerprint_false_silences_only_the_fingerprint_finding() -> None:
    p = Proc("momentum", "executor", fingerprint="")
    twin = Proc("basis", "executor", key_path=p.key_path, fingerprint="")
    violations = run(POLICY, clean_stack([p, twin]), {"requireFingerprint": False})
    assert sorted(urns(violations)) == sorted([deployment_urn(p), deployment_urn(twin)])
    assert all("shares its exchange API key" in v.message for v in violations)


def test_a_key_bearing_workload_that_names_no_key_is_reported() -> None:
    props = workload_props(
        "Deployment", bare_pod_spec(), namespace="momentum", name="mystery", annotations={L.KEY_PATH: " / "}
    )
    violations = run(POLICY, [wrap(DEPLOYMENT, props, "mystery")], {"requireFingerprint": False})
    assert urns(violations) == [urn_of(DEPLOYMENT, "mystery")]
    assert "unverifiable key identity: it holds an exchange key but names none" in violations[0].message


def test_a_key_secret_without_a_name_cannot_be_matched() -> None:
    p = Proc("momentum", "executor")
    nameless = secret_props(p)
    del nameless["metadata"]["name"]
    violations = run(POLICY, [wrap(SECRET, nameless, "nameless")])
    assert urns(violations) == [urn_of(SECRET, "nameless")]
    assert "cannot evaluate no-duplicate-key-assignment: metadata.name is missing" in violations[0].message


def test_custom_annotation_keys_are_used_for_identity() -> None:
    a, b = Proc("momentum", "executor"), Proc("basis", "executor")
    stack = clean_stack([a, b])
    config = {"annotations": {"keyPath": "acme.io/vault-path"}, "requireFingerprint": False}
    assert run(POLICY, stack, config) == []  # nothing carries acme.io/vault-path: identities are the Secrets
    relabelled = []
    for p in (a, b):
        props = deployment_props(p)
        props["metadata"]["annotations"]["acme.io/vault-path"] = a.key_path  # b now claims a's key
        relabelled.append(wrap(DEPLOYMENT, props, p.resource_name))
    stack = [r for r in stack if r.resource_type != DEPLOYMENT] + relabelled
    violations = run(POLICY, stack, config)
    assert sorted(urns(violations)) == sorted([deployment_urn(a), deployment_urn(b)])
    assert all("Vault key secret/kraken/momentum/executor is also used by" in v.message for v in violations)
