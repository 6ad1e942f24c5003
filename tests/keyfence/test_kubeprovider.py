"""The Kubernetes provider's Check and manifest handling, as ``keyfence check`` models them.

Each rule cites where the provider does it (pulumi-kubernetes, provider/pkg/...): these are
the parts of a registration a real ``pulumi preview`` changes before the pack sees it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from google.protobuf import struct_pb2

from keyfence.check.kubeprovider import (
    AUTONAMED_ANNOTATION,
    MANAGED_BY_LABEL,
    UNKNOWN,
    KubeProviderConfig,
    ProviderRefusal,
    autoname,
    check,
    is_namespaced,
    python_to_struct,
    secret,
    struct_to_python,
    type_token,
)
from keyfence.check.kubeyaml import children, decode, expand_files, normalize, read_manifest

URN = "urn:pulumi:dev::keyfence::kubernetes:apps/v1:Deployment::app"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def checked(props: dict[str, Any], config: KubeProviderConfig, type_: str = DEPLOYMENT) -> dict[str, Any]:
    return struct_to_python(
        check(python_to_struct(props), type_token_=type_, urn=URN, config=config, crds={})
    )


# --------------------------------------------------------------------------- Check (provider.go)


def test_a_namespaced_kind_without_namespace_gets_the_providers_namespace() -> None:
    out = checked({"metadata": {"name": "app"}}, KubeProviderConfig(namespace="momentum"))
    assert out["metadata"]["namespace"] == "momentum"


def test_an_explicit_namespace_is_kept() -> None:
    out = checked(
        {"metadata": {"name": "app", "namespace": "basis"}}, KubeProviderConfig(namespace="momentum")
    )
    assert out["metadata"]["namespace"] == "basis"


def test_without_a_namespace_option_the_namespace_is_unknown() -> None:
    # Configure: no `namespace` option -> the deploying machine's kubeconfig context decides.
    out = checked({"metadata": {"name": "app"}}, KubeProviderConfig(namespace=None))
    assert out["metadata"]["namespace"] == UNKNOWN


@pytest.mark.parametrize(
    "kind", ["Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"]
)
def test_cluster_scoped_kinds_get_no_namespace(kind: str) -> None:
    # kinds.go, Kind.Namespaced: these are known cluster-scoped.
    type_ = f"kubernetes:rbac.authorization.k8s.io/v1:{kind}"
    out = checked({"metadata": {"name": "x"}}, KubeProviderConfig(namespace="momentum"), type_)
    assert "namespace" not in out["metadata"]


def test_an_unclassifiable_kind_is_treated_as_namespaced_unless_a_crd_says_otherwise() -> None:
    # Check: NoNamespaceInfoErr -> "assume it is namespaced".
    assert is_namespaced("keda.sh/v1alpha1", "ScaledObject", {}) is None
    out = checked(
        {"metadata": {"name": "x"}}, KubeProviderConfig(namespace="m"), "kubernetes:keda.sh/v1alpha1:X"
    )
    assert out["metadata"]["namespace"] == "m"
    assert is_namespaced("acme.io/v1", "Thing", {("acme.io", "Thing"): "Cluster"}) is False


def test_a_resource_without_a_name_is_autonamed_and_annotated() -> None:
    # metadata/naming.go, AssignNameIfAutonamable: <urn name>-<random>, annotation pulumi.com/autonamed.
    out = checked({"spec": {}}, KubeProviderConfig(namespace="m"))
    assert out["metadata"]["name"] == autoname(URN)
    assert out["metadata"]["name"].startswith("app-") and len(out["metadata"]["name"]) == len("app-") + 8
    assert out["metadata"]["annotations"][AUTONAMED_ANNOTATION] == "true"


def test_generate_name_is_refused_in_server_side_apply_mode() -> None:
    with pytest.raises(ProviderRefusal, match="generateName"):
        checked({"metadata": {"generateName": "app-"}}, KubeProviderConfig(namespace="m"))


def test_client_side_apply_sets_the_managed_by_label() -> None:
    # Check: TrySetManagedByLabel when Server-Side Apply is off (it overwrites the label).
    props = {"metadata": {"name": "a", "labels": {MANAGED_BY_LABEL: "keyfence"}}}
    out = checked(props, KubeProviderConfig(namespace="m", server_side_apply=False))
    assert out["metadata"]["labels"][MANAGED_BY_LABEL] == "pulumi"
    assert (
        checked(props, KubeProviderConfig(namespace="m"))["metadata"]["labels"][MANAGED_BY_LABEL]
        == "keyfence"
    )


def test_read_only_metadata_is_dropped_and_secret_metadata_is_filled_inside_the_secret() -> None:
    out = checked(
        {"metadata": {"name": "a", "namespace": "n", "uid": "1", "resourceVersion": "9"}},
        KubeProviderConfig(),
    )
    assert out["metadata"] == {"name": "a", "namespace": "n"}
    wrapped = checked({"metadata": secret({"name": "a"})}, KubeProviderConfig(namespace="m"))
    assert wrapped["metadata"]["value"] == {"name": "a", "namespace": "m"}


def test_patch_resources_need_server_side_apply_and_a_name() -> None:
    patch = "kubernetes:apps/v1:DeploymentPatch"
    with pytest.raises(ProviderRefusal, match="Server-Side Apply"):
        checked({"metadata": {"name": "a"}}, KubeProviderConfig(server_side_apply=False), patch)
    with pytest.raises(ProviderRefusal, match=r"metadata\.name"):
        checked({"metadata": {}}, KubeProviderConfig(), patch)


def test_nothing_to_change_returns_the_same_struct() -> None:
    props = python_to_struct({"metadata": {"name": "a", "namespace": "n"}})
    assert check(props, type_token_=DEPLOYMENT, urn=URN, config=KubeProviderConfig(), crds={}) is props


def test_provider_options_are_read_like_configure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PULUMI_K8S_ENABLE_SERVER_SIDE_APPLY", raising=False)
    assert KubeProviderConfig.from_inputs({}, "p").server_side_apply is True
    assert KubeProviderConfig.from_inputs({"enableServerSideApply": "false"}, "p").server_side_apply is False
    monkeypatch.setenv("PULUMI_K8S_ENABLE_SERVER_SIDE_APPLY", "false")
    assert KubeProviderConfig.from_inputs({}, "p").server_side_apply is False
    assert KubeProviderConfig.from_inputs({"namespace": secret("momentum")}, "p").namespace == "momentum"
    with pytest.raises(ProviderRefusal, match="not known"):
        KubeProviderConfig.from_inputs({"namespace": UNKNOWN}, "p")


# --------------------------------------------------------------------------- manifests (yaml/v2/yaml.go)


def test_decode_skips_empty_documents_and_refuses_non_objects() -> None:
    assert decode("---\n---\na: 1\n---\n{}\n", "m") == [{"a": 1}]
    with pytest.raises(ProviderRefusal, match="not a mapping"):
        decode("- 1\n", "m")
    with pytest.raises(ProviderRefusal, match="invalid YAML"):
        decode("a: [", "m")


def test_normalize_expands_lists_requires_names_and_applies_the_namespace() -> None:
    objs = [
        {
            "apiVersion": "v1",
            "kind": "List",
            "items": [{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}],
        },
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r"}},
    ]
    out = normalize(objs, "momentum", {}, "m")
    assert [o["kind"] for o in out] == ["Secret", "ClusterRole"]
    assert out[0]["metadata"]["namespace"] == "momentum" and "namespace" not in out[1]["metadata"]
    with pytest.raises(ProviderRefusal, match=r"metadata\.name"):
        normalize([{"apiVersion": "v1", "kind": "Secret", "metadata": {}}], "m", {}, "m")
    with pytest.raises(ProviderRefusal, match="kubeconfig"):
        normalize([{"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}}], None, {}, "m")


def test_unresolved_custom_kinds_keep_no_namespace_in_manifests() -> None:
    # Normalize: scope unknown offline -> left unset ("rendered without a namespace").
    obj = {"apiVersion": "acme.io/v1", "kind": "Thing", "metadata": {"name": "t"}}
    assert "namespace" not in normalize([obj], "momentum", {}, "m")[0]["metadata"]


def test_children_are_named_typed_ordered_and_secret_data_is_wrapped() -> None:
    objs = [
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "s", "namespace": "n"},
            "data": {"k": "dg=="},
        },
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "n"}},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d", "namespace": "n"}},
    ]
    out = children(objs, "pre", skip_await=True, source="m")
    assert [(c.type, c.name) for c in out] == [
        ("kubernetes:core/v1:Namespace", "pre:n"),
        ("kubernetes:core/v1:Secret", "pre:n/s"),
        ("kubernetes:apps/v1:Deployment", "pre:n/d"),
    ]
    assert out[1].depends_on == [0] and out[2].depends_on == [0]
    assert out[1].inputs["data"] == secret({"k": "dg=="})
    assert out[2].inputs["metadata"]["annotations"]["pulumi.com/skipAwait"] == "true"
    assert type_token("keda.sh/v1alpha1", "ScaledObject") == "kubernetes:keda.sh/v1alpha1:ScaledObject"


def test_depends_on_annotations_order_children() -> None:
    first = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a", "namespace": "n"}}
    dependent = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": "b",
            "namespace": "n",
            "annotations": {"config.kubernetes.io/depends-on": "/namespaces/n/ConfigMap/a"},
        },
    }
    assert [c.name for c in children([dependent, first], "", skip_await=False, source="m")] == ["n/a", "n/b"]


def test_manifests_are_local_files_never_urls(tmp_path: Path) -> None:
    with pytest.raises(ProviderRefusal, match="URL"):
        read_manifest("https://example.com/app.yaml", tmp_path)
    (tmp_path / "b.yaml").write_text("x: 1\n")
    (tmp_path / "a.yaml").write_text("x: 2\n")
    assert expand_files(["*.yaml"], tmp_path, globbing=True) == [
        str(tmp_path / "a.yaml"),
        str(tmp_path / "b.yaml"),
    ]
    assert expand_files(["*.yaml"], tmp_path, globbing=False) == ["*.yaml"]


def test_struct_round_trip_keeps_integers() -> None:
    struct = struct_pb2.Struct()
    struct.update({"replicas": 3, "ratio": 0.5})
    assert struct_to_python(struct) == {"replicas": 3, "ratio": 0.5}
