"""Fixtures of the tests that use a KV v2 mount of their own on the session's OpenBao."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from keyfence.vault import KV2Client, VaultSettings, connect
from tests.openbao import OpenBao


@pytest.fixture
def mount(openbao: OpenBao) -> str:
    """A KV v2 mount of the test's own: whole-mount scans and listings see only this test's keys."""
    return openbao.enable_secrets("kv", f"kv{uuid.uuid4().hex[:10]}", {"version": "2"})


@pytest.fixture
def root(openbao: OpenBao) -> Iterator[KV2Client]:
    """A client with the root token (a module may define its own ``root`` instead)."""
    with connect(VaultSettings(addr=openbao.addr, token=openbao.root_token, timeout=10.0)) as client:
        yield client
