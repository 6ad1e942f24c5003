"""The declared resources, under the Pulumi SDK's mocks: every invariant of a process's pod and key."""

from __future__ import annotations

import json
import runpy
from pathlib import Path
from typing import Any

import pulumi
import pytest
from keyfence_policies import labels as L
from pulumi.runtime import rpc

from keyfence import fleet as resources
from keyfence.check.harness import Collected, RegisteredResource, collect
from keyfence.errors import SpecError
from keyfence.program import ProgramOptions, run
from keyfence.spec import load_spec_text
from tests.fleet_fixtures import EXAMPLE_SPEC, ROOT, canary_strings, example_spec, resolved_keys


@pytest.fixture(scope="module")
def declared() -> tuple[Collected, list[Any]]:
    spec = example_spec()
    keys = resolved_keys(spec)
    return collect(lambda: resources.declare_fleet(spec, keys)), keys


def of_type(collected: Collected, suffix: str) -> list[RegisteredResource]:
    return [r for r in collected.resources if r.type.endswith(suffix)]


def raw(resource: RegisteredResource) -> Any:
    return rpc.deserialize_properties(resource.properties, keep_unknowns=True)


def test_one_namespace_and_default_deny_per_subaccount(declared: tuple[Collected, list[Any]]) -> None:
    collected, _ = declared
    spec = example_spec()
    namespaces = {r.inputs()["metadata"]["name"]: r.inputs() for r in of_type(collected, ":Namespace")}
    assert set(namespaces) == {s.name for s in spec.subaccounts}
    for sub in spec.subaccounts:
        assert namespaces[sub.name]["metadata"]["labels"][L.SUBACCOUNT] == sub.name
    policies = of_type(collected, ":NetworkPolicy")
    assert len(policies) == len(spec.subaccounts)
    for policy in policies:
        spec_ = policy.inputs()["spec"]
        assert spec_["podSelector"] == {} and spec_["policyTypes"] == ["Ingress"]
        assert "ingress" not in spec_


def test_one_deployment_per_process_single_writer(declared: tuple[Collected, list[Any]]) -> None:
    collected, keys = declared
    deployments = of_type(collected, "apps/v1:Deployment")
    assert len(deployments) == len(keys)
    for d in deployments:
        spec_ = d.inputs()["spec"]
        assert spec_["replicas"] == 1
        assert spec_["strategy"] == {"type": "Recreate"}


def test_components_parent_their_resources(declared: tuple[Collected, list[Any]]) -> None:
    collected, keys = declared
    by_urn = {r.urn: r for r in collected.resources}
    processes = of_type(collected, "keyfence:fleet:Process")
    assert {p.name for p in processes} == {k.entry.ref for k in keys}
    for kind in ("apps/v1:Deployment", "core/v1:Secret", "core/v1:ServiceAccount"):
        for r in of_type(collected, kind):
            assert by_urn[r.parent].type == "keyfence:fleet:Process"
            assert by_urn[by_urn[r.parent].parent].type == "keyfence:fleet:Subaccount"


def test_each_deployment_mounts_its_own_secret_read_only(declared: tuple[Collected, list[Any]]) -> None:
    collected, keys = declared
    secrets = {
        (s.inputs()["metadata"]["namespace"], s.inputs()["metadata"]["name"]): s
        for s in of_type(collected, ":Secret")
    }
    mounted = set()
    for d in of_type(collected, "apps/v1:Deployment"):
        inputs = d.inputs()
        ns = inputs["metadata"]["namespace"]
        pod = inputs["spec"]["template"]["spec"]
        key_volumes = [v for v in pod["volumes"] if "secret" in v]
        assert len(key_volumes) == 1
        volume = key_volumes[0]
        assert volume["secret"]["defaultMode"] == 0o400
        assert sorted(i["path"] for i in volume["secret"]["items"]) == ["api_key", "api_secret"]
        name = volume["secret"]["secretName"]
        assert (ns, name) in secrets
        assert secrets[(ns, name)].inputs()["metadata"]["labels"][L.PROCESS] == inputs["metadata"]["name"]
        mounted.add((ns, name))
        (container,) = pod["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["readOnly"] is True and mount["mountPath"] == L.KEY_MOUNT_PATH
        for env in container["env"]:
            assert set(env) == {"name", "value"}, "no valueFrom: key material never goes through env"
        assert "envFrom" not in container
    assert mounted == set(secrets), "every key Secret is mounted by exactly its own process"
    assert len(mounted) == len(keys)


def test_pod_is_hardened(declared: tuple[Collected, list[Any]]) -> None:
    collected, _ = declared
    for d in of_type(collected, "apps/v1:Deployment"):
        pod = d.inputs()["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False
            assert sc["readOnlyRootFilesystem"] is True
            assert sc["runAsNonRoot"] is True
            assert sc["capabilities"] == {"drop": ["ALL"]}
            assert c["resources"]["requests"] and c["resources"]["limits"]
    for sa in of_type(collected, ":ServiceAccount"):
        assert sa.inputs()["automountServiceAccountToken"] is False


def test_resources_default_and_override() -> None:
    collected, _ = collect_fleet()
    by_name = {
        d.inputs()["metadata"]["namespace"] + "/" + d.inputs()["metadata"]["name"]: d
        for d in of_type(collected, "apps/v1:Deployment")
    }
    executor = by_name["momentum/executor"].inputs()["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert executor == {
        "requests": {"cpu": "200m", "memory": "256Mi"},
        "limits": {"cpu": "1", "memory": "512Mi"},
    }
    feed = by_name["momentum/feed"].inputs()["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert feed == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": "500m", "memory": "256Mi"},
    }


def collect_fleet() -> tuple[Collected, list[Any]]:
    spec = example_spec()
    keys = resolved_keys(spec)
    return collect(lambda: resources.declare_fleet(spec, keys)), keys


def test_labels_and_annotations_are_plain_strings(declared: tuple[Collected, list[Any]]) -> None:
    collected, keys = declared
    by_ref = {k.entry.ref: k for k in keys}
    for d in of_type(collected, "apps/v1:Deployment"):
        meta = d.inputs()["metadata"]
        ref = f"{meta['namespace']}/{meta['name']}"
        key = by_ref[ref]
        labels = meta["labels"]
        assert labels[L.SUBACCOUNT] == key.entry.subaccount.name
        assert labels[L.PROCESS] == key.entry.process.name
        assert labels[L.ROLE] == key.entry.process.role
        assert labels[L.VENUE] == key.entry.subaccount.venue
        for k in ("name", "instance", "component", "part-of", "managed-by"):
            assert isinstance(labels[f"app.kubernetes.io/{k}"], str)
        ann = meta["annotations"]
        assert ann[L.KEY_PATH] == key.path
        assert ann[L.VAULT_MOUNT] == "secret"
        assert ann[L.FINGERPRINT] == key.fingerprint
        assert ann[L.KEY_VERSION] == "3"
        template = d.inputs()["spec"]["template"]["metadata"]
        assert template["annotations"] == ann and template["labels"] == labels
        for value in [*labels.values(), *ann.values()]:
            assert isinstance(value, str)
            assert len(value) <= 63 or value in ann.values()
    treasury = next(
        d for d in of_type(collected, "apps/v1:Deployment") if d.inputs()["metadata"]["name"] == "treasury"
    )
    assert (
        treasury.inputs()["metadata"]["annotations"][L.PERMISSIONS]
        == "deposit-funds,query-funds,withdraw-funds"
    )
    assert treasury.inputs()["metadata"]["annotations"][L.ALLOW_WITHDRAWALS] == "true"


def test_secret_is_immutable_secret_output_labelled_as_exchange_key(
    declared: tuple[Collected, list[Any]],
) -> None:
    collected, keys = declared
    by_ref = {k.entry.ref: k for k in keys}
    secrets = of_type(collected, "core/v1:Secret")
    assert len(secrets) == len(keys)
    for s in secrets:
        props = raw(s)
        assert props["immutable"] is True
        assert rpc.is_rpc_secret(props["stringData"]), "key material must be a Pulumi secret"
        meta = s.inputs()["metadata"]
        key = by_ref[f"{meta['namespace']}/{meta['labels'][L.PROCESS]}"]
        assert meta["name"] == f"{key.entry.process.name}-key-v3", "a new Vault version gets a new Secret"
        assert meta["labels"][L.EXCHANGE_KEY] == "true"
        assert meta["labels"][L.SUBACCOUNT] == key.entry.subaccount.name
        assert meta["labels"][L.FINGERPRINT_LABEL] == key.fingerprint[:32]
        assert meta["annotations"][L.FINGERPRINT] == key.fingerprint
        assert s.inputs()["stringData"] == "[secret]"


def test_new_vault_version_replaces_the_secret() -> None:
    spec = example_spec()
    v3 = collect(lambda: resources.declare_fleet(spec, resolved_keys(spec, version=3)))
    v4 = collect(lambda: resources.declare_fleet(spec, resolved_keys(spec, version=4)))
    names3 = {s.inputs()["metadata"]["name"] for s in of_type(v3, ":Secret")}
    names4 = {s.inputs()["metadata"]["name"] for s in of_type(v4, ":Secret")}
    assert names3.isdisjoint(names4)
    mounts4 = {
        d.inputs()["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"]
        for d in of_type(v4, "Deployment")
    }
    assert mounts4 == names4


def test_no_key_material_outside_secrets(declared: tuple[Collected, list[Any]]) -> None:
    collected, keys = declared
    canaries = canary_strings(keys)
    plain = json.dumps([r.inputs() for r in collected.resources]) + json.dumps(collected.stack_outputs)
    for canary in canaries:
        assert canary not in plain
    # The material is there, but only inside the Secret's wrapped secret value.
    wrapped = json.dumps([raw(r) for r in of_type(collected, ":Secret")])
    assert all(c in wrapped for c in canaries)


def test_stack_outputs_per_process(declared: tuple[Collected, list[Any]]) -> None:
    collected, keys = declared
    outputs = collected.stack_outputs["processes"]
    assert set(outputs) == {k.entry.ref for k in keys}
    for key in keys:
        out = outputs[key.entry.ref]
        assert out == {
            "namespace": key.entry.subaccount.name,
            "deployment": key.entry.process.name,
            "workload": "deployment",
            "delivery": "pulumi-secret",
            "key_path": f"secret/{key.path}",
            "fingerprint": key.fingerprint,
            "version": 3,
        }


def test_offline_mode_declares_with_placeholders_and_path_identity() -> None:
    collected = collect(lambda: run(ProgramOptions(spec_path=EXAMPLE_SPEC, mode="offline")))
    secrets = of_type(collected, "core/v1:Secret")
    assert secrets
    for s in secrets:
        meta = s.inputs()["metadata"]
        assert meta["name"].endswith("-key")
        assert L.FINGERPRINT not in meta["annotations"]
        assert rpc.is_rpc_secret(raw(s)["stringData"])


def test_invalid_spec_declares_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text("version: 1\nsubaccounts:\n  - name: Bad\n    venue: spot\n    processes: []\n")
    declared: list[RegisteredResource] = []

    def program() -> None:
        run(ProgramOptions(spec_path=str(bad), mode="offline"))

    with pytest.raises(SpecError) as err:
        declared = collect(program).resources
    assert f"{bad}:3:" in str(err.value)
    assert declared == []


def test_pulumi_entry_point_fails_cleanly_without_declaring(tmp_path: Path) -> None:
    bad = tmp_path / "fleet.yaml"
    bad.write_text("version: 2\n")
    recorded: dict[str, Collected] = {}

    def program() -> None:
        runpy.run_path(str(ROOT / "infra" / "__main__.py"), run_name="__main__")

    with pytest.raises(pulumi.RunError) as err:
        recorded["c"] = collect(program, config={"keyfence:spec": str(bad)})
    assert "version" in str(err.value) and str(bad) in str(err.value)
    assert "Traceback" not in str(err.value)


def test_instance_label_length_is_enforced_by_the_spec() -> None:
    long_sub = "s" * 40
    long_proc = "p" * 30
    with pytest.raises(SpecError) as err:
        load_spec_text(
            f"version: 1\nsubaccounts:\n  - name: {long_sub}\n    venue: futures\n    processes:\n"
            f"      - {{name: {long_proc}, role: trader, image: 'x:1'}}\n",
            "long.yaml",
        )
    assert "long.yaml:6:" in str(err.value) and "63" in str(err.value)
