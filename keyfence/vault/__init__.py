"""The Vault (or OpenBao) connection and a thin KV version 2 client for exchange keys.

hvac already models Vault's API, so each client method is one hvac call. What this package
adds around those calls, one module each: connection settings from the standard environment
(``settings``), errors that name the Vault address, the key and what to do (``errors``), one
pooled session with retries limited to failures safe to repeat (``transport``), key metadata
(``metadata``) and the KV v2 operations (``kv``). No message, log line or repr ever carries
key material or a credential.
"""

from .errors import (
    KeyAccessDeniedError,
    KeyNotFoundError,
    KeyVersionGoneError,
    KVMountError,
    MalformedKeyError,
    VaultRequestError,
    VaultUnavailableError,
)
from .kv import KV2Client, connect
from .metadata import KeyMetadata, KeyVersion
from .settings import VaultSettings
from .transport import read_many

__all__ = [
    "KV2Client",
    "KVMountError",
    "KeyAccessDeniedError",
    "KeyMetadata",
    "KeyNotFoundError",
    "KeyVersion",
    "KeyVersionGoneError",
    "MalformedKeyError",
    "VaultRequestError",
    "VaultSettings",
    "VaultUnavailableError",
    "connect",
    "read_many",
]
