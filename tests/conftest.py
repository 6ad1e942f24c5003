"""Shared fixtures: one OpenBao dev server per test session, a key prefix per test."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from tests.openbao import OpenBao


@pytest.fixture(scope="session")
def openbao(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OpenBao]:
    """A real OpenBao dev server on 127.0.0.1 (KV v2 at ``secret/``), shared by the session."""
    server = OpenBao(tmp_path_factory.mktemp("openbao"))
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def vault_prefix() -> str:
    """A key path prefix no other test uses, so tests on the shared server never collide."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def vault_env(openbao: OpenBao, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """VAULT_ADDR/VAULT_TOKEN for the dev server (root), every other Vault variable cleared."""
    for name in list(os.environ):
        if name.startswith(("VAULT_", "BAO_", "KEYFENCE_VAULT_")):
            monkeypatch.delenv(name)
    env = {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": openbao.root_token}
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env
