"""Every mode's manifests validate: Kubernetes kinds strictly, operator kinds against their published CRDs."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from keyfence import fleet as resources
from keyfence.check.harness import Collected, collect
from keyfence.spec import FleetSpec
from tests.keyfence.test_delivery import MIXED, mixed_spec, operator_keys
from tests.keyfence.test_manifests import VERSIONS, manifest

CRDS = Path(__file__).resolve().parent.parent / "crds"
CRD_FILES = (
    "secrets.hashicorp.com_vaultstaticsecrets.yaml",
    "secrets.hashicorp.com_vaultauths.yaml",
    "external-secrets.io_externalsecrets.yaml",
    "external-secrets.io_secretstores.yaml",
)
PRESERVE = "x-kubernetes-preserve-unknown-fields"
BRANCHES = ("anyOf", "oneOf", "allOf", "not")


def closed(schema: Any, *, branch: bool = False) -> Any:
    """A copy of a CRD schema that refuses the unknown fields the API server would prune.

    Every object schema with ``properties`` and without ``x-kubernetes-preserve-unknown-fields``
    gets ``additionalProperties: false``. A branch of ``anyOf``/``oneOf``/``allOf``/``not`` is a
    partial constraint, so it is not closed itself; what it nests is.
    """
    if isinstance(schema, list):
        return [closed(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties":
            out[key] = {name: closed(sub) for name, sub in value.items()}
        elif key in BRANCHES:
            out[key] = (
                [closed(b, branch=True) for b in value]
                if isinstance(value, list)
                else closed(value, branch=True)
            )
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            out[key] = closed(value)
        else:
            out[key] = value
    if "properties" in out and not out.get(PRESERVE) and "additionalProperties" not in out and not branch:
        out["additionalProperties"] = False
    return out


def served_schemas() -> Iterator[tuple[str, dict[str, Any]]]:
    """``group/version/Kind`` and the published ``openAPIV3Schema`` of every served version."""
    for name in CRD_FILES:
        for crd in yaml.safe_load_all((CRDS / name).read_text(encoding="utf-8")):
            if not crd:
                continue
            assert crd["kind"] == "CustomResourceDefinition", name
            group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
            for version in crd["spec"]["versions"]:
                if version.get("served"):
                    yield f"{group}/{version['name']}/{kind}", version["schema"]["openAPIV3Schema"]


PUBLISHED = dict(served_schemas())
SCHEMAS = {kind: closed(schema) for kind, schema in PUBLISHED.items()}
EMITTED = {
    "secrets.hashicorp.com/v1beta1/VaultStaticSecret",
    "secrets.hashicorp.com/v1beta1/VaultAuth",
    "external-secrets.io/v1/ExternalSecret",
    "external-secrets.io/v1/SecretStore",
}
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
    """The CRD kind of a body, or None for a built-in kind; a custom kind with no shipped CRD fails."""
    kind = f"{body['apiVersion']}/{body['kind']}"
    group = body["apiVersion"].rpartition("/")[0]
    if "." in group and not group.endswith(".k8s.io"):
        assert kind in SCHEMAS, f"{kind}: no served version of a shipped CRD"
        return kind
    return None


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
    expected = {k for k in EMITTED if variant != "all-vso" or k.startswith("secrets.hashicorp.com/")}
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


def test_every_emitted_kind_has_a_served_published_schema() -> None:
    assert set(SCHEMAS) >= EMITTED, sorted(SCHEMAS)


def test_closing_is_derived_not_hand_written() -> None:
    """The closed copy differs from the published schema only by ``additionalProperties: false``."""

    def strip(schema: Any) -> Any:
        if isinstance(schema, list):
            return [strip(item) for item in schema]
        if isinstance(schema, dict):
            return {
                k: strip(v) for k, v in schema.items() if not (k == "additionalProperties" and v is False)
            }
        return schema

    for kind, schema in SCHEMAS.items():
        assert strip(schema) == strip(PUBLISHED[kind]), kind
    spec = SCHEMAS["secrets.hashicorp.com/v1beta1/VaultStaticSecret"]["properties"]["spec"]
    assert spec["additionalProperties"] is False
    assert (
        "additionalProperties"
        not in PUBLISHED["secrets.hashicorp.com/v1beta1/VaultStaticSecret"]["properties"]["spec"]
    )


def test_preserved_objects_stay_open() -> None:
    """An object that keeps unknown fields in the cluster keeps them in the closed copy too."""
    schema = closed(
        {"type": "object", "properties": {"a": {"type": "object", PRESERVE: True, "properties": {}}}}
    )
    jsonschema.validate({"a": {"anything": 1}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"b": 1}, schema)


STATIC_BODY: dict[str, Any] = {
    "apiVersion": "secrets.hashicorp.com/v1beta1",
    "kind": "VaultStaticSecret",
    "metadata": {"name": "x-key", "namespace": "x"},
    "spec": {"type": "kv-v2", "mount": "secret", "path": "p", "destination": {"name": "x-key"}},
}
EXTERNAL_BODY: dict[str, Any] = {
    "apiVersion": "external-secrets.io/v1",
    "kind": "ExternalSecret",
    "metadata": {"name": "x-key", "namespace": "x"},
    "spec": {
        "secretStoreRef": {"kind": "SecretStore", "name": "x-vault"},
        "target": {"name": "x-key"},
        "data": [{"secretKey": "api_key", "remoteRef": {"key": "p", "property": "api_key"}}],
    },
}


def test_the_schemas_can_fail() -> None:
    """A misspelt field, a wrong type or a wrong enum fails, at the top of spec and deep inside it."""
    static = SCHEMAS["secrets.hashicorp.com/v1beta1/VaultStaticSecret"]
    jsonschema.validate(STATIC_BODY, static)
    spec = STATIC_BODY["spec"]
    for broken in (
        {**spec, "hmacSecretdata": True},
        {**spec, "hmacSecretData": "yes"},
        {**spec, "type": "kv-v3"},
        {**spec, "refreshAfter": "1d"},
        {**spec, "rolloutRestartTargets": [{"kind": "Job", "name": "x"}]},
        {**spec, "destination": {"name": "x-key", "transformation": {"excludeRAW": True}}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**STATIC_BODY, "spec": broken}, static)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {**STATIC_BODY, "spec": {**spec, "hmacSecretData": "yes"}},
            PUBLISHED["secrets.hashicorp.com/v1beta1/VaultStaticSecret"],
        )
    # The published schema lets a misspelt field through (the API server would prune it): why it is closed.
    jsonschema.validate(
        {**STATIC_BODY, "spec": {**spec, "hmacSecretdata": True}},
        PUBLISHED["secrets.hashicorp.com/v1beta1/VaultStaticSecret"],
    )

    external = SCHEMAS["external-secrets.io/v1/ExternalSecret"]
    jsonschema.validate(EXTERNAL_BODY, external)
    data = EXTERNAL_BODY["spec"]["data"][0]
    for broken_spec in (
        {**EXTERNAL_BODY["spec"], "refreshIntervall": "15m"},
        {**EXTERNAL_BODY["spec"], "data": [{**data, "remoteRef": {**data["remoteRef"], "propery": "x"}}]},
        {**EXTERNAL_BODY["spec"], "data": [{**data, "secretKey": 7}]},
        {**EXTERNAL_BODY["spec"], "target": {"name": "x-key", "creationPolicy": "Sometimes"}},
    ):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**EXTERNAL_BODY, "spec": broken_spec}, external)


@pytest.mark.parametrize("kind", sorted(EMITTED))
def test_every_emitted_kind_refuses_a_misspelt_spec_field(
    declared: dict[str, tuple[FleetSpec, Collected]], kind: str
) -> None:
    """Each real emitted object, with one field misspelt or one value of the wrong type, fails."""
    _, collected = declared["mixed"]
    body = next(
        b
        for r in collected.resources
        if r.custom and r.type.startswith("kubernetes:")
        for b in [manifest(r)]
        if f"{b['apiVersion']}/{b['kind']}" == kind
    )
    jsonschema.validate(body, SCHEMAS[kind])
    field = sorted(body["spec"])[0]
    misspelt = {**body, "spec": {**{k: v for k, v in body["spec"].items() if k != field}, field + "x": 1}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(misspelt, SCHEMAS[kind])
    wrong_type = {**body, "spec": {**body["spec"], field: [body["spec"][field]]}}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(wrong_type, SCHEMAS[kind])
