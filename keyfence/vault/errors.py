"""Vault failures, each naming the Vault address, the key and what to do."""

from __future__ import annotations

import logging

from ..errors import VaultError

log = logging.getLogger("keyfence.vault")
retry_log = logging.getLogger("keyfence.vault.retry")
"""Retry notices: their own logger, so a command line can keep them out of a one-message failure."""


class VaultUnavailableError(VaultError):
    """Vault as a whole cannot serve us (unreachable, sealed, token rejected): no key can be read."""


class VaultRequestError(VaultError):
    """A request about one key failed; ``reason`` says what is wrong there and what to do."""

    def __init__(self, addr: str, ref: str, reason: str) -> None:
        self.addr = addr
        self.ref = ref
        self.reason = reason
        super().__init__(f"{ref}: {reason} (Vault at {addr})")


class KeyNotFoundError(VaultRequestError):
    """Nothing is stored at the path (or the mount is not a KV version 2 mount)."""


class KeyVersionGoneError(KeyNotFoundError):
    """The version asked for was deleted or destroyed.

    ``state`` (``"deleted"`` or ``"destroyed"``) and ``version``, when known, let a caller name
    the way out that fits: a deleted version can be undeleted, a destroyed one cannot.
    """

    def __init__(
        self, addr: str, ref: str, reason: str, *, state: str = "", version: int | None = None
    ) -> None:
        super().__init__(addr, ref, reason)
        self.state = state
        self.version = version


class KVMountError(KeyNotFoundError):
    """The mount itself cannot hold keys (missing, KV version 1, another engine): no key under it can.

    A KeyNotFoundError for compatibility, but callers that treat 'not found' as 'free to
    write' must not: a KV version 1 mount answers 404 and would accept a write elsewhere.
    """


class KeyAccessDeniedError(VaultRequestError):
    """The token lacks a capability on this key's path (HTTP 403)."""


class MalformedKeyError(VaultRequestError):
    """The stored data is not an api_key/api_secret pair of non-empty strings."""
