"""What ``keyfence check`` asks Vault for, as the server sees it: key metadata, never key material.

Keys registered with ``keyfence keys register`` carry the fingerprints of their api key and
their api secret in metadata, so the check (and the program it runs) recognise every copy of
a key without reading a single key version, even with a token that could.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keyfence.keystore import plan_registration, register_key
from keyfence.vault import VaultSettings, connect
from tests.openbao import OpenBao

from .conftest import PROCESSES, SUBACCOUNT, Surface, material, write_fleet
from .proxy import FaultProxy, forward_all

CAN_READ_MATERIAL_NOT_LIST_DETAILS = """
path "secret/data/*" { capabilities = ["read"] }
path "secret/metadata/*" { capabilities = ["read", "list"] }
"""
"""A token that may read every key's material, but not OpenBao's detailed-metadata listing:
the check falls back to per-key metadata reads, and must still not read a key version."""


@pytest.mark.vault
@pytest.mark.parametrize("metadata", ["listed", "per-key"])
def test_check_of_registered_keys_reads_no_key_version(
    openbao: OpenBao, vault_prefix: str, tmp_path: Path, fault_env: pytest.MonkeyPatch, metadata: str
) -> None:
    fleet = write_fleet(tmp_path, vault_prefix)
    with connect(VaultSettings(addr=openbao.addr, token=openbao.root_token, timeout=5.0)) as client:
        for process, (_, permissions) in PROCESSES.items():
            registration = plan_registration(
                f"{SUBACCOUNT}/{process}", venue="futures", permissions=permissions, prefix=vault_prefix
            )
            register_key(client, registration, material(vault_prefix, process))
    # Both tokens may read material: only the keys' own metadata keeps the check from it.
    token = openbao.root_token if metadata == "listed" else openbao.token(CAN_READ_MATERIAL_NOT_LIST_DETAILS)
    with FaultProxy(openbao.addr, forward_all) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        fault_env.setenv("VAULT_TOKEN", token)
        Surface("cli").passes(fleet.spec)
    asked = [path for path in proxy.counts if path.startswith("/v1/secret/")]
    # The keys' metadata came from OpenBao's folder listing, or from a metadata read per key.
    endpoint = "detailed-metadata" if metadata == "listed" else "metadata"
    metadata_of_keys = f"/v1/secret/{endpoint}/{vault_prefix}/"
    assert any(path.startswith(metadata_of_keys) for path in asked), asked
    key_reads = [path for path in asked if path.startswith(f"/v1/secret/data/{vault_prefix}/")]
    assert key_reads == [], f"keyfence check read key material: {key_reads}"
