"""What the pack receives under ``keyfence check``, pinned against what the engine sends.

Each scenario program in ``tests/fixtures/programs/<name>/`` wraps the example fleet. The
resources and inputs the pack would receive for it, minus those of the fleet alone, are
pinned in ``<name>/expected.json`` (regenerate with ``KEYFENCE_UPDATE_SNAPSHOTS=1`` and
review the diff against the rules below). Each rule test states the engine's or the
provider's behaviour it checks and where that behaviour is defined:

- pulumi ``pkg/resource/deploy/source_eval.go`` (RegisterResource): transforms, own then
  ancestors' then the stack's; provider resolution; default providers;
- pulumi ``pkg/resource/deploy/step_generator.go`` (generateSteps): the pack sees the
  provider's checked inputs, the parent and the provider of every resource;
- pulumi ``sdk/go/common/resource/urn.go`` (NewURN): a child's type is prefixed with its
  parent's type chain, the root stack's left out;
- pulumi-kubernetes ``provider/pkg/provider/provider.go`` (Check) and
  ``provider/pkg/provider/yaml/v2`` (ConfigFile, ConfigGroup, Parse, Normalize, Register).
"""

from __future__ import annotations

import functools
import json
import os
from importlib import metadata
from pathlib import Path
from typing import Any

import pytest

from keyfence.check.harness import UNKNOWN_PLACEHOLDER, RegisteredResource
from keyfence.check.kubeprovider import AUTONAMED_ANNOTATION, autoname
from keyfence.check.runner import collect_program
from tests.fleet_fixtures import EXAMPLE_SPEC, ROOT

PROGRAMS = ROOT / "tests" / "fixtures" / "programs"
PREFIX = "urn:pulumi:dev::keyfence::"
UPDATE = os.environ.get("KEYFENCE_UPDATE_SNAPSHOTS") == "1"
SCENARIOS = [
    "transform-stack",
    "transform-resource",
    "provider-namespace",
    "yaml-v2-configfile",
    "yaml-v2-configgroup",
    "yaml-v1",
]


def view(resource: RegisteredResource) -> dict[str, Any]:
    """A resource as the pack receives it: type, URN, parent, provider, checked inputs.

    The Kubernetes SDK's version (in provider inputs and default provider names) reads
    ``<version>``, so that upgrading the SDK does not change the snapshots.
    """
    text = json.dumps(
        {
            "type": resource.type,
            "urn": resource.urn,
            "parent": resource.parent,
            "provider": resource.provider,
            "dependencies": sorted(resource.dependencies),
            "inputs": resource.inputs(),
        }
    )
    version = metadata.version("pulumi-kubernetes")
    text = text.replace(f"default_{version.replace('.', '_')}", "default_<version>")
    text = text.replace(f'"version": "{version}"', '"version": "<version>"')
    loaded: dict[str, Any] = json.loads(text)
    return loaded


def collect(program: Path | None) -> dict[str, dict[str, Any]]:
    collected = collect_program(
        EXAMPLE_SPEC, mode="offline", stack="dev", project="keyfence", program=program, timeout=300
    )
    return {r.urn: view(r) for r in collected.resources}


@functools.cache
def fleet_alone() -> dict[str, dict[str, Any]]:
    return collect(None)


@functools.cache
def received(name: str) -> dict[str, dict[str, Any]]:
    return collect(PROGRAMS / name)


def changes(before: Any, after: Any, path: str = "") -> dict[str, Any]:
    """``{dotted path: [before, after]}`` for every leaf that differs."""
    if isinstance(before, dict) and isinstance(after, dict):
        out: dict[str, Any] = {}
        for key in sorted(before.keys() | after.keys()):
            out.update(changes(before.get(key), after.get(key), f"{path}.{key}" if path else str(key)))
        return out
    return {} if before == after else {path: [before, after]}


def delta(name: str) -> list[dict[str, Any]]:
    """What the scenario adds to the fleet alone (whole), or changes in it (the changed leaves)."""
    base = fleet_alone()
    out = []
    for urn, resource in sorted(received(name).items()):
        if urn not in base:
            out.append(resource)
        elif base[urn] != resource:
            out.append({"urn": urn, "changed": changes(base[urn], resource)})
    return out


@pytest.mark.parametrize("name", SCENARIOS)
def test_what_the_pack_receives_matches_the_snapshot(name: str) -> None:
    snapshot = PROGRAMS / name / "expected.json"
    actual = delta(name)
    if UPDATE:
        snapshot.write_text(json.dumps(actual, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    assert actual == json.loads(snapshot.read_text(encoding="utf-8"))


def resource(name: str, urn_suffix: str) -> dict[str, Any]:
    found = [v for urn, v in received(name).items() if urn == PREFIX + urn_suffix]
    assert found, f"{urn_suffix} not received; got {sorted(received(name))}"
    return found[0]


# --------------------------------------------------------------------------- the engine's part


def test_the_root_stack_and_the_default_provider_are_sent_like_any_resource() -> None:
    # step_generator.go: every goal is analysed, the root stack and default providers included;
    # a default provider is named default_<version> and configured from kubernetes:* stack config.
    base = fleet_alone()
    stack = base[PREFIX + "pulumi:pulumi:Stack::keyfence-dev"]
    providers = [v for v in base.values() if v["type"] == "pulumi:providers:kubernetes"]
    assert len(providers) == 1 and providers[0]["urn"].startswith(
        PREFIX + "pulumi:providers:kubernetes::default_"
    )
    assert providers[0]["parent"] == stack["urn"] and set(providers[0]["inputs"]) == {"version"}
    deployments = [v for v in base.values() if v["type"] == "kubernetes:apps/v1:Deployment"]
    assert deployments and all(d["provider"].startswith(providers[0]["urn"] + "::") for d in deployments)


def test_a_childs_urn_carries_its_parents_type_chain() -> None:
    # urn.go NewURN: the qualified type is the parent's qualified type plus the child's.
    worker = resource(
        "transform-resource", "acme:index:Wrapper$kubernetes:apps/v1:Deployment::wrapped-worker"
    )
    assert worker["parent"] == PREFIX + "acme:index:Wrapper::wrapped"


def test_a_stack_transform_reaches_every_deployment() -> None:
    # source_eval.go: stack transforms run on every registration after they were registered.
    deployments = [
        v for v in received("transform-stack").values() if v["type"] == "kubernetes:apps/v1:Deployment"
    ]
    assert len(deployments) == 7 and all(d["inputs"]["spec"]["replicas"] == 2 for d in deployments)


def test_own_transforms_run_before_the_ancestors() -> None:
    # source_eval.go: "First run the transforms for this resource, then it's parents".
    worker = resource(
        "transform-resource", "acme:index:Wrapper$kubernetes:apps/v1:Deployment::wrapped-worker"
    )
    assert worker["inputs"]["metadata"]["namespace"] == "momentum"  # its own transform
    assert worker["inputs"]["spec"]["replicas"] == 3  # its parent's transform


def test_an_explicit_providers_namespace_applies_to_namespaced_kinds_only() -> None:
    # provider.go Check: default namespace for namespaced kinds without one; kinds.go Namespaced.
    stray = resource("provider-namespace", "kubernetes:apps/v1:Deployment::stray")
    assert stray["inputs"]["metadata"]["namespace"] == "momentum"
    provider = resource("provider-namespace", "pulumi:providers:kubernetes::momentum")
    assert stray["provider"].startswith(provider["urn"] + "::")
    assert provider["inputs"]["namespace"] == "momentum" and "version" in provider["inputs"]
    role = resource("provider-namespace", "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole::reader")
    assert "namespace" not in role["inputs"]["metadata"]
    # naming.go AssignNameIfAutonamable: no metadata.name -> <name>-<suffix>, annotated.
    assert role["inputs"]["metadata"]["name"] == autoname(role["urn"])
    assert role["inputs"]["metadata"]["annotations"] == {AUTONAMED_ANNOTATION: "true"}


def test_without_a_namespace_option_the_pack_sees_an_unknown_namespace() -> None:
    # provider.go Configure: the kubeconfig context of the deploying machine decides; unknown here.
    settings = resource("yaml-v1", "kubernetes:yaml:ConfigFile$kubernetes:core/v1:ConfigMap::rogue-settings")
    assert settings["inputs"]["metadata"]["namespace"] == UNKNOWN_PLACEHOLDER


# --------------------------------------------------------------------------- provider-side components


def test_a_yaml_v2_config_file_is_expanded_into_its_objects() -> None:
    # configfile.go: the component registers with no inputs; yaml.go Register: one child per
    # object, named <resourcePrefix (default: the component's name)>:<namespace>/<name>,
    # typed kubernetes:<apiVersion>:<Kind>, parented to the component; empty documents skipped.
    component = resource("yaml-v2-configfile", "kubernetes:yaml/v2:ConfigFile::rogue")
    assert component["inputs"] == {}
    children = [v for v in received("yaml-v2-configfile").values() if v["parent"] == component["urn"]]
    assert sorted(v["urn"].removeprefix(PREFIX) for v in children) == [
        "kubernetes:yaml/v2:ConfigFile$kubernetes:apps/v1:Deployment::rogue:momentum/rogue",
        "kubernetes:yaml/v2:ConfigFile$kubernetes:core/v1:ConfigMap::rogue:momentum/rogue-settings",
    ]
    deployment = next(v for v in children if v["type"] == "kubernetes:apps/v1:Deployment")
    assert deployment["inputs"]["spec"]["replicas"] == 3
    # Normalize: the constructing provider's namespace for a namespaced object without one.
    config_map = next(v for v in children if v["type"] == "kubernetes:core/v1:ConfigMap")
    assert config_map["inputs"]["metadata"]["namespace"] == "momentum"


def test_a_yaml_v2_config_group_globs_expands_lists_and_takes_strings_and_objects() -> None:
    # configgroup.go: files globbed and sorted, then the yaml string, then objs; yaml.go expand:
    # Lists become their items; skipAwait adds the pulumi.com/skipAwait annotation.
    group = received("yaml-v2-configgroup")
    children = [v for v in group.values() if v["parent"] == PREFIX + "kubernetes:yaml/v2:ConfigGroup::group"]
    names = sorted(v["urn"].rsplit("::", 1)[-1] for v in children)
    assert names == [
        "grp:grouped-reader",
        "grp:momentum/from-objs",
        "grp:momentum/from-string",
        "grp:momentum/grouped",
        "grp:momentum/grouped",
    ]
    assert all(v["inputs"]["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true" for v in children)


def test_yaml_v1_children_come_from_the_providers_decode_function() -> None:
    # invoke_decode_yaml.go: kubernetes:yaml:decode returns the documents; the SDK names each
    # child <namespace>/<name> under the kubernetes:yaml:ConfigFile component.
    rogue = resource("yaml-v1", "kubernetes:yaml:ConfigFile$kubernetes:apps/v1:Deployment::momentum/rogue")
    assert rogue["inputs"]["spec"]["replicas"] == 3
