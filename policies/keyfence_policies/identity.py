"""How the pack tells which exchange key a workload holds.

A key can be named three ways, and two workloads clash if they share any one:
its Vault location (mount + canonical path), its fingerprint (a digest of the API
key, which catches one key copied under two Vault paths), and the Kubernetes Secret
that delivers it. A workload's identities are the union of what its own annotations
say and what its exchange-key Secrets say.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from .config import PackConfig
from .labels import canonical_key_path, key_identity

if TYPE_CHECKING:
    from .workloads import Workload

DEFAULT_VAULT_MOUNT = "secret"

IdentityKind = Literal["vault", "fingerprint", "secret"]


@dataclass(frozen=True)
class Identity:
    """One name of a key; equal identities mean the same key."""

    kind: IdentityKind
    value: str

    def describe(self) -> str:
        if self.kind == "vault":
            return f"Vault key {self.value}"
        if self.kind == "fingerprint":
            shown = self.value if len(self.value) <= 20 else self.value[:16] + "..."
            return f"fingerprint {shown}"
        return f"Secret {self.value}"


def _sources(workload: Workload) -> Iterator[Mapping[str, str]]:
    for _, own in workload.annotation_sources:
        yield own
    for secret in workload.key_secrets:
        yield secret.annotations


def vault_identity(annotations: Mapping[str, str], config: PackConfig) -> str | None:
    """``<mount>/<path>`` from a key-path annotation (mount defaults to ``secret``), if usable."""
    path = (annotations.get(config.annotations.key_path) or "").strip()
    if not canonical_key_path(path):
        return None
    mount = (
        canonical_key_path((annotations.get(config.annotations.vault_mount) or "").strip())
        or DEFAULT_VAULT_MOUNT
    )
    return key_identity(mount, path)


def fingerprint(annotations: Mapping[str, str], config: PackConfig) -> str | None:
    """The fingerprint annotation, normalised (hex digests compare case-insensitively)."""
    value = annotations.get(config.annotations.fingerprint)
    value = value.strip().lower() if value else ""
    return value or None


def key_identities(workload: Workload, config: PackConfig) -> list[Identity]:
    """Every distinct identity of the key(s) a workload holds, in a stable order."""
    found: dict[Identity, None] = {}
    for source in _sources(workload):
        vault = vault_identity(source, config)
        if vault is not None:
            found.setdefault(Identity("vault", vault), None)
        digest = fingerprint(source, config)
        if digest is not None:
            found.setdefault(Identity("fingerprint", digest), None)
    for key in workload.reachable_keys():
        for identity in key.identities():
            found.setdefault(identity, None)
    for secret in workload.key_secrets:
        found.setdefault(Identity("secret", f"{secret.namespace}/{secret.name}"), None)
    return list(found)


def describe_key(workload: Workload, config: PackConfig) -> str:
    """A short name of the key a workload holds, for messages."""
    for source in _sources(workload):
        vault = vault_identity(source, config)
        if vault is not None:
            return f"exchange key {vault}"
    for key in workload.reachable_keys():
        if key.vault is not None:
            return f"exchange key {key.vault}"
    if workload.key_secrets:
        return f"the exchange key in {workload.key_secrets[0].ref}"
    if workload.reachable_keys():
        return workload.reachable_keys()[0].describe()
    return "an exchange key"
