"""The Vault (or OpenBao) connection and a thin KV version 2 client for exchange keys.

hvac already models Vault's API, so each client method is one hvac call. What this package
adds around those calls, one module each: connection settings from the standard environment
(``settings``), errors that name the Vault address, the key and what to do (``errors``), one
pooled session with retries limited to failures safe to repeat (``transport``), key metadata
(``metadata``), the KV v2 operations (``kv``), many keys' metadata from folder listings
(``listing``) and the key ledger's records (``ledger``). No
message, log line or repr ever carries key material or a credential.
"""

from typing import TYPE_CHECKING, Any

from .errors import (
    KeyAccessDeniedError,
    KeyNotFoundError,
    KeyVersionGoneError,
    KVMountError,
    MalformedKeyError,
    VaultRequestError,
    VaultUnavailableError,
)
from .metadata import KeyMetadata, KeyVersion
from .settings import VaultSettings

if TYPE_CHECKING:
    from .kv import KV2Client, connect
    from .ledger import DEFAULT_LEDGER, Ledger, LedgerAccessError, LedgerRaceLostError, LedgerRecord, conflict
    from .transport import read_many

_LAZY = {
    "KV2Client": ".kv",
    "connect": ".kv",
    "read_many": ".transport",
    **dict.fromkeys(
        ("DEFAULT_LEDGER", "Ledger", "LedgerAccessError", "LedgerRaceLostError", "LedgerRecord", "conflict"),
        ".ledger",
    ),
}
"""Loaded on first use: hvac and requests cost a noticeable part of a second to import, and
``keyfence check --offline`` (or a spec error) never talks to Vault."""


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    value = getattr(import_module(module, __name__), name)
    globals()[name] = value
    return value


__all__ = [
    "DEFAULT_LEDGER",
    "KV2Client",
    "KVMountError",
    "KeyAccessDeniedError",
    "KeyMetadata",
    "KeyNotFoundError",
    "KeyVersion",
    "KeyVersionGoneError",
    "Ledger",
    "LedgerAccessError",
    "LedgerRaceLostError",
    "LedgerRecord",
    "MalformedKeyError",
    "VaultRequestError",
    "VaultSettings",
    "VaultUnavailableError",
    "conflict",
    "connect",
    "read_many",
]
