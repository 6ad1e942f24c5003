"""``no-duplicate-key-assignment``: one exchange API key per trading process.

Kraken keeps one nonce sequence per API key; two processes signing with the same
key interleave their nonces and the exchange rejects whichever arrives late with
``EAPI:Invalid nonce`` (and bans the key after enough of them). The stack is the
only place where all workloads are visible at once, so clashes are found here,
with one dict from identity to holders: linear in the number of workloads.
"""

from __future__ import annotations

from collections.abc import Iterator

from .config import REQUIRE_FINGERPRINT, PackConfig
from .holders import findings as holder_findings
from .identity import Identity, key_identities
from .rule import MAX_NAMED, Finding, Rule, cannot_evaluate, enumerate_named, in_scope, named
from .workloads import StackIndex, Workload

NAME = "no-duplicate-key-assignment"

WHY = (
    "Two processes signing with one API key interleave nonces and Kraken rejects the late ones "
    "('EAPI:Invalid nonce', then a temporary ban)"
)
FIX = (
    "give each process its own key and key Secret (one keyfence process entry per trading process), or "
    "remove the extra workload"
)


def _clash_finding(
    workload: Workload, own: list[Identity], holders: dict[Identity, list[Workload]]
) -> Finding | None:
    # Identities shared with the same set of others are reported together.
    groups: dict[tuple[tuple[str, ...], int], list[Identity]] = {}
    for identity in own:
        sharing = holders[identity]
        if len(sharing) < 2:
            continue
        others: list[str] = []
        for other in sharing:
            if other is not workload:
                others.append(named(other.ref, other.urn))
                if len(others) == MAX_NAMED:
                    break
        groups.setdefault((tuple(others), len(sharing) - 1), []).append(identity)
    if not groups:
        return None
    parts = [
        f"{', '.join(i.describe() for i in identities)} {'is' if len(identities) == 1 else 'are'} also used "
        f"by {enumerate_named(list(others), total)}"
        for (others, total), identities in groups.items()
    ]
    return Finding(
        f"{workload.ref} shares its exchange API key with other workloads: {'; '.join(parts)}. {WHY}; {FIX}.",
        workload.urn,
    )


def _identity_findings(workload: Workload, own: list[Identity], config: PackConfig) -> Iterator[Finding]:
    if not workload.key_bearing:
        return
    names_key = any(i.kind in ("vault", "secret") for i in own)
    if not names_key:
        yield Finding(
            f"{workload.ref}: unverifiable key identity: it holds an exchange key but names none - no "
            f"usable {config.annotations.key_path} annotation and no exchange-key Secret in the stack. Set "
            f"{config.annotations.key_path} (and {config.annotations.vault_mount}) to the key's Vault path, "
            "or mount the process's key Secret.",
            workload.urn,
        )
    if config.require_fingerprint and not any(i.kind == "fingerprint" for i in own):
        yield Finding(
            f"{workload.ref}: unverifiable key identity: neither the workload nor its key Secret carries a "
            f"{config.annotations.fingerprint} annotation, so the same API key stored under a second Vault "
            f"path would go unnoticed. {_fingerprint_advice(own)}",
            workload.urn,
        )


def _fingerprint_advice(own: list[Identity]) -> str:
    """A key named by its Vault path lacks the fingerprint in its Vault metadata: fix it there."""
    vault = sorted(i.value for i in own if i.kind == "vault")
    if vault:
        return (
            f"The key's Vault metadata ({', '.join(vault)}) records no fingerprint: re-register the key with "
            "'keyfence keys register --rotate', or add it with 'bao kv metadata patch "
            "-custom-metadata=fingerprint=<sha256 of api_key>' (docs/pipeline.md); or give the check a token "
            "that may read the key's data, so keyfence computes it."
        )
    return (
        "Deploy it through keyfence (which annotates the key's SHA-256 fingerprint), or set "
        "requireFingerprint: false only for offline checks that cannot read Vault."
    )


def check(index: StackIndex, config: PackConfig) -> Iterator[Finding]:
    """Report every workload that shares a key identity, and keys that cannot be identified."""
    own: dict[int, list[Identity]] = {}
    holders: dict[Identity, list[Workload]] = {}
    scoped = list(in_scope(index))
    for workload in scoped:
        identities = key_identities(workload, config)
        own[id(workload)] = identities
        for identity in identities:
            holders.setdefault(identity, []).append(workload)
    for workload in scoped:
        identities = own[id(workload)]
        clash = _clash_finding(workload, identities, holders)
        if clash is not None:
            yield clash
        yield from _identity_findings(workload, identities, config)
        problem = cannot_evaluate(workload, NAME)
        if problem is not None:
            yield problem
    yield from holder_findings(index, config)
    for secret in index.unnamed_key_secrets:
        reasons = "; ".join(secret.problems.as_list()[:MAX_NAMED]) or "metadata.name is missing"
        yield Finding(
            f"{secret.ref}: cannot evaluate {NAME}: {reasons}. Without a plain metadata.name and namespace "
            "no workload can be matched to this key Secret; name it explicitly (keyfence names it "
            "<process>-key-v<version> in the subaccount's namespace).",
            secret.urn,
        )


RULE = Rule(
    name=NAME,
    description="No two workloads may hold the same exchange API key (compared by Vault path, "
    "fingerprint and key Secret), and nothing else may hold it: no copy of its material, no Vault "
    "route to it, no role reading its Secret, no Secret the stack cannot see. One key per trading "
    "process, or nonces collide.",
    level="mandatory",
    check=check,
    remediation="Give each trading process its own API key, registered with 'keyfence keys register', "
    "and deploy it through keyfence so each Deployment mounts only its own key Secret.",
    flags=(REQUIRE_FINGERPRINT,),
)
