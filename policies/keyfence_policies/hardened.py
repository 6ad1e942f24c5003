"""``hardened-workload`` (advisory): a pod that holds a key is locked down.

The key file is only as safe as the pod around it: root, a writable root
filesystem, privilege escalation, Linux capabilities or a mounted service-account
token each widen what an exploited process can do with (or to) the key. Advisory,
because these settings reduce blast radius rather than prevent a nonce clash.
"""

from __future__ import annotations

from collections.abc import Iterator

from .config import PackConfig
from .identity import describe_key
from .rule import Finding, Rule, cannot_evaluate, in_scope
from .workloads import StackIndex, Workload

NAME = "hardened-workload"


def shortfalls(workload: Workload) -> list[str]:
    """What keeps the workload's pod spec from the hardened baseline, one phrase each."""
    out: list[str] = []
    pod_non_root = workload.pod_spec.dig("securityContext", "runAsNonRoot").flag()
    for container in workload.containers:
        context = container.node.get("securityContext")
        own_non_root = context.get("runAsNonRoot").flag()
        if (own_non_root if own_non_root is not None else pod_non_root) is not True:
            out.append(f"{container.ref}: runAsNonRoot is not true (pod or container securityContext)")
        if context.get("readOnlyRootFilesystem").flag() is not True:
            out.append(f"{container.ref}: securityContext.readOnlyRootFilesystem is not true")
        if context.get("allowPrivilegeEscalation").flag() is not False:
            out.append(f"{container.ref}: securityContext.allowPrivilegeEscalation is not false")
        if "ALL" not in context.dig("capabilities", "drop").strings():
            out.append(f'{container.ref}: securityContext.capabilities.drop does not contain "ALL"')
    if not workload.containers:
        out.append("pod spec has no containers to check")
    if workload.pod_spec.get("automountServiceAccountToken").flag() is not False:
        out.append("pod spec: automountServiceAccountToken is not false")
    return out


def check(index: StackIndex, config: PackConfig) -> Iterator[Finding]:
    """Report key-bearing workloads whose pod spec falls short of the hardened baseline."""
    for workload in in_scope(index):
        if workload.key_bearing:
            missing = shortfalls(workload)
            if missing:
                yield Finding(
                    f"{workload.ref} holds {describe_key(workload, config)} but is not hardened: "
                    f"{'; '.join(missing)}. Run key-bearing pods as non-root with a read-only root "
                    "filesystem, no privilege escalation, all capabilities dropped and no service-account "
                    "token, so an exploited process can do as little as possible with the key.",
                    workload.urn,
                )
        problem = cannot_evaluate(workload, NAME)
        if problem is not None:
            yield problem


RULE = Rule(
    name=NAME,
    description="Pods that hold an exchange key run non-root, read-only, without privilege escalation, "
    "capabilities or a service-account token.",
    level="advisory",
    check=check,
    remediation="Use keyfence's Deployment template: runAsNonRoot, readOnlyRootFilesystem, "
    "allowPrivilegeEscalation: false, capabilities.drop [ALL], automountServiceAccountToken: false.",
)
