"""Key lifecycle in Vault: register, inventory and revoke exchange keys, one key per process.

This is the logic behind ``keyfence keys``; it knows nothing of terminals or typer. Its
guarantees: a key is never stored under a second path (its fingerprint is compared with
every key already registered), a write never silently replaces another one (check-and-set:
create-only for a new key, the version read for a rotation), and no message, result or
repr ever carries key material. One module per operation: ``inputs`` (what an operator
gives), ``progress``, ``register``, ``inventory``, ``revoke`` and ``claims`` (the key ledger's
lifecycle: claim, release; the ``keyfence:ledger:Claim`` resource runs it).
"""

from .facts import metadata_fingerprint
from .inputs import (
    DEFAULT_MOUNT,
    DEFAULT_PREFIX,
    METADATA_REGISTERED_AT,
    SHORT_FINGERPRINT,
    KeyInputError,
    Placement,
    check_vault_path,
    find_entry,
    key_path_for,
    parse_permission_list,
    parse_process_ref,
    resolve_placement,
    validate_material,
)
from .inventory import DuplicateKey, Inventory, InventoryKey, KeyProblem, MissingKey, inventory
from .progress import NoProgress, Progress
from .register import Registered, Registration, iso_utc, plan_registration, preflight, register_key
from .revoke import Revoked, describe_key, revoke_key, revoke_refusal, summarize_metadata

__all__ = [
    "DEFAULT_MOUNT",
    "DEFAULT_PREFIX",
    "METADATA_REGISTERED_AT",
    "SHORT_FINGERPRINT",
    "DuplicateKey",
    "Inventory",
    "InventoryKey",
    "KeyInputError",
    "KeyProblem",
    "MissingKey",
    "NoProgress",
    "Placement",
    "Progress",
    "Registered",
    "Registration",
    "Revoked",
    "check_vault_path",
    "describe_key",
    "find_entry",
    "inventory",
    "iso_utc",
    "key_path_for",
    "metadata_fingerprint",
    "parse_permission_list",
    "parse_process_ref",
    "plan_registration",
    "preflight",
    "register_key",
    "resolve_placement",
    "revoke_key",
    "revoke_refusal",
    "summarize_metadata",
    "validate_material",
]
