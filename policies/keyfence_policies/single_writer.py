"""``single-writer-per-key``: a key-bearing workload never runs two pods at once.

One Deployment per key is not enough: two replicas, a rolling update (new pod up
before the old one stops), a DaemonSet pod per node, parallel or overlapping Jobs,
or an autoscaler all put two signers on one nonce sequence. This policy bounds every
key-bearing workload to a single live pod.
"""

from __future__ import annotations

from collections.abc import Iterator

from .config import REQUIRE_STATEFULSET, PackConfig
from .identity import describe_key
from .props import Node
from .rule import MAX_NAMED, Finding, Rule, each_key_bearing, named
from .workloads import StackIndex, Workload

NAME = "single-writer-per-key"

_WHY_NOT: dict[str, str] = {
    "DaemonSet": "it runs one pod per node",
    "Job": "it may run parallel pods and retries",
    "CronJob": "it starts a Job per schedule and runs them concurrently by default",
}
_NONCE = "two pods on one key interleave nonces ('EAPI:Invalid nonce')"


def _at_most_one(workload: Workload, node: Node, field: str, key: str) -> Finding | None:
    """A replica/parallelism count that must be absent (1) or at most 1."""
    value = node.count()
    if value is None or value <= 1:
        return None
    return Finding(
        f"{workload.ref} holds {key} but sets {field}: {value}; {_NONCE}. Set {field}: 1; to scale, add "
        "another process with its own key.",
        workload.urn,
    )


def _deployment(workload: Workload, key: str) -> Iterator[Finding]:
    spec = workload.node.get("spec")
    found = _at_most_one(workload, spec.get("replicas"), "spec.replicas", key)
    if found is not None:
        yield found
    strategy = spec.dig("strategy", "type")
    kind = strategy.text()
    if kind == "Recreate":
        return
    if strategy.absent:
        said = "has no spec.strategy.type, so Kubernetes uses RollingUpdate"
    elif kind is None:
        return  # unreadable: reported by cannot_evaluate
    else:
        said = f"uses spec.strategy.type {kind}"
    yield Finding(
        f"{workload.ref} holds {key} but {said}, which starts the new pod while the old one still runs: "
        f"during every rollout {_NONCE}. Set spec.strategy.type: Recreate.",
        workload.urn,
    )


def _cronjob(workload: Workload, key: str) -> Iterator[Finding]:
    spec = workload.node.get("spec")
    policy = spec.get("concurrencyPolicy")
    value = policy.text()
    if value != "Forbid" and (value is not None or policy.absent):
        yield Finding(
            f"{workload.ref} holds {key} but its spec.concurrencyPolicy is "
            f"{value or 'Allow (the default)'}: overlapping runs mean {_NONCE}. Set spec.concurrencyPolicy: "
            "Forbid.",
            workload.urn,
        )
    found = _at_most_one(
        workload, spec.dig("jobTemplate", "spec", "parallelism"), "spec.jobTemplate.spec.parallelism", key
    )
    if found is not None:
        yield found


def _workload_findings(workload: Workload, config: PackConfig) -> Iterator[Finding]:
    key = describe_key(workload, config)
    kind = workload.kind
    if kind not in config.key_bearing_kinds:
        allowed = ", ".join(sorted(config.key_bearing_kinds)) or "none"
        why = f"{_WHY_NOT[kind]}, so {_NONCE}" if kind in _WHY_NOT else "it is not in keyBearingKinds"
        yield Finding(
            f"{workload.ref} holds {key} but a {kind} may not hold an exchange key ({why}). Kinds allowed to "
            f"hold a key: {allowed}. Run the process as a Deployment with replicas: 1 and strategy Recreate, "
            f"or add {kind} to keyBearingKinds only if you guarantee a single pod.",
            workload.urn,
        )
        return
    if config.require_statefulset and kind != "StatefulSet":
        yield Finding(
            f"{workload.ref} holds {key} but is a {kind}, and {REQUIRE_STATEFULSET} is set: when a "
            f"{kind}'s pod is deleted, evicted or drained its replacement may start while the old pod is "
            f"still terminating, so for up to its grace period {_NONCE}. Run it as a StatefulSet with "
            "replicas: 1 (keyfence: workload: statefulset).",
            workload.urn,
        )
    spec = workload.node.get("spec")
    if kind == "Deployment":
        yield from _deployment(workload, key)
    elif kind in ("StatefulSet", "ReplicaSet"):
        found = _at_most_one(workload, spec.get("replicas"), "spec.replicas", key)
        if found is not None:
            yield found
    elif kind == "Job":
        found = _at_most_one(workload, spec.get("parallelism"), "spec.parallelism", key)
        if found is not None:
            yield found
    elif kind == "CronJob":
        yield from _cronjob(workload, key)


def _scaler_findings(index: StackIndex, config: PackConfig) -> Iterator[Finding]:
    for scaler in index.scalers:
        if scaler.problems:
            problems = "; ".join(scaler.problems.as_list()[:MAX_NAMED])
            yield Finding(
                f"{scaler.ref}: cannot evaluate {NAME}: {problems}. The check fails closed: it cannot tell "
                "whether this autoscaler targets a workload that holds an exchange key.",
                scaler.urn,
            )
            continue
        if scaler.target_kind is None or scaler.target_name is None:
            continue
        for target in index.lookup(scaler.target_kind, scaler.namespace, scaler.target_name):
            if not target.key_bearing:
                continue
            yield Finding(
                f"{scaler.ref} scales {named(target.ref, target.urn)}, which holds "
                f"{describe_key(target, config)}: any second replica means {_NONCE}. Remove the autoscaler; "
                "to add capacity, add another process with its own key.",
                scaler.urn,
            )


def check(index: StackIndex, config: PackConfig) -> Iterator[Finding]:
    """Report key-bearing workloads that can run more than one pod, and autoscalers on them."""
    yield from each_key_bearing(index, NAME, lambda workload: _workload_findings(workload, config))
    yield from _scaler_findings(index, config)


RULE = Rule(
    name=NAME,
    description="A workload holding an exchange key runs at most one pod at any time: replicas <= 1, "
    "Recreate rollouts for a Deployment, no DaemonSet/Job/CronJob, no autoscaler; optionally "
    "StatefulSets only.",
    level="mandatory",
    check=check,
    remediation="Deploy each key-bearing process as a Deployment with replicas: 1 and strategy Recreate, "
    "or a StatefulSet with replicas: 1, and scale by adding processes (each with its own key), never "
    "replicas.",
    flags=(REQUIRE_STATEFULSET,),
)
