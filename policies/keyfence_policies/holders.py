"""Every holder of a key besides its process's workload, for ``no-duplicate-key-assignment``.

Two workloads mounting one key Secret is the obvious clash; these are the others: a copy
of the key's material outside its key Secret (another Secret, a ConfigMap, an environment
variable, an argument, an annotation, any resource of any provider), a secrets operator
or CSI provider that fetches the key from Vault by its path, a Role that lets someone read
the key Secret through the API, a reference to a Secret the stack does not declare (whose
key nobody can see), and a key Secret whose identity Vault does not confirm.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

from .carriers import SecretInfo
from .config import PackConfig
from .keybook import Key
from .rbac import READS_EVERY_SECRET, Binding, Grant
from .rule import MAX_NAMED, Finding, enumerate_named, named
from .workloads import Copy, StackIndex, Workload

NONCE: Final = (
    "two signers on one key interleave nonces and Kraken rejects the late ones ('EAPI:Invalid nonce')"
)
_CONTAINER_FIELD: Final = re.compile(r"^(?P<container>.*?(?:containers|Containers)\[\d+\])\.(?P<rest>.*)$")


def fleet_secrets(index: StackIndex) -> dict[str, SecretInfo]:
    """Each fleet process's own key Secret."""
    out: dict[str, SecretInfo] = {}
    for secret in index.key_secrets():
        if secret.fleet_process is not None:
            out.setdefault(secret.fleet_process, secret)
    return out


def holders_of(index: StackIndex) -> dict[int, list[Workload]]:
    """The workloads that can reach each key (by ``id`` of the key)."""
    out: dict[int, list[Workload]] = {}
    for workload in index.workloads:
        for key in workload.reachable_keys():
            out.setdefault(id(key), []).append(workload)
    return out


def _owner(key: Key, homes: dict[str, SecretInfo], holders: dict[int, list[Workload]]) -> str:
    """Who legitimately holds a key, in words: its process, its Secret and the workloads mounting it."""
    parts = []
    home = homes.get(key.process or "")
    if home is not None:
        parts.append(f"delivered by {named(home.ref, home.urn)}")
    users = holders.get(id(key), [])
    if users:
        shown = [named(w.ref, w.urn) for w in users[:MAX_NAMED]]
        parts.append(f"used by {enumerate_named(shown, len(users))}")
    return ", ".join(parts) if parts else "no process of the fleet holds it"


def where_in_words(copy: Copy, by_urn: dict[str | None, list[Workload]]) -> str:
    """``env API_TOKEN of container app`` or ``field data.creds``: where a copy sits."""
    where = copy.hit.where
    if "annotations." in where:
        return f"annotation {where.split('annotations.', 1)[1]}"
    matched = _CONTAINER_FIELD.match(where)
    if matched is None:
        return f"field {where}"
    for workload in by_urn.get(copy.urn, ()):
        for container in workload.containers:
            if container.node.path != matched["container"]:
                continue
            rest = matched["rest"]
            env = re.match(r"env\[(\d+)\]", rest)
            if env is not None:
                items = container.node.get("env").items()
                position = int(env[1])
                name = items[position].get("name").text() if position < len(items) else None
                return f"env {name or '#' + env[1]} of {container.ref}"
            return f"{rest.split('[', 1)[0].split('.', 1)[0]} of {container.ref}"
    return f"field {where}"


def _copy_findings(index: StackIndex) -> Iterator[Finding]:
    homes, holders = fleet_secrets(index), holders_of(index)
    by_urn: dict[str | None, list[Workload]] = {}
    for workload in index.workloads:
        by_urn.setdefault(workload.urn, []).append(workload)
    seen: set[tuple[str | None, str, int]] = set()
    for copy in index.copies:
        marker = (copy.urn, copy.hit.where, id(copy.key))
        if marker in seen:
            continue
        seen.add(marker)
        owner = _owner(copy.key, homes, holders)
        where = where_in_words(copy, by_urn)
        if copy.via is not None:
            yield Finding(
                f"{copy.ref} reaches {copy.via} in {where}; {owner}. A secrets operator, replicator or "
                "reflector following it delivers the key a second time, outside the process's key Secret, "
                f"and whatever receives it can sign beside the process: {NONCE}. Remove it; keyfence "
                "delivers each key through its process's key Secret only.",
                copy.urn,
            )
        elif copy.route:
            yield Finding(
                f"{copy.ref} names {copy.key.describe()} by its Vault path in {where}; {owner}. A secrets "
                "operator, CSI provider or Vault Agent following this reference delivers the key a second "
                f"time, outside the process's key Secret, and whatever receives it can sign beside the "
                f"process: {NONCE}. Remove the reference; keyfence delivers each key through its process's "
                "key Secret only.",
                copy.urn,
            )
        else:
            yield Finding(
                f"{copy.ref} holds a copy of the material of {copy.key.describe()} in {where} (value not "
                f"shown); {owner}. Key material may live only in its process's own key Secret: with a copy, "
                f"a second process can sign with the key, and {NONCE}. Remove the copy and mount the "
                "process's key Secret instead.",
                copy.urn,
            )


def _undeclared_findings(index: StackIndex) -> Iterator[Finding]:
    for workload in index.workloads:
        for ref in workload.undeclared:
            yield Finding(
                f"{workload.ref} reads {ref.target} ({ref.via}) in subaccount namespace "
                f"{workload.namespace}, but this stack does not declare it: keyfence cannot see whose "
                "exchange key it holds, so it cannot prove that only one process signs with that key. "
                "Declare it in the stack (keyfence declares each process's key Secret, "
                "<process>-key-v<version>), or stop referencing it.",
                workload.urn,
            )


@dataclass
class _KeySecrets:
    """Key Secrets by namespace and by name, so each grant is resolved in time of its own size."""

    every: list[SecretInfo]
    by_namespace: dict[str, list[SecretInfo]]
    by_name: dict[str | None, list[SecretInfo]]

    @classmethod
    def of(cls, index: StackIndex) -> _KeySecrets:
        found = cls([], {}, {})
        for secret in index.key_secrets():
            found.every.append(secret)
            found.by_namespace.setdefault(secret.namespace, []).append(secret)
            found.by_name.setdefault(secret.name, []).append(secret)
        return found

    def reached_by(self, grant: Grant) -> list[SecretInfo]:
        if grant.names is None:
            return self.every if grant.cluster else self.by_namespace.get(grant.obj.namespace, [])
        named = [s for name in sorted(grant.names) for s in self.by_name.get(name, [])]
        return named if grant.cluster else [s for s in named if s.namespace == grant.obj.namespace]


def _grant_scope(grant: Grant, index: StackIndex, secrets: _KeySecrets) -> str | None:
    """What a grant lets its subjects read that holds a key, in words; None when nothing does."""
    targets = secrets.reached_by(grant)
    shown = enumerate_named([s.ref for s in targets[:MAX_NAMED]], len(targets))
    if grant.names is None:
        if grant.cluster:
            if not index.subaccount_namespaces:
                return None
            return f"every Secret of every namespace (key Secrets: {shown or 'in the subaccount namespaces'})"
        if grant.obj.namespace not in index.subaccount_namespaces:
            return None
        where = shown or "where key Secrets live"
        return f"every Secret of subaccount namespace {grant.obj.namespace} ({where})"
    return shown or None


def _subjects(grant: Grant, bindings: list[Binding]) -> str:
    subjects = [s for b in bindings for s in b.subjects]
    if not subjects:
        return "whoever it is bound to"
    return enumerate_named(subjects[:MAX_NAMED], len(subjects))


def _rbac_findings(index: StackIndex) -> Iterator[Finding]:
    rbac = index.rbac
    risky: dict[tuple[str, str, str], str] = {}
    secrets = _KeySecrets.of(index) if rbac.grants else _KeySecrets([], {}, {})
    bindings: dict[tuple[str, str, str], list[Binding]] = {}
    for binding in rbac.bindings:
        namespace = "" if binding.role_kind == "ClusterRole" else binding.obj.namespace
        bindings.setdefault((binding.role_kind or "", namespace, binding.role_name or ""), []).append(binding)
    for grant in rbac.grants:
        scope = _grant_scope(grant, index, secrets)
        if scope is None:
            continue
        kind = "ClusterRole" if grant.cluster else "Role"
        risky[(kind, grant.obj.namespace if not grant.cluster else "", grant.obj.name)] = scope
        bound = bindings.get((kind, "" if grant.cluster else grant.obj.namespace, grant.obj.name), [])
        yield Finding(
            f"{grant.ref} lets {_subjects(grant, bound)} {'/'.join(sorted(grant.verbs))} {scope}. Whoever "
            f"can read a key Secret through the Kubernetes API holds the key beside its process: {NONCE}. "
            "Remove secrets from the rule, or limit resourceNames to Secrets that hold no exchange key.",
            grant.obj.urn,
        )
    for binding in rbac.bindings:
        name = binding.role_name or ""
        if binding.role_kind == "ClusterRole" and name in READS_EVERY_SECRET:
            if binding.cluster and index.subaccount_namespaces:
                scope = "every Secret of every namespace, key Secrets included"
            elif not binding.cluster and binding.obj.namespace in index.subaccount_namespaces:
                scope = f"every Secret of subaccount namespace {binding.obj.namespace}, key Secrets included"
            else:
                continue
        else:
            namespace = "" if binding.role_kind == "ClusterRole" else binding.obj.namespace
            found = risky.get((binding.role_kind or "", namespace, name))
            if found is None:
                continue
            scope = found
        subjects = enumerate_named(binding.subjects[:MAX_NAMED], len(binding.subjects)) or "no subject"
        yield Finding(
            f"{binding.ref} gives {subjects} {binding.role_kind} {name}, which reads {scope}: they hold "
            f"every exchange key there beside its process, and {NONCE}. Bind a role that cannot read "
            "Secrets in subaccount namespaces.",
            binding.obj.urn,
        )
    for obj in rbac.unreadable:
        if obj.kind.startswith("Cluster") or obj.namespace in index.subaccount_namespaces:
            yield Finding(
                f"{obj.ref}: cannot evaluate no-duplicate-key-assignment: "
                f"{'; '.join(obj.problems.as_list()[:MAX_NAMED])}. The check fails closed: it cannot tell "
                "whether this grants reading key Secrets.",
                obj.urn,
            )


def _verify(secret: SecretInfo, vault_digests: set[str], config: PackConfig) -> list[str]:
    """What Vault does not confirm about a key Secret's claims (check mode only)."""
    keys = config.annotations
    problems = []
    path = (secret.annotations.get(keys.key_path) or "").strip()
    fingerprint = (secret.annotations.get(keys.fingerprint) or "").strip().lower()
    claimed = secret.claimed
    if path and (claimed is None or not claimed.from_vault):
        problems.append(f"Vault holds no registered key at its {keys.key_path} {path!r}")
    if fingerprint and fingerprint not in vault_digests:
        problems.append(
            f"its {keys.fingerprint} {fingerprint[:16]}... is the fingerprint of no key registered in Vault "
            "(invented, or of a deleted key)"
        )
    elif (
        fingerprint and claimed is not None and claimed.from_vault and fingerprint not in claimed.fingerprints
    ):
        problems.append(f"its {keys.fingerprint} is not the fingerprint Vault records for {claimed.vault}")
    expected = secret.key if secret.fleet else None
    if expected is not None and claimed is not None and expected.from_vault and claimed is not expected:
        problems.append(f"it names {claimed.vault}, but its process's key is {expected.vault}")
    if not path and not fingerprint and not secret.fleet and not secret.held:
        problems.append(f"it names no key ({keys.key_path} and {keys.fingerprint} are missing)")
    return problems


def _identity_findings(index: StackIndex, config: PackConfig) -> Iterator[Finding]:
    fleet = index.book.fleet_processes
    vault_digests = {d for k in index.book.keys if k.from_vault for d in k.fingerprints}
    for secret in index.key_secrets():
        if secret.origin is not None:
            continue
        if secret.fleet_process is not None and fleet and secret.fleet_process not in fleet:
            yield Finding(
                f"{secret.ref} is declared by a keyfence:fleet:Process component named "
                f"{secret.fleet_process}, which is no process of the fleet spec: a hand-made fleet "
                "component cannot vouch for a key. Declare processes in the fleet spec only.",
                secret.urn,
            )
        if not config.vault_verified:
            continue
        problems = _verify(secret, vault_digests, config)
        if problems:
            yield Finding(
                f"{secret.ref}: unverifiable key: {'; '.join(problems)}. Only keys registered with 'keyfence "
                "keys register' can be proved to have one signer; register the key, or deploy it through "
                "keyfence, which writes the facts Vault holds.",
                secret.urn,
            )


def findings(index: StackIndex, config: PackConfig) -> Iterator[Finding]:
    """Every holder of a key that is not its process, and every key Secret Vault does not confirm."""
    yield from _copy_findings(index)
    yield from _undeclared_findings(index)
    yield from _rbac_findings(index)
    yield from _identity_findings(index, config)
    for obj in index.unscanned:
        yield Finding(
            f"{obj.ref}: cannot evaluate no-duplicate-key-assignment: it is nested too deeply to search for "
            "exchange key material. The check fails closed: flatten the resource.",
            obj.urn,
        )
