"""``subaccount-tag-required``: a process trades only with a key of its own subaccount.

Subaccounts separate strategies' balances, P&L and rate limits. A workload that
mounts another subaccount's key trades (and is rate-limited) on the wrong books, and
nothing at the exchange flags it. The subaccount label on the workload, on its key
Secret and on the Namespace keyfence declares for the subaccount must therefore agree.
"""

from __future__ import annotations

from collections.abc import Iterator

from .config import PackConfig
from .identity import describe_key
from .rule import MAX_NAMED, Finding, Rule, each_key_bearing, named
from .workloads import SecretInfo, StackIndex, Workload

NAME = "subaccount-tag-required"


def key_subaccount(secret: SecretInfo, config: PackConfig) -> tuple[str | None, str | None]:
    """The subaccount a key Secret's key belongs to, and who says so; labels only as a last resort.

    Vault (or, offline, the fleet spec) is trusted, then the keyfence fleet component that
    declared the Secret (its name is ``<subaccount>/<process>``); a label any transformation
    can rewrite only when neither knows. The second value is None when only the label says.
    """
    key = secret.key
    if key is not None and key.subaccount:
        return key.subaccount, "Vault" if key.from_vault else "the fleet spec"
    if secret.fleet_process is not None:
        return secret.fleet_process.split("/")[0], f"its keyfence fleet component {secret.fleet_process}"
    return secret.labels.get(config.labels.subaccount), None


def _secret_findings(
    workload: Workload, secret: SecretInfo, own: str | None, config: PackConfig
) -> Iterator[Finding]:
    label = config.labels.subaccount
    theirs = secret.labels.get(label)
    trusted, source = key_subaccount(secret, config)
    if source is None and not theirs:
        yield Finding(
            f"{workload.ref} mounts key {named(secret.ref, secret.urn)}, which has no {label} label, so "
            f"the key's subaccount cannot be verified. Label the key Secret {label}: <subaccount>.",
            workload.urn,
        )
        return
    if source is not None and theirs and theirs != trusted:
        yield Finding(
            f"{workload.ref} mounts key {named(secret.ref, secret.urn)}, labelled {label}={theirs}, but "
            f"{source} says the key belongs to subaccount {trusted}: labels can be rewritten, the key's "
            f"subaccount cannot. Label it {trusted}, and run only subaccount {trusted}'s processes with it.",
            workload.urn,
        )
    if own and trusted and trusted != own:
        yield Finding(
            f"{workload.ref} (subaccount {own}) holds the key of subaccount {trusted} via "
            f"{named(secret.ref, secret.urn)}: it would trade on the wrong subaccount's balances and "
            f"rate limits. Give the process a key of subaccount {own}, or move it to subaccount "
            f"{trusted}.",
            workload.urn,
        )


def _workload_findings(workload: Workload, index: StackIndex, config: PackConfig) -> Iterator[Finding]:
    label = config.labels.subaccount
    venue_label = config.labels.venue
    key = describe_key(workload, config)
    own = workload.labels.get(label)
    if not own:
        yield Finding(
            f"{workload.ref} holds {key} but has no {label} label, so nothing ties it to a subaccount. "
            f"Label it {label}: <subaccount> (the subaccount the key belongs to).",
            workload.urn,
        )
    template = workload.template_labels.get(label)
    if own and template is not None and template != own:
        yield Finding(
            f"{workload.ref} is labelled {label}={own} but its pod template says {template}. Use the same "
            "subaccount on both.",
            workload.urn,
        )
    if not workload.key_secrets:
        yield Finding(
            f"{workload.ref} holds {key} only by annotation: no exchange-key Secret of the stack is "
            "mounted, so the key's subaccount cannot be seen. Mount the process's key Secret (keyfence "
            "names it <process>-key-v<version>) instead of fetching the key some other way.",
            workload.urn,
        )
    venue = workload.label(venue_label)
    for secret in workload.key_secrets:
        yield from _secret_findings(workload, secret, own, config)
        key_venue = (secret.key.venue if secret.key is not None else None) or secret.labels.get(venue_label)
        if venue and key_venue and key_venue != venue:
            yield Finding(
                f"{workload.ref} ({venue_label}={venue}) holds a {key_venue} key via "
                f"{named(secret.ref, secret.urn)}. Use a key of the {venue} venue, or fix the labels.",
                workload.urn,
            )
    for held in workload.holdings:
        theirs = held.key.subaccount
        if own and theirs and theirs != own:
            yield Finding(
                f"{workload.ref} (subaccount {own}) holds {held.key.describe()}, a key of subaccount "
                f"{theirs}: it would trade on the wrong subaccount's balances and rate limits.",
                workload.urn,
            )
    for namespace in index.namespaces.get(workload.namespace, ()):
        if namespace.problems:
            problems = "; ".join(namespace.problems.as_list()[:MAX_NAMED])
            yield Finding(
                f"{workload.ref}: cannot evaluate {NAME}: Namespace {namespace.name}: {problems}.",
                workload.urn,
            )
        declared = namespace.fleet_subaccount or namespace.labels.get(label)
        if own and declared is not None and declared != own:
            yield Finding(
                f"{workload.ref} (subaccount {own}) runs in "
                f"{named('Namespace ' + namespace.name, namespace.urn)}, which belongs to subaccount "
                f"{declared}. Deploy it to the namespace of subaccount {own}.",
                workload.urn,
            )


def check(index: StackIndex, config: PackConfig) -> Iterator[Finding]:
    """Report key-bearing workloads whose subaccount is missing or disagrees with their key's."""
    yield from each_key_bearing(index, NAME, lambda workload: _workload_findings(workload, index, config))


RULE = Rule(
    name=NAME,
    description="A workload holding an exchange key carries the subaccount label, and it matches the "
    "subaccount (and venue) of its key Secret and of its Namespace.",
    level="mandatory",
    check=check,
    remediation="Deploy processes through keyfence, which labels the Namespace, key Secret and Deployment "
    "with the same subaccount; never mount a key Secret of another subaccount.",
)
