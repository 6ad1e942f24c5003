"""What the Kubernetes provider does to a registration before a policy pack sees it.

A policy pack judges a resource's inputs *after* its provider's ``Check`` (the engine sends
``Analyze`` the checked inputs: pulumi ``pkg/resource/deploy/step_generator.go``,
``generateSteps``). For Kubernetes that step changes inputs the keyfence pack reads, so
``keyfence check`` applies the same changes here, each modelled on pulumi-kubernetes
``provider/pkg/provider/provider.go`` (``Configure``, ``Check``) and ``provider/pkg/kinds``:

- ``metadata.namespace``: a namespaced kind without one gets the provider's default
  namespace: its ``namespace`` option, otherwise the current context of the kubeconfig on
  the machine that deploys. That kubeconfig is not the check's to read, so without a
  ``namespace`` option the namespace is *unknown* (the pack then cannot evaluate it).
  Cluster-scoped kinds are left alone; kinds the provider cannot classify offline are
  treated as namespaced, as the provider does.
- ``metadata.name``: a resource without one (and without ``generateName``) is auto-named
  ``<name>-<8 hex>`` and annotated ``pulumi.com/autonamed: "true"``. The suffix is random
  in a real preview; here it is derived from the URN so that runs are reproducible.
- ``app.kubernetes.io/managed-by: pulumi`` is set when Server-Side Apply is off.
- read-only metadata fields (``uid``, ``resourceVersion`` ...) are dropped.

Not modelled (they do not change a field the keyfence pack reads): the typed round trip
that drops unknown fields, a Secret's ``stringData`` merged into ``data``, OpenAPI
validation against a live cluster.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from google.protobuf import struct_pb2
from pulumi.runtime import rpc

KUBERNETES: Final = "kubernetes"
PROVIDER_TYPE: Final = "pulumi:providers:kubernetes"
AUTONAMED_ANNOTATION: Final = "pulumi.com/autonamed"
MANAGED_BY_LABEL: Final = "app.kubernetes.io/managed-by"
READ_ONLY_METADATA: Final = (
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "generation",
    "managedFields",
    "resourceVersion",
    "uid",
)
UNKNOWN: Final = rpc.UNKNOWN
SIG: Final = rpc._special_sig_key
SECRET_SIG: Final = rpc._special_secret_sig
OUTPUT_SIG: Final = rpc._special_output_value_sig

# pulumi-kubernetes provider/pkg/kinds/kinds.go: Kind.Namespaced()
NAMESPACED_KINDS: Final = frozenset(
    [
        "Binding",
        "ConfigMap",
        "ControllerRevision",
        "CronJob",
        "CSIStorageCapacity",
        "DaemonSet",
        "Deployment",
        "Endpoints",
        "EndpointSlice",
        "Event",
        "HorizontalPodAutoscaler",
        "Ingress",
        "Job",
        "Lease",
        "LimitRange",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "Pod",
        "PodDisruptionBudget",
        "PodTemplate",
        "ReplicaSet",
        "ReplicationController",
        "ResourceQuota",
        "Role",
        "RoleBinding",
        "Secret",
        "Service",
        "ServiceAccount",
        "StatefulSet",
    ]
)
CLUSTER_KINDS: Final = frozenset(
    [
        "APIService",
        "CertificateSigningRequest",
        "ClusterRole",
        "ClusterRoleBinding",
        "CSIDriver",
        "CSINode",
        "CustomResourceDefinition",
        "FlowSchema",
        "IngressClass",
        "MutatingWebhookConfiguration",
        "Namespace",
        "Node",
        "PersistentVolume",
        "PodSecurityPolicy",
        "PriorityClass",
        "PriorityLevelConfiguration",
        "RuntimeClass",
        "StorageClass",
        "ValidatingWebhookConfiguration",
        "VolumeAttachment",
    ]
)


class ProviderRefusal(Exception):
    """Something the provider would do that the hermetic check cannot reproduce: exit 2."""


# --------------------------------------------------------------------------- provider configuration


@dataclass(frozen=True)
class KubeProviderConfig:
    """The provider options that change inputs a pack reads (``Configure`` in provider.go).

    ``namespace`` is ``None`` when the default namespace would come from the deploying
    machine's kubeconfig, which the check cannot see.
    """

    namespace: str | None = None
    server_side_apply: bool = True
    render_to_directory: bool = False
    managed_by: str = "pulumi"

    @classmethod
    def from_inputs(cls, inputs: Mapping[str, Any], where: str) -> KubeProviderConfig:
        """Read the options from a provider's inputs (``kubernetes:config:<option>`` in Configure)."""
        namespace = _config_text(inputs, "namespace", where)
        return cls(
            namespace=namespace or None,
            server_side_apply=_config_flag(
                inputs, "enableServerSideApply", "PULUMI_K8S_ENABLE_SERVER_SIDE_APPLY"
            ),
            render_to_directory=bool(_config_text(inputs, "renderYamlToDirectory", where)),
            managed_by=os.environ.get("PULUMI_KUBERNETES_MANAGED_BY_LABEL", "pulumi"),
        )


def _config_text(inputs: Mapping[str, Any], key: str, where: str) -> str | None:
    value = plain(inputs.get(key), f"{where}: provider option {key}")
    if value is None or isinstance(value, str):
        return value
    raise ProviderRefusal(f"{where}: provider option {key} is {type(value).__name__}, expected a string")


def _config_flag(inputs: Mapping[str, Any], key: str, env: str) -> bool:
    """A boolean option: the option wins, else the environment variable, else on (provider.go)."""
    value = plain(inputs.get(key), f"provider option {key}")
    if value is None:
        raw = os.environ.get(env)
        return True if raw is None else raw == "true"
    return value is True or value == "true"


# --------------------------------------------------------------------------- plain values


class UnknownValue(ProviderRefusal):
    """A value that is not known during a preview (computed from another resource)."""


def plain(value: Any, what: str) -> Any:
    """A deserialised property value with secrets unwrapped; raises UnknownValue on unknowns."""
    if isinstance(value, str) and value == UNKNOWN:
        raise UnknownValue(f"{what} is not known during a preview")
    if isinstance(value, dict):
        sig = value.get(SIG)
        if sig == SECRET_SIG:
            return plain(value.get("value"), what)
        if sig == OUTPUT_SIG:
            if "value" not in value:
                raise UnknownValue(f"{what} is not known during a preview")
            return plain(value["value"], what)
        return {k: plain(v, f"{what}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v, f"{what}[{i}]") for i, v in enumerate(value)]
    return value


def struct_to_python(struct: struct_pb2.Struct) -> dict[str, Any]:
    """A Struct as plain Python values, special signatures kept as dicts (no event loop needed)."""
    return {k: _value_to_python(v) for k, v in struct.fields.items()}


def _value_to_python(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "struct_value":
        return struct_to_python(value.struct_value)
    if kind == "list_value":
        return [_value_to_python(v) for v in value.list_value.values]
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "string_value":
        return value.string_value
    if kind == "bool_value":
        return value.bool_value
    return None


def python_to_struct(value: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(value)
    return struct


def secret(value: Any) -> dict[str, Any]:
    return {SIG: SECRET_SIG, "value": value}


# --------------------------------------------------------------------------- kinds and types


def split_type(type_token: str) -> tuple[str, str] | None:
    """``kubernetes:apps/v1:Deployment`` -> (``apps/v1``, ``Deployment``); core is ``v1``."""
    parts = type_token.split(":")
    if len(parts) != 3 or parts[0] != KUBERNETES:
        return None
    group_version = parts[1]
    if group_version.startswith("core/"):
        group_version = group_version[len("core/") :]
    return group_version, parts[2]


def type_token(api_version: str, kind: str) -> str:
    """The Pulumi type a manifest object registers as (yaml/v2 ``RegisterResource``)."""
    if "/" not in api_version:
        api_version = f"core/{api_version}"
    return f"{KUBERNETES}:{api_version}:{kind}"


def group_of(api_version: str) -> str:
    group, _, _ = api_version.rpartition("/")
    return "" if group == "core" else group


def is_namespaced(api_version: str, kind: str, crds: Mapping[tuple[str, str], str]) -> bool | None:
    """Whether a kind is namespaced (clients.IsNamespacedKind); ``None`` when not known offline."""
    base = kind.removesuffix("Patch")
    if base in NAMESPACED_KINDS:
        return True
    if base in CLUSTER_KINDS:
        return False
    scope = crds.get((group_of(api_version), kind))
    if scope is not None:
        return scope == "Namespaced"
    return None


def crd_scope(obj: Mapping[str, Any]) -> tuple[tuple[str, str], str] | None:
    """(group, kind) and scope of a CustomResourceDefinition object, if it is one."""
    if obj.get("kind") != "CustomResourceDefinition":
        return None
    spec = obj.get("spec")
    if not isinstance(spec, Mapping):
        return None
    names = spec.get("names")
    group, scope = spec.get("group"), spec.get("scope")
    kind = names.get("kind") if isinstance(names, Mapping) else None
    if isinstance(group, str) and isinstance(kind, str) and isinstance(scope, str):
        return (group, kind), scope
    return None


# --------------------------------------------------------------------------- Check


def _unwrap(value: struct_pb2.Value) -> struct_pb2.Value:
    """The value inside a secret wrapper (the provider checks secrets' plain values)."""
    if value.WhichOneof("kind") == "struct_value":
        fields = value.struct_value.fields
        if SIG in fields and fields[SIG].string_value == SECRET_SIG and "value" in fields:
            return _unwrap(fields["value"])
    return value


def _text(struct: struct_pb2.Struct, key: str) -> str | None:
    """A string field (secret-unwrapped): ``""`` for absent or null, the unknown sentinel kept."""
    if key not in struct.fields:
        return ""
    value = _unwrap(struct.fields[key])
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind in (None, "null_value"):
        return ""
    return None


def _object(struct: struct_pb2.Struct, key: str) -> struct_pb2.Struct | None:
    if key not in struct.fields:
        return None
    value = _unwrap(struct.fields[key])
    return value.struct_value if value.WhichOneof("kind") == "struct_value" else None


def autoname(urn: str) -> str:
    """``<name>-<8 hex>``: the shape of resource.NewUniqueName, seeded from the URN here."""
    name = urn.rsplit("::", 1)[-1]
    return f"{name}-{hashlib.sha256(urn.encode()).hexdigest()[:8]}"


def check(
    props: struct_pb2.Struct,
    *,
    type_token_: str,
    urn: str,
    config: KubeProviderConfig,
    crds: Mapping[tuple[str, str], str],
) -> struct_pb2.Struct:
    """The checked inputs of a new Kubernetes resource; ``props`` itself when nothing changes."""
    split = split_type(type_token_)
    if split is None:
        return props
    api_version, kind = split
    if kind.endswith("Patch") and not config.server_side_apply:
        raise ProviderRefusal(f"{urn}: patch resources require Server-Side Apply (enableServerSideApply)")
    metadata = _object(props, "metadata")
    name = _text(metadata, "name") if metadata is not None else ""
    generate_name = _text(metadata, "generateName") if metadata is not None else ""
    namespace = _text(metadata, "namespace") if metadata is not None else ""
    if kind.endswith("Patch") and not name:
        raise ProviderRefusal(f"{urn}: patch resources require the .metadata.name field to be set")
    if generate_name and not name and (config.server_side_apply or config.render_to_directory):
        raise ProviderRefusal(f"{urn}: .metadata.generateName is not supported in Server-Side Apply mode")
    wants_name = name == "" and not generate_name
    wants_label = not config.server_side_apply
    wants_namespace = namespace == "" and is_namespaced(api_version, kind, crds) is not False
    read_only = metadata is not None and any(f in metadata.fields for f in READ_ONLY_METADATA)
    if not (wants_name or wants_label or wants_namespace or read_only):
        return props
    if (
        metadata is None
        and "metadata" in props.fields
        and props.fields["metadata"].WhichOneof("kind")
        not in (
            None,
            "null_value",
        )
    ):
        # metadata is unknown or not an object: the provider cannot fill it in either.
        return props
    checked = struct_pb2.Struct()
    checked.CopyFrom(props)
    target = _writable_metadata(checked)
    for field_name in READ_ONLY_METADATA:
        if field_name in target.fields:
            del target.fields[field_name]
    if wants_name:
        target.fields["name"].string_value = autoname(urn)
        _set_map_entry(target, "annotations", AUTONAMED_ANNOTATION, "true")
    if wants_label:
        _set_map_entry(target, "labels", MANAGED_BY_LABEL, config.managed_by)
    if wants_namespace:
        target.fields["namespace"].string_value = config.namespace if config.namespace else UNKNOWN
    return checked


def _writable_metadata(props: struct_pb2.Struct) -> struct_pb2.Struct:
    value = props.fields["metadata"]
    while value.WhichOneof("kind") == "struct_value":
        fields = value.struct_value.fields
        if SIG in fields and fields[SIG].string_value == SECRET_SIG and "value" in fields:
            value = fields["value"]
            continue
        return value.struct_value
    value.struct_value.SetInParent()
    return value.struct_value


def _set_map_entry(metadata: struct_pb2.Struct, field_name: str, key: str, text: str) -> None:
    value = metadata.fields[field_name]
    if value.WhichOneof("kind") != "struct_value":
        value.struct_value.SetInParent()
    target = value.struct_value
    inner = target.fields.get(SIG)
    if inner is not None and inner.string_value == SECRET_SIG and "value" in target.fields:
        target = target.fields["value"].struct_value
    target.fields[key].string_value = text
