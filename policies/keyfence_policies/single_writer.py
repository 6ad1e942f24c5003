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
from .podspec import PodSpec
from .props import Node
from .rule import MAX_NAMED, Finding, Rule, each_key_bearing, named
from .workloads import AGENT_CONTAINERS, StackIndex, Workload

NAME = "single-writer-per-key"

_WHY_NOT: dict[str, str] = {
    "DaemonSet": "it runs one pod per node",
    "Job": "it may run parallel pods and retries",
    "CronJob": "it starts a Job per schedule and runs them concurrently by default",
    "Rollout": "its canary and blue-green rollouts run new pods beside the old ones",
    "ScaledJob": "KEDA starts a Job per event, in parallel",
    "PodTemplate": "other controllers stamp pods out of it, as many as they like",
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


def _rollout(workload: Workload, key: str) -> Iterator[Finding]:
    spec = workload.node.get("spec")
    found = _at_most_one(workload, spec.get("replicas"), "spec.replicas", key)
    if found is not None:
        yield found
    strategy = spec.get("strategy")
    canary = strategy.get("canary")
    surge = canary.get("maxSurge").value
    if not canary.absent and (surge in (0, 0.0, "0", "0%")):
        return
    said = "a blue-green strategy" if not strategy.get("blueGreen").absent else "a canary strategy with surge"
    if canary.absent and strategy.get("blueGreen").absent:
        said = "no strategy keyfence can prove safe"
    yield Finding(
        f"{workload.ref} holds {key} but uses {said}: Argo Rollouts start the new pods before the old ones "
        f"stop, so during every rollout {_NONCE}. Use a Deployment with strategy Recreate, or a canary "
        "with maxSurge: 0.",
        workload.urn,
    )


def _scaled_job(workload: Workload, key: str) -> Iterator[Finding]:
    spec = workload.node.get("spec")
    count = spec.get("maxReplicaCount")
    if count.absent:
        yield Finding(
            f"{workload.ref} holds {key} but sets no spec.maxReplicaCount, so KEDA may run 100 Jobs at once: "
            f"{_NONCE}. Set spec.maxReplicaCount: 1.",
            workload.urn,
        )
    else:
        found = _at_most_one(workload, count, "spec.maxReplicaCount", key)
        if found is not None:
            yield found
    found = _at_most_one(
        workload, spec.dig("jobTargetRef", "parallelism"), "spec.jobTargetRef.parallelism", key
    )
    if found is not None:
        yield found


def _unknown_kind(workload: Workload, key: str, config: PackConfig) -> Iterator[Finding]:
    rtype = workload.obj.rtype
    qualified = rtype.qualified if rtype is not None else workload.kind
    shown = f"{workload.kind} ({rtype.group})" if rtype is not None else workload.kind
    if qualified in config.key_bearing_kinds:
        found = _at_most_one(workload, workload.node.dig("spec", "replicas"), "spec.replicas", key)
        if found is not None:
            yield found
        return
    yield Finding(
        f"{workload.ref} holds {key}, but keyfence cannot prove one pod at a time for a {shown}: it does "
        f"not know how this kind starts, scales or updates its pods, and {_NONCE}. Run the process as a "
        f"Deployment with replicas: 1 and strategy Recreate, or add {qualified} to keyBearingKinds only "
        "if it never runs two pods at once.",
        workload.urn,
    )


def accessing_containers(workload: Workload, pod: PodSpec) -> dict[str, list[str]]:
    """The containers of a pod that can read a key, each with how (for one-signer-per-pod)."""
    keyed = {(c.kind, c.name) for c in workload.carriers}
    volumes = {
        volume: refs
        for volume, refs in pod.volume_sources.items()
        if any((r.source, r.secret) in keyed for r in refs)
    }
    injected = [h for h in workload.holdings if h.injected]
    only = {n.strip() for n in pod.annotations.get(AGENT_CONTAINERS, "").split(",") if n.strip()}
    out: dict[str, list[str]] = {}
    for container in pod.containers:
        how = [f'volume "{v}"' for v in sorted(container.mounts & set(volumes))]
        how += [r.via for r in container.refs if (r.source, r.secret) in keyed]
        how += [
            f"its {h.hit.where.rsplit('.', 1)[-1]}" for h in workload.holdings if h.container is container
        ]
        if injected and (not only or container.name in only) and container.role != "init container":
            how.append("the Vault Agent injector")
        if how:
            out[container.ref] = how
    return out


def _one_signer_per_pod(workload: Workload, key: str) -> Iterator[Finding]:
    for pod in workload.pods:
        reaching = accessing_containers(workload, pod)
        if len(reaching) < 2:
            continue
        listed = "; ".join(f"{name} (via {', '.join(how)})" for name, how in reaching.items())
        yield Finding(
            f"{workload.ref} gives {key} to {len(reaching)} containers of one pod: {listed}. Every container "
            "that can read the key can sign with it, and two signers on one key interleave nonces ('EAPI:"
            "Invalid nonce'). Mount the key into the one container "
            "that trades; give sidecars, init and debug containers no access to it.",
            workload.urn,
        )


def _workload_findings(workload: Workload, config: PackConfig) -> Iterator[Finding]:
    key = describe_key(workload, config)
    kind = workload.kind
    yield from _one_signer_per_pod(workload, key)
    if not workload.known:
        yield from _unknown_kind(workload, key, config)
        return
    if kind not in config.key_bearing_kinds:
        allowed = ", ".join(sorted(k for k in config.key_bearing_kinds if "/" not in k)) or "none"
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
    elif kind in ("StatefulSet", "ReplicaSet", "ReplicationController"):
        found = _at_most_one(workload, spec.get("replicas"), "spec.replicas", key)
        if found is not None:
            yield found
    elif kind == "Job":
        found = _at_most_one(workload, spec.get("parallelism"), "spec.parallelism", key)
        if found is not None:
            yield found
    elif kind == "CronJob":
        yield from _cronjob(workload, key)
    elif kind == "Rollout":
        yield from _rollout(workload, key)
    elif kind == "ScaledJob":
        yield from _scaled_job(workload, key)


def _orphan_patch_findings(index: StackIndex) -> Iterator[Finding]:
    for patch in index.orphan_patches:
        if patch.namespace not in index.subaccount_namespaces:
            continue
        yield Finding(
            f"{patch.ref} patches a {patch.kind} that this stack does not declare, in subaccount namespace "
            f"{patch.namespace}: keyfence cannot see whether it holds an exchange key nor how many pods it "
            "will run once patched. Patch only resources the stack declares, or declare the resource.",
            patch.urn,
        )


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
    yield from _orphan_patch_findings(index)


RULE = Rule(
    name=NAME,
    description="A workload holding an exchange key runs at most one pod at any time, and one container "
    "of that pod can read the key: replicas <= 1, Recreate rollouts, no DaemonSet/Job/CronJob/Rollout, "
    "no autoscaler, no kind whose pod semantics keyfence does not know, no patch it cannot see; "
    "optionally StatefulSets only.",
    level="mandatory",
    check=check,
    remediation="Deploy each key-bearing process as a Deployment with replicas: 1 and strategy Recreate, "
    "or a StatefulSet with replicas: 1, and scale by adding processes (each with its own key), never "
    "replicas.",
    flags=(REQUIRE_STATEFULSET,),
)
