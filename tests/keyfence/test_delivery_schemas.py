"""Every mode's manifests validate: Kubernetes kinds strictly, operator kinds against their CRD schemas."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest

from keyfence import fleet as resources
from keyfence.check.harness import Collected, collect
from keyfence.spec import FleetSpec
from tests.keyfence.test_delivery import MIXED, mixed_spec, operator_keys
from tests.keyfence.test_manifests import VERSIONS, manifest

CRDS = Path(__file__).resolve().parent.parent / "crds"
SCHEMA_FILES = ("vault-secrets-operator-v1.4.1.json", "external-secrets-v2.9.0.json")


def crd_schemas() -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in SCHEMA_FILES:
        data = json.loads((CRDS / name).read_text(encoding="utf-8"))
        assert data["source"].startswith("https://github.com/") and data["version"]
        out.update(data["kinds"])
    return out


SCHEMAS = crd_schemas()
VARIANTS = {
    "mixed": MIXED,
    "reloader": MIXED.replace("refresh_interval: 15m", "refresh_interval: 15m\n  restart: reloader"),
    "all-vso": MIXED.replace("delivery: external-secrets", "delivery: vault-secrets-operator"),
}


@pytest.fixture(scope="module")
def declared() -> dict[str, tuple[FleetSpec, Collected]]:
    out = {}
    for name, text in VARIANTS.items():
        spec = mixed_spec(text)
        keys = operator_keys(spec)
        out[name] = (spec, collect(lambda spec=spec, keys=keys: resources.declare_fleet(spec, keys)))
    return out


def operator_kind(body: dict[str, Any]) -> str | None:
    kind = f"{body['apiVersion']}/{body['kind']}"
    return kind if kind in SCHEMAS else None


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_custom_resources_match_their_crd_schemas(
    declared: dict[str, tuple[FleetSpec, Collected]], variant: str
) -> None:
    _, collected = declared[variant]
    seen: Counter[str] = Counter()
    for resource in collected.resources:
        if not resource.custom or not resource.type.startswith("kubernetes:"):  # not a ledger claim
            continue
        body = manifest(resource)
        kind = operator_kind(body)
        if kind is None:
            continue
        jsonschema.validate(body, SCHEMAS[kind])
        seen[kind] += 1
    expected = {"secrets.hashicorp.com/v1beta1/VaultStaticSecret", "secrets.hashicorp.com/v1beta1/VaultAuth"}
    if variant != "all-vso":
        expected |= {"external-secrets.io/v1/ExternalSecret", "external-secrets.io/v1/SecretStore"}
    assert set(seen) == expected, seen


@pytest.mark.parametrize("version", VERSIONS)
def test_kubernetes_kinds_of_every_mode_validate_strictly(
    declared: dict[str, tuple[FleetSpec, Collected]], version: str
) -> None:
    _, collected = declared["mixed"]
    kinds: Counter[str] = Counter()
    for resource in collected.resources:
        if not resource.custom or not resource.type.startswith("kubernetes:"):  # not a ledger claim
            continue
        body = manifest(resource)
        if operator_kind(body) is not None:
            continue
        kubernetes_validate.validate(body, version, strict=True)
        kinds[body["kind"]] += 1
    assert {"StatefulSet", "Service", "Deployment", "Secret"} <= set(kinds), kinds


def test_the_schemas_can_fail() -> None:
    """A misspelt field or a wrong enum is caught: the schemas are closed where keyfence writes."""
    static = SCHEMAS["secrets.hashicorp.com/v1beta1/VaultStaticSecret"]
    body = {
        "apiVersion": "secrets.hashicorp.com/v1beta1",
        "kind": "VaultStaticSecret",
        "metadata": {"name": "x-key", "namespace": "x"},
        "spec": {"type": "kv-v2", "mount": "secret", "path": "p", "destination": {"name": "x-key"}},
    }
    jsonschema.validate(body, static)
    for broken in (
        {**body["spec"], "hmacSecretdata": True},
        {**body["spec"], "type": "kv-v3"},
        {**body["spec"], "refreshAfter": "1d"},
        {**body["spec"], "rolloutRestartTargets": [{"kind": "Job", "name": "x"}]},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**body, "spec": broken}, static)
