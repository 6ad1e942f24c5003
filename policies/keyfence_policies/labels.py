"""Label and annotation keys that tie a workload to its exchange key.

The program writes these and the policy pack reads them, so they live in one module
that both import. Values are plain strings known at preview time: a policy that
touches a computed value is downgraded to advisory by the Pulumi policy SDK.
"""

from __future__ import annotations

from typing import Final

DOMAIN: Final = "keyfence.io"

# Labels (selectable; values must be <= 63 characters).
SUBACCOUNT: Final = f"{DOMAIN}/subaccount"
PROCESS: Final = f"{DOMAIN}/process"
ROLE: Final = f"{DOMAIN}/role"
VENUE: Final = f"{DOMAIN}/venue"
MASTER: Final = f"{DOMAIN}/master"
EXCHANGE_KEY: Final = f"{DOMAIN}/exchange-key"
# A SHA-256 hex digest is 64 characters, one more than a label value may hold: the label
# carries the first 32 hex digits for selection, the annotation of the same name the whole.
FINGERPRINT_LABEL: Final = f"{DOMAIN}/fingerprint"
FINGERPRINT_LABEL_LENGTH: Final = 32

# Annotations (the full facts about the key a workload or Secret holds).
KEY_PATH: Final = f"{DOMAIN}/key-path"
VAULT_MOUNT: Final = f"{DOMAIN}/vault-mount"
FINGERPRINT: Final = f"{DOMAIN}/fingerprint"
KEY_VERSION: Final = f"{DOMAIN}/key-version"
PERMISSIONS: Final = f"{DOMAIN}/permissions"
ALLOW_WITHDRAWALS: Final = f"{DOMAIN}/allow-withdrawals"
# Set by `keyfence check` only: why the key ledger forbids this stack the key (held by another stack,
# or recorded at another path). The check reports it as a mandatory violation.
LEDGER_CONFLICT: Final = f"{DOMAIN}/ledger-conflict"

MANAGED_BY: Final = "keyfence"

# The component types the program declares each subaccount's and process's resources under.
# A resource's URN (its parent chain) says which component declared it, whatever its labels.
SUBACCOUNT_COMPONENT: Final = "keyfence:fleet:Subaccount"
PROCESS_COMPONENT: Final = "keyfence:fleet:Process"
LEDGER_CLAIM_RECORD: Final = "pulumi-python:dynamic/ledger:Claim"
"""The dynamic resource of a process's ``keyfence:ledger:Claim``: it names the key's path to claim it
in the ledger, and delivers nothing."""

MATERIAL_PLACEHOLDER: Final = "<not fetched: keyfence check reads key metadata only>"
"""What a key Secret holds instead of key material in check and offline mode: never material."""

# Where the key Secret is mounted in every container, and the files it holds.
KEY_MOUNT_PATH: Final = "/var/run/keyfence/key"
KEY_FILES: Final = ("api_key", "api_secret")

DEFAULT_LABELS: Final[dict[str, str]] = {
    "subaccount": SUBACCOUNT,
    "process": PROCESS,
    "role": ROLE,
    "venue": VENUE,
    "master": MASTER,
    "exchangeKey": EXCHANGE_KEY,
    "fingerprint": FINGERPRINT_LABEL,
}
DEFAULT_ANNOTATIONS: Final[dict[str, str]] = {
    "keyPath": KEY_PATH,
    "vaultMount": VAULT_MOUNT,
    "fingerprint": FINGERPRINT,
    "keyVersion": KEY_VERSION,
    "permissions": PERMISSIONS,
    "allowWithdrawals": ALLOW_WITHDRAWALS,
}


def canonical_key_path(path: str) -> str:
    """Canonical form of a Vault key path: no leading, trailing or doubled '/'; case kept.

    Vault paths are case-sensitive, so ``Kraken/x`` and ``kraken/x`` are different keys.
    """
    if "//" not in path and not path.startswith("/") and not path.endswith("/"):
        return path  # already canonical: the common case, kept cheap (the pack calls this per key use)
    return "/".join(part for part in path.split("/") if part)


def key_identity(mount: str, path: str) -> str:
    """The identity two workloads are compared by: ``<mount>/<canonical path>``."""
    return f"{canonical_key_path(mount)}/{canonical_key_path(path)}"
