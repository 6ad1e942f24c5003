"""Manifests: every kind keyfence declares is valid Kubernetes, and every process's pod is hardened.

The Kubernetes versions are the three newest minors whose strict schemas the installed
kubernetes-validate ships, read from its schema directory: upgrading the package moves the
test to the new releases, with no list to forget. The hardened pod settings are checked on a
generated fleet of 50 processes (every role, spot and futures, master and subaccounts), not
only on the example, so no branch of the pod builder escapes.
"""

from __future__ import annotations

import importlib.resources
import re
from collections import Counter
from typing import Any

import kubernetes_validate
import pytest
import yaml
from keyfence_policies import labels as L
from keyfence_policies import permissions as perms
from pulumi.runtime import rpc

from keyfence import fleet as resources
from keyfence.check.harness import Collected, RegisteredResource, collect
from keyfence.spec import FleetSpec, load_spec_text
from tests.fleet_fixtures import example_spec, resolved_keys

DECLARED_KINDS = {"Namespace", "NetworkPolicy", "ServiceAccount", "Secret", "Deployment"}
STRICT_SCHEMA_DIR = re.compile(r"v(\d+)\.(\d+)\.(\d+)-local-strict")


def newest_minors(count: int = 3) -> list[str]:
    """The newest patch of each of the ``count`` newest minors with strict schemas, e.g. ``1.37.0``."""
    root = importlib.resources.files("kubernetes_validate") / "kubernetes-json-schema"
    patches: dict[tuple[int, int], int] = {}
    for entry in root.iterdir():
        found = STRICT_SCHEMA_DIR.fullmatch(entry.name)
        if found and entry.is_dir():
            minor = (int(found[1]), int(found[2]))
            patches[minor] = max(patches.get(minor, 0), int(found[3]))
    newest = sorted(patches)[-count:]
    return [f"{major}.{minor}.{patches[(major, minor)]}" for major, minor in newest]


VERSIONS = newest_minors()


def manifest(resource: RegisteredResource) -> Any:
    """The object Kubernetes would receive: Pulumi secrets unwrapped to their real shape."""

    def unwrap(value: Any) -> Any:
        if rpc.is_rpc_secret(value):
            return unwrap(rpc.unwrap_rpc_secret(value))
        if isinstance(value, dict):
            return {k: unwrap(v) for k, v in value.items()}
        if isinstance(value, list):
            return [unwrap(v) for v in value]
        return value

    return unwrap(rpc.deserialize_properties(resource.properties, keep_unknowns=True))


def large_fleet() -> FleetSpec:
    """50 processes in 10 subaccounts: the master (spot), institutional spot and futures, every role."""
    roles = sorted(perms.ROLES)
    subaccounts: list[dict[str, Any]] = []
    for s in range(10):
        venue = "spot" if s % 2 == 0 else "futures"
        sub: dict[str, Any] = {"name": "main" if s == 0 else f"strategy-{s}", "venue": venue}
        if s == 0:
            sub["master"] = True
        elif venue == "spot":
            sub["institutional"] = True
        processes = []
        for p, role in enumerate(roles):
            proc: dict[str, Any] = {
                "name": f"{role}-{p}",
                "role": role,
                "image": f"ghcr.io/acme/{role}:1.{s}.{p}",
            }
            if s == 0 and role == "treasury":
                proc["allow_withdrawals"] = True
            if (s + p) % 3 == 0:
                proc["args"] = ["--strategy", sub["name"]]
                proc["env"] = {"LOG_LEVEL": "debug", "REGION": "eu"}
            if (s + p) % 4 == 0:
                proc["resources"] = {"requests": {"cpu": "250m", "memory": "128Mi"}, "limits": {"cpu": "2"}}
            processes.append(proc)
        sub["processes"] = processes
        subaccounts.append(sub)
    return load_spec_text(yaml.safe_dump({"version": 1, "subaccounts": subaccounts}), "large-fleet.yaml")


def declare(spec: FleetSpec) -> Collected:
    keys = resolved_keys(spec)
    return collect(lambda: resources.declare_fleet(spec, keys))


@pytest.fixture(scope="module")
def fleets() -> dict[str, tuple[FleetSpec, Collected]]:
    return {
        name: (spec, declare(spec)) for name, spec in (("example", example_spec()), ("large", large_fleet()))
    }


def test_the_three_newest_minors_are_found() -> None:
    assert len(VERSIONS) == 3, VERSIONS
    minors = [tuple(int(x) for x in v.split(".")[:2]) for v in VERSIONS]
    assert minors == sorted(minors) and len(set(minors)) == 3
    assert VERSIONS[-1].rsplit(".", 1)[0] == kubernetes_validate.utils.latest_version().rsplit(".", 1)[0]


@pytest.mark.parametrize("version", VERSIONS)
@pytest.mark.parametrize("fleet", ["example", "large"])
def test_every_declared_kind_validates_strictly(
    fleets: dict[str, tuple[FleetSpec, Collected]], fleet: str, version: str
) -> None:
    _, collected = fleets[fleet]
    kinds: Counter[str] = Counter()
    for resource in collected.resources:
        if not resource.custom or not resource.type.startswith("kubernetes:"):
            continue  # components, and the ledger claims (a dynamic provider, not a Kubernetes object)
        body = manifest(resource)
        kubernetes_validate.validate(body, version, strict=True)
        kinds[body["kind"]] += 1
    assert set(kinds) == DECLARED_KINDS, kinds


def test_the_large_fleet_is_what_it_claims(fleets: dict[str, tuple[FleetSpec, Collected]]) -> None:
    spec, collected = fleets["large"]
    entries = spec.entries()
    assert len(entries) == 50
    assert {e.process.role for e in entries} == set(perms.ROLES)
    assert {(s.venue, s.master) for s in spec.subaccounts} == {
        ("spot", True),
        ("spot", False),
        ("futures", False),
    }
    deployments = [r for r in collected.resources if r.type == "kubernetes:apps/v1:Deployment"]
    assert len(deployments) == 50


@pytest.mark.parametrize("fleet", ["example", "large"])
def test_every_process_runs_a_hardened_single_pod(
    fleets: dict[str, tuple[FleetSpec, Collected]], fleet: str
) -> None:
    spec, collected = fleets[fleet]
    declared = {(r.type.rsplit(":", 1)[-1], r.name): manifest(r) for r in collected.resources if r.custom}
    for entry in spec.entries():
        assert declared[("ServiceAccount", entry.ref)]["automountServiceAccountToken"] is False
        deployment = declared[("Deployment", entry.ref)]
        assert deployment["spec"]["replicas"] == 1
        assert deployment["spec"]["strategy"] == {"type": "Recreate"}
        pod = deployment["spec"]["template"]["spec"]
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == entry.process.name
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert len(pod["containers"]) == 1 and not pod.get("initContainers")
        for container in pod["containers"]:
            context = container["securityContext"]
            assert context["runAsNonRoot"] is True
            assert context["readOnlyRootFilesystem"] is True
            assert context["allowPrivilegeEscalation"] is False
            assert context["privileged"] is False
            assert context["capabilities"] == {"drop": ["ALL"]}
            requests, limits = container["resources"]["requests"], container["resources"]["limits"]
            assert set(requests) == set(limits) == {"cpu", "memory"}, container["resources"]
            assert not any(e.get("valueFrom") for e in container.get("env", [])), "the key is never env"
            mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
            assert mounts[L.KEY_MOUNT_PATH]["readOnly"] is True
