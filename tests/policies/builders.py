"""Stacks for the policy tests, shaped like what keyfence's program declares.

Props are Kubernetes camelCase outputs, wrapped in the SDK's unknown-checking proxy
and with numbers as floats, exactly as ``AnalyzeStack`` hands them to a stack
policy. Helpers return plain dicts first so a test can break one field, then wrap.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from keyfence_policies import labels as L
from keyfence_policies.pack import build_policy, rule_named
from keyfence_policies.permissions import ROLE_ALLOWANCES, WITHDRAWAL_IDS, format_permissions
from pulumi_policy import (
    PolicyCustomTimeouts,
    PolicyResource,
    PolicyResourceOptions,
    StackValidationArgs,
)
from pulumi_policy.proxy import unknown_checking_proxy

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
REPLICASET = "kubernetes:apps/v1:ReplicaSet"
JOB = "kubernetes:batch/v1:Job"
CRONJOB = "kubernetes:batch/v1:CronJob"
POD = "kubernetes:core/v1:Pod"
SECRET = "kubernetes:core/v1:Secret"
NAMESPACE = "kubernetes:core/v1:Namespace"
SERVICE_ACCOUNT = "kubernetes:core/v1:ServiceAccount"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
HPA_V2 = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
HPA_V1 = "kubernetes:autoscaling/v1:HorizontalPodAutoscaler"

Props = dict[str, Any]


class Violation(NamedTuple):
    message: str
    urn: str | None


def urn_of(resource_type: str, name: str) -> str:
    return f"urn:pulumi:dev::keyfence::{resource_type}::{name}"


def wrap(resource_type: str, props: Any, name: str | None = None, *, proxy: bool = True) -> PolicyResource:
    """A ``PolicyResource`` as the SDK builds it for a stack policy."""
    if name is None:
        metadata = props.get("metadata") if isinstance(props, dict) else None
        name = "x"
        if isinstance(metadata, dict):
            name = f"{metadata.get('namespace', 'default')}/{metadata.get('name', 'x')}"
    value = copy.deepcopy(props)
    if proxy and isinstance(value, dict):
        value = unknown_checking_proxy(value)
    opts = PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)
    return PolicyResource(resource_type, value, urn_of(resource_type, name), name, opts, None, None, [], {})


def fingerprint_for(ref: str) -> str:
    return hashlib.sha256(f"CANARYKEY-{ref}".encode()).hexdigest()


@dataclass
class Proc:
    """One trading process as keyfence would declare it."""

    subaccount: str
    name: str
    role: str = "trader"
    venue: str = "futures"
    master: bool = False
    version: int = 3
    allow_withdrawals: bool = False
    permissions: list[str] | None = None
    key_path: str | None = None
    mount: str = "secret"
    fingerprint: str | None = field(default=None)
    image: str = "ghcr.io/acme/bot:1.0.0"

    def __post_init__(self) -> None:
        if self.key_path is None:
            self.key_path = f"kraken/{self.subaccount}/{self.name}"
        if self.fingerprint is None:
            self.fingerprint = fingerprint_for(f"{self.subaccount}/{self.name}")
        if self.permissions is None:
            allowed = ROLE_ALLOWANCES[self.role][self.venue]
            if not (self.master and self.allow_withdrawals and self.role == "treasury"):
                allowed = allowed - WITHDRAWAL_IDS
            self.permissions = sorted(allowed)

    @property
    def secret_name(self) -> str:
        return f"{self.name}-key-v{self.version}"

    @property
    def resource_name(self) -> str:
        return f"{self.subaccount}/{self.name}"


def bool_label(value: bool) -> str:
    return "true" if value else "false"


def labels_for(p: Proc) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": p.name,
        "app.kubernetes.io/instance": f"{p.subaccount}-{p.name}",
        "app.kubernetes.io/component": p.role,
        "app.kubernetes.io/part-of": p.subaccount,
        "app.kubernetes.io/managed-by": L.MANAGED_BY,
        L.SUBACCOUNT: p.subaccount,
        L.PROCESS: p.name,
        L.ROLE: p.role,
        L.VENUE: p.venue,
        L.MASTER: bool_label(p.master),
    }


def annotations_for(p: Proc) -> dict[str, str]:
    out = {
        L.KEY_PATH: p.key_path or "",
        L.VAULT_MOUNT: p.mount,
        L.ALLOW_WITHDRAWALS: bool_label(p.allow_withdrawals),
        L.KEY_VERSION: str(p.version),
        L.PERMISSIONS: format_permissions(p.permissions or ()),
    }
    if p.fingerprint:
        out[L.FINGERPRINT] = p.fingerprint
    return out


def namespace_props(subaccount: str, venue: str = "futures", master: bool = False) -> Props:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": subaccount,
            "labels": {
                L.SUBACCOUNT: subaccount,
                L.VENUE: venue,
                L.MASTER: bool_label(master),
                "app.kubernetes.io/managed-by": L.MANAGED_BY,
                "pod-security.kubernetes.io/enforce": "restricted",
            },
        },
    }


def network_policy_props(subaccount: str) -> Props:
    return {
        "metadata": {"name": "default-deny-ingress", "namespace": subaccount},
        "spec": {"podSelector": {}, "policyTypes": ["Ingress"]},
    }


def service_account_props(p: Proc) -> Props:
    return {
        "metadata": {"name": p.name, "namespace": p.subaccount, "labels": labels_for(p)},
        "automountServiceAccountToken": False,
    }


def secret_props(p: Proc) -> Props:
    labels = {**labels_for(p), L.EXCHANGE_KEY: "true"}
    if p.fingerprint:
        labels[L.FINGERPRINT_LABEL] = p.fingerprint[: L.FINGERPRINT_LABEL_LENGTH]
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": p.secret_name,
            "namespace": p.subaccount,
            "labels": labels,
            "annotations": annotations_for(p),
        },
        "type": "Opaque",
        "immutable": True,
        "stringData": {"api_key": "CANARYKEY-material", "api_secret": "CANARYSECRET-material"},
    }


def container_props(p: Proc) -> Props:
    return {
        "name": p.name,
        "image": p.image,
        "args": ["--strategy", p.subaccount],
        "env": [
            {"name": "LOG_LEVEL", "value": "info"},
            {"name": "KEYFENCE_KEY_DIR", "value": L.KEY_MOUNT_PATH},
            {"name": "KEYFENCE_SUBACCOUNT", "value": p.subaccount},
            {"name": "KEYFENCE_PROCESS", "value": p.name},
            {"name": "KEYFENCE_ROLE", "value": p.role},
            {"name": "KEYFENCE_VENUE", "value": p.venue},
        ],
        "resources": {
            "requests": {"cpu": "100m", "memory": "128Mi"},
            "limits": {"cpu": "1", "memory": "256Mi"},
        },
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "privileged": False,
            "capabilities": {"drop": ["ALL"]},
        },
        "volumeMounts": [
            {"name": "exchange-key", "mountPath": L.KEY_MOUNT_PATH, "readOnly": True},
            {"name": "tmp", "mountPath": "/tmp"},
        ],
    }


def pod_spec_props(p: Proc) -> Props:
    return {
        "serviceAccountName": p.name,
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": 10001.0,
            "runAsGroup": 10001.0,
            "fsGroup": 10001.0,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [container_props(p)],
        "volumes": [
            {
                "name": "exchange-key",
                "secret": {
                    "secretName": p.secret_name,
                    "defaultMode": 256.0,
                    "items": [{"key": f, "path": f} for f in L.KEY_FILES],
                },
            },
            {"name": "tmp", "emptyDir": {"sizeLimit": "64Mi"}},
        ],
    }


def deployment_props(p: Proc) -> Props:
    labels, annotations = labels_for(p), annotations_for(p)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": p.name, "namespace": p.subaccount, "labels": labels, "annotations": annotations},
        "spec": {
            "replicas": 1.0,
            "strategy": {"type": "Recreate"},
            "revisionHistoryLimit": 3.0,
            "selector": {"matchLabels": {L.SUBACCOUNT: p.subaccount, L.PROCESS: p.name}},
            "template": {
                "metadata": {"labels": dict(labels), "annotations": dict(annotations)},
                "spec": pod_spec_props(p),
            },
        },
    }


def process_props(p: Proc) -> list[tuple[str, Props, str]]:
    """(type, raw props, resource name) of a process's ServiceAccount, key Secret and Deployment."""
    return [
        (SERVICE_ACCOUNT, service_account_props(p), p.resource_name),
        (SECRET, secret_props(p), f"{p.resource_name}/key"),
        (DEPLOYMENT, deployment_props(p), p.resource_name),
    ]


def process_resources(p: Proc) -> list[PolicyResource]:
    return [wrap(*item) for item in process_props(p)]


def example_fleet() -> list[Proc]:
    """The processes of examples/fleet.yaml."""
    return [
        Proc("main", "treasury", role="treasury", venue="spot", master=True, allow_withdrawals=True),
        Proc("main", "books", role="accounting", venue="spot", master=True),
        Proc("momentum", "executor", role="trader"),
        Proc("momentum", "risk", role="risk", key_path="kraken/momentum/risk-v2"),
        Proc("momentum", "feed", role="market-data"),
        Proc("basis", "executor", role="trader"),
        Proc("basis", "feed", role="market-data"),
    ]


def clean_stack_props(procs: Iterable[Proc] | None = None) -> list[tuple[str, Props, str]]:
    """Namespaces, NetworkPolicies and per-process resources as raw props, for tests to edit."""
    procs = list(example_fleet() if procs is None else procs)
    out: list[tuple[str, Props, str]] = []
    seen: set[str] = set()
    for p in procs:
        if p.subaccount not in seen:
            seen.add(p.subaccount)
            out.append((NAMESPACE, namespace_props(p.subaccount, p.venue, p.master), p.subaccount))
            out.append(
                (NETWORK_POLICY, network_policy_props(p.subaccount), f"{p.subaccount}/default-deny-ingress")
            )
        out += process_props(p)
    return out


def clean_stack(procs: Iterable[Proc] | None = None) -> list[PolicyResource]:
    """The stack keyfence's program declares for ``procs`` (default: examples/fleet.yaml)."""
    return [wrap(*item) for item in clean_stack_props(procs)]


def deployment_urn(p: Proc) -> str:
    return urn_of(DEPLOYMENT, p.resource_name)


def run(
    policy: str, resources: Iterable[PolicyResource], config: Mapping[str, Any] | None = None
) -> list[Violation]:
    """Run one policy of the pack the way the analyzer does: ``validate(args, report_violation)``."""
    found: list[Violation] = []

    def report(message: str, urn: str | None = None) -> None:
        assert isinstance(message, str) and message
        assert urn is None or isinstance(urn, str)
        found.append(Violation(message, urn))

    policy_object = build_policy(rule_named(policy))
    args = StackValidationArgs(list(resources), dict(config) if config is not None else None)
    assert policy_object.validate(args, report) is None
    return found


def urns(violations: Iterable[Violation]) -> list[str | None]:
    return [v.urn for v in violations]


KIND_TYPES: dict[str, str] = {
    "Deployment": DEPLOYMENT,
    "StatefulSet": STATEFULSET,
    "DaemonSet": DAEMONSET,
    "ReplicaSet": REPLICASET,
    "Job": JOB,
    "CronJob": CRONJOB,
    "Pod": POD,
}


def workload_props(
    kind: str,
    pod_spec: Props,
    *,
    namespace: str | None,
    name: str,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
    **spec: Any,
) -> Props:
    """Any workload kind around a pod spec; ``spec`` adds fields next to the template."""
    metadata: Props = {"name": name, "labels": dict(labels or {}), "annotations": dict(annotations or {})}
    if namespace is not None:
        metadata["namespace"] = namespace
    if kind == "Pod":
        return {"metadata": metadata, "spec": pod_spec}
    template = {
        "metadata": {"labels": dict(labels or {}), "annotations": dict(annotations or {})},
        "spec": pod_spec,
    }
    if kind == "CronJob":
        return {
            "metadata": metadata,
            "spec": {"schedule": "*/5 * * * *", **spec, "jobTemplate": {"spec": {"template": template}}},
        }
    return {"metadata": metadata, "spec": {**spec, "template": template}}


def proc_workload(kind: str, p: Proc, **spec: Any) -> PolicyResource:
    """A keyfence-labelled process run as some other workload kind."""
    props = workload_props(
        kind,
        pod_spec_props(p),
        namespace=p.subaccount,
        name=p.name,
        labels=labels_for(p),
        annotations=annotations_for(p),
        **spec,
    )
    return wrap(KIND_TYPES[kind], props, f"{p.resource_name}-{kind.lower()}")


def bare_pod_spec(container: Props | None = None, volumes: list[Props] | None = None) -> Props:
    """A hand-written pod spec: one container, no keyfence hardening."""
    return {
        "containers": [container or {"name": "app", "image": "ghcr.io/acme/rogue:1.0.0"}],
        "volumes": volumes or [],
    }


def hpa_props(namespace: str, target: str, kind: str = "Deployment", name: str = "scale") -> Props:
    return {
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
            "minReplicas": 1.0,
            "maxReplicas": 3.0,
        },
    }


# ----------------------------------------------------------------------- the fleet as keyfence declares it

PROCESS_COMPONENT = L.PROCESS_COMPONENT
SUBACCOUNT_COMPONENT = L.SUBACCOUNT_COMPONENT
CONFIG_MAP = "kubernetes:core/v1:ConfigMap"
REPLICATION_CONTROLLER = "kubernetes:core/v1:ReplicationController"
ROLLOUT = "kubernetes:argoproj.io/v1alpha1:Rollout"
ROLE = "kubernetes:rbac.authorization.k8s.io/v1:Role"
CLUSTER_ROLE = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRole"
ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:RoleBinding"
CLUSTER_ROLE_BINDING = "kubernetes:rbac.authorization.k8s.io/v1:ClusterRoleBinding"
SECRET_PROVIDER_CLASS = "kubernetes:secrets-store.csi.x-k8s.io/v1:SecretProviderClass"


def material_of(p: Proc) -> tuple[str, str]:
    """The api key and secret whose fingerprints a ``Proc`` carries (test canaries, never real keys)."""
    return f"CANARYKEY-{p.resource_name}", f"CANARYSECRET-{p.resource_name}"


def secret_fingerprint_of(p: Proc) -> str:
    return hashlib.sha256(material_of(p)[1].encode()).hexdigest()


def _opts() -> PolicyResourceOptions:
    return PolicyResourceOptions(False, [], None, [], PolicyCustomTimeouts(0, 0, 0), [], None)


def component(resource_type: str, name: str, parent: PolicyResource | None = None) -> PolicyResource:
    chain = resource_type
    if parent is not None:
        chain = f"{parent.urn.split('::')[2]}${resource_type}"
    urn = f"urn:pulumi:dev::keyfence::{chain}::{name}"
    return PolicyResource(resource_type, {}, urn, name, _opts(), None, parent, [], {})


def child(resource_type: str, props: Any, name: str, parent: PolicyResource) -> PolicyResource:
    """A resource declared under a component, with the URN and parent link the engine gives it."""
    urn = f"urn:pulumi:dev::keyfence::{parent.urn.split('::')[2]}${resource_type}::{name}"
    value = unknown_checking_proxy(copy.deepcopy(props)) if isinstance(props, dict) else props
    return PolicyResource(resource_type, value, urn, name, _opts(), None, parent, [], {})


def fleet_stack(procs: Iterable[Proc] | None = None, *, material: bool = False) -> list[PolicyResource]:
    """The stack as the program declares it: components, parent links, type-chained URNs.

    With ``material`` each key Secret holds its (canary) key, as under ``pulumi up``; otherwise the
    placeholder keyfence check declares.
    """
    procs = list(example_fleet() if procs is None else procs)
    out: list[PolicyResource] = []
    subaccounts: dict[str, PolicyResource] = {}
    for p in procs:
        sub = subaccounts.get(p.subaccount)
        if sub is None:
            sub = subaccounts[p.subaccount] = component(SUBACCOUNT_COMPONENT, p.subaccount)
            out += [
                sub,
                child(NAMESPACE, namespace_props(p.subaccount, p.venue, p.master), p.subaccount, sub),
                child(
                    NETWORK_POLICY,
                    network_policy_props(p.subaccount),
                    f"{p.subaccount}/default-deny-ingress",
                    sub,
                ),
            ]
        process = component(PROCESS_COMPONENT, p.resource_name, sub)
        secret = secret_props(p)
        api_key, api_secret = material_of(p)
        secret["stringData"] = (
            {"api_key": api_key, "api_secret": api_secret}
            if material
            else dict.fromkeys(L.KEY_FILES, L.MATERIAL_PLACEHOLDER)
        )
        out += [
            process,
            child(SERVICE_ACCOUNT, service_account_props(p), p.resource_name, process),
            child(SECRET, secret, f"{p.resource_name}/key", process),
            child(DEPLOYMENT, deployment_props(p), p.resource_name, process),
        ]
    return out


def fleet_urn(resource_type: str, p: Proc, suffix: str = "") -> str:
    chain = f"{SUBACCOUNT_COMPONENT}${PROCESS_COMPONENT}${resource_type}"
    return f"urn:pulumi:dev::keyfence::{chain}::{p.resource_name}{suffix}"


def known_keys(procs: Iterable[Proc], *, vault: bool = True, secrets: bool = True) -> dict[str, Any]:
    """The pack config keyfence check passes: the facts of each process's key (Vault's, or the spec's)."""
    entries = []
    for p in procs:
        entry: dict[str, Any] = {
            "mount": p.mount,
            "path": p.key_path,
            "subaccount": p.subaccount,
            "venue": p.venue,
            "process": p.resource_name,
            "namespace": p.subaccount,
            "master": p.master,
            "permissions": list(p.permissions or []),
        }
        if vault:
            entry["fingerprint"] = p.fingerprint
            if secrets:
                entry["secretFingerprint"] = secret_fingerprint_of(p)
        entries.append(entry)
    return {"knownKeys": entries, "vaultVerified": vault, "keyPrefixes": ["secret/kraken"]}


def plain_deployment(namespace: str, name: str, pod_spec: Props, **metadata: Any) -> PolicyResource:
    """A hand-written Deployment with no keyfence labels: replicas 1, Recreate."""
    props = workload_props("Deployment", pod_spec, namespace=namespace, name=name, replicas=1.0, **metadata)
    props["spec"]["strategy"] = {"type": "Recreate"}
    return wrap(DEPLOYMENT, props, f"hand/{name}")
