"""Store a synthetic fleet's keys in OpenBao, quickly and exactly as keyfence registers them.

``keyfence keys register`` scans every other key for a copy before each write, which is right
for an operator and far too slow for 2000 keys. The benchmark owns the fleet and knows every
key is distinct, so it writes each key directly (data, then the custom metadata keyfence
reads: subaccount, venue, permissions, fingerprint, registered_at) over one pooled session
on several threads.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from typing import Final

import hvac
import hvac.exceptions
import requests
from keyfence_policies.permissions import format_permissions
from requests.adapters import HTTPAdapter

from keyfence.keys import (
    METADATA_FINGERPRINT,
    METADATA_FINGERPRINT_VERSION,
    METADATA_PERMISSIONS,
    METADATA_SECRET_FINGERPRINT,
    METADATA_SUBACCOUNT,
    METADATA_VENUE,
)
from keyfence.keystore import METADATA_REGISTERED_AT
from keyfence.vault import LedgerRecord
from keyfence.vault.kv import API_KEY_FIELD, API_SECRET_FIELD
from keyfence.vault.ledger import mirror_of

from .fleet import BenchProcess, Fleet

REGISTERED_AT: Final = "2026-01-01T00:00:00Z"
"""A fixed registration time: the seeded Vault is the same on every run."""
DEFAULT_CONCURRENCY: Final = 16


BENCH_STACK: Final = "organization/keyfence/dev"
"""The stack ``keyfence check`` runs as in the benchmark (its defaults)."""


def custom_metadata(process: BenchProcess, version: int) -> dict[str, str]:
    """The custom metadata ``keyfence keys register`` would write for this key's ``version``."""
    return {
        METADATA_SUBACCOUNT: process.subaccount.name,
        METADATA_VENUE: process.subaccount.venue,
        METADATA_PERMISSIONS: format_permissions(process.permissions),
        METADATA_FINGERPRINT: process.material.fingerprint,
        METADATA_SECRET_FINGERPRINT: process.material.secret_fingerprint,
        METADATA_FINGERPRINT_VERSION: str(version),
        METADATA_REGISTERED_AT: REGISTERED_AT,
    }


def client(addr: str, token: str, *, concurrency: int = DEFAULT_CONCURRENCY) -> hvac.Client:
    """An hvac client whose one session keeps a connection per writer thread."""
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=concurrency))
    session.mount("https://", HTTPAdapter(pool_maxsize=concurrency))
    return hvac.Client(url=addr, token=token, session=session, timeout=30)


def seed_one(vault: hvac.Client, fleet: Fleet, process: BenchProcess) -> None:
    """Write one key's current version and its metadata (check-and-set required, as keyfence sets)."""
    kv = vault.secrets.kv.v2
    written = kv.create_or_update_secret(
        path=process.key_path,
        secret={API_KEY_FIELD: process.material.api_key, API_SECRET_FIELD: process.material.api_secret},
        mount_point=fleet.mount,
    )
    kv.update_metadata(
        path=process.key_path,
        custom_metadata=custom_metadata(process, int(written["data"]["version"])),
        cas_required=True,
        delete_version_after=None,
        mount_point=fleet.mount,
    )
    # Its ledger record, claimed by the benchmark's stack as a deployed fleet's would be.
    fingerprint = process.material.fingerprint
    record = {
        "path": process.key_path,
        "stack": BENCH_STACK,
        "process": process.ref,
        "claimed_at": REGISTERED_AT,
    }
    # A fleet seeded before in this Vault already has its records (cas=0 refuses a second).
    made = None
    with contextlib.suppress(hvac.exceptions.InvalidRequest):
        made = kv.create_or_update_secret(
            path=f"{fleet.ledger}/{fingerprint}", secret=record, cas=0, mount_point=fleet.mount
        )
    if made is not None:
        # And its mirror in the record's metadata, as the ledger writes it after every record write.
        version = int(made["data"]["version"])
        holder = (BENCH_STACK, process.ref, REGISTERED_AT)
        written = LedgerRecord(fingerprint, process.key_path, *holder, version)
        kv.update_metadata(
            path=f"{fleet.ledger}/{fingerprint}",
            custom_metadata=mirror_of(written, str(made["data"]["created_time"])),
            delete_version_after=None,
            mount_point=fleet.mount,
        )


def seed(addr: str, token: str, fleet: Fleet, *, concurrency: int = DEFAULT_CONCURRENCY) -> int:
    """Store every key of ``fleet``; returns how many were written. Any failure is raised."""
    vault = client(addr, token, concurrency=concurrency)
    try:
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench-seed") as pool:
            # list() drains the iterator, so the first failed write is raised here.
            list(pool.map(lambda p: seed_one(vault, fleet, p), fleet.processes))
    finally:
        vault.adapter.close()
    return len(fleet.processes)
