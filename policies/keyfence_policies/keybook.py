"""Every exchange key the pack knows of, and the ways to recognise one in a stack.

A key is known from Vault and the fleet spec (``knownKeys``, trusted), and from the
stack's own key Secrets (what their annotations claim, and the digests of the material
they hold). It is recognised three ways: by a string whose SHA-256 equals one of its
fingerprints (a copy of its material), by its Vault path written anywhere (a Vault Agent
annotation, a CSI SecretProviderClass, a secrets operator's object), and by the Secret
that delivers it. Lookups are dictionary lookups, so recognising is linear in the stack.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final

from .config import PackConfig
from .facts import KeyFact
from .identity import DEFAULT_VAULT_MOUNT, Identity
from .labels import canonical_key_path

MAX_SEGMENTS: Final = 32
"""Path segments of one token that are looked at; no real Vault path is longer."""
_PATH_TOKEN: Final = re.compile(r"[A-Za-z0-9_.~@+\-]*(?:/[A-Za-z0-9_.~@+\-]*)+")
_API_SEGMENTS: Final = frozenset({"data", "metadata"})


@dataclass(eq=False)
class Key:
    """One exchange key, with everything known about it."""

    mount: str | None = None
    path: str | None = None
    fingerprints: set[str] = field(default_factory=set)
    """Hex SHA-256 digests of its api key and api secret, from the facts or a fleet Secret's material."""
    subaccount: str | None = None
    venue: str | None = None
    permissions: tuple[str, ...] | None = None
    process: str | None = None
    namespace: str | None = None
    master: bool | None = None
    from_vault: bool = False
    """Its facts come from Vault (check mode), not from the stack."""
    registered: bool = True
    """False for a path under a key prefix that names no known key."""

    @property
    def vault(self) -> str | None:
        if not self.path:
            return None
        return f"{self.mount or DEFAULT_VAULT_MOUNT}/{self.path}"

    def identities(self) -> list[Identity]:
        out = []
        if self.vault is not None:
            out.append(Identity("vault", self.vault))
        out += [Identity("fingerprint", f) for f in sorted(self.fingerprints)]
        return out

    def describe(self) -> str:
        """``exchange key secret/kraken/a/b (process a/b)``: how messages name it, never its material."""
        if self.vault is not None:
            name = f"exchange key {self.vault}"
        elif self.fingerprints:
            name = f"the exchange key with fingerprint {min(self.fingerprints)[:16]}..."
        else:
            name = "an exchange key"
        if not self.registered:
            return f"{name} (no registered key is at that path)"
        return f"{name} (process {self.process})" if self.process else name


def _segments(path: str) -> list[str]:
    return [part for part in path.split("/") if part]


class KeyBook:
    """Known keys by fingerprint, Vault location, path and fleet process."""

    def __init__(self, config: PackConfig) -> None:
        self.keys: list[Key] = []
        self.by_digest: dict[str, Key] = {}
        self.by_vault: dict[str, Key] = {}
        self.by_path: dict[str, list[Key]] = {}
        self.by_process: dict[str, Key] = {}
        self.vault_verified = config.vault_verified
        self.fleet_processes: set[str] = set()
        """Processes the facts name: the fleet as the spec declares it."""
        self._anchors: set[str] = set(_API_SEGMENTS)
        self._prefixes: list[tuple[list[str], list[str]]] = []
        for fact in config.known_keys:
            self._add_fact(fact, from_vault=config.vault_verified)
        for prefix in config.key_prefixes:
            segments = _segments(prefix)
            self._prefixes.append((segments[:1], segments[1:]))
            self._anchors.add(segments[0])

    # -- building

    def _new(self, mount: str | None, path: str | None) -> Key:
        key = Key(mount=mount, path=path)
        self.keys.append(key)
        if path:
            self.by_vault[key.vault or ""] = key
            self.by_path.setdefault(path, []).append(key)
            self._anchors.add(_segments(mount or DEFAULT_VAULT_MOUNT)[-1])
        return key

    def _add_fact(self, fact: KeyFact, *, from_vault: bool) -> None:
        key = self.by_vault.get(fact.vault) or self._new(fact.mount, fact.path)
        key.from_vault = from_vault
        for digest in fact.fingerprints:
            key.fingerprints.add(digest)
            self.by_digest.setdefault(digest, key)
        key.subaccount = fact.subaccount or key.subaccount
        key.venue = fact.venue or key.venue
        key.permissions = fact.permissions if fact.permissions is not None else key.permissions
        key.namespace = fact.namespace or key.namespace
        key.master = fact.master if fact.master is not None else key.master
        if fact.process:
            self.fleet_processes.add(fact.process)
            key.process = fact.process
            self.by_process.setdefault(fact.process, key)

    def claimed(self, mount: str | None, path: str | None, fingerprint: str | None) -> Key | None:
        """The key a stack's annotations name (creating it when nothing else knows it)."""
        path = canonical_key_path(path or "") or None
        mount = canonical_key_path(mount or "") or DEFAULT_VAULT_MOUNT
        key = self.by_vault.get(f"{mount}/{path}") if path else None
        if key is None and fingerprint and not path:
            key = self.by_digest.get(fingerprint)
        if key is None and (path or fingerprint):
            key = self._new(mount if path else None, path)
        if key is not None and fingerprint:
            # A claim makes the digest recognisable, but only trusted facts and a fleet Secret's
            # own material say what the key's fingerprints are.
            self.by_digest.setdefault(fingerprint, key)
        return key

    def for_process(self, process: str, claimed: Key | None = None) -> Key:
        """The key of a fleet process: its facts when given, else what its Secret's annotations name.

        A key another process already holds is never adopted: the second process gets a key of
        its own, and the clash is found by the identities its Secret's annotations name.
        """
        key = self.by_process.get(process)
        if key is None:
            if claimed is not None and claimed.process is None and claimed.registered:
                key = claimed
            else:
                key = self._new(None, None)
            key.process = process
            self.by_process[process] = key
        return key

    def add_digest(self, digest: str, key: Key) -> Key:
        """Record that ``key``'s Secret holds a value with this digest; the key already holding it wins."""
        known = self.by_digest.setdefault(digest, key)
        if known is key:
            key.fingerprints.add(digest)
        return known

    # -- recognising

    @property
    def has_paths(self) -> bool:
        return bool(self.by_path) or bool(self._prefixes)

    def _registered(self, segments: list[str], start: int) -> list[Key]:
        keys = self.by_path.get("/".join(segments[start:]))
        if not keys or start == 0:
            return keys or []
        before = segments[:start]
        if before[-1] in _API_SEGMENTS:
            before = before[:-1]
        out = []
        for key in keys:
            mount = _segments(key.mount or DEFAULT_VAULT_MOUNT)
            if before[-len(mount) :] == mount:
                out.append(key)
        return out

    def _unregistered(self, segments: list[str], start: int) -> Key | None:
        before = segments[:start]
        if before and before[-1] in _API_SEGMENTS:
            before = before[:-1]
        for mount, prefix in self._prefixes:
            end = start + len(prefix)
            if before[-len(mount) :] == mount and segments[start:end] == prefix and len(segments) > end:
                key = self._new("/".join(mount), "/".join(segments[start:]))
                key.registered = False
                return key
        return None

    def match(self, segments: tuple[str, ...]) -> Iterator[Key]:
        """Keys a path token names: bare, ``<mount>/<path>``, or the API form (``/v1/<mount>/data/...``)."""
        parts = list(segments[:MAX_SEGMENTS])
        for start in range(len(parts)):
            if start and parts[start - 1] not in self._anchors:
                continue
            found = self._registered(parts, start)
            if found:
                yield from found
                return
            unregistered = self._unregistered(parts, start) if start else None
            if unregistered is not None:
                yield unregistered
                return


def path_tokens(text: str) -> tuple[tuple[str, ...], ...]:
    """The slash-separated tokens of a string, as segments: what :meth:`KeyBook.match` reads."""
    return tuple(tuple(_segments(token)) for token in _PATH_TOKEN.findall(text))
