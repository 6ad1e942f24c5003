"""Fixtures of the leak tests: the canary fleet (once per module) and DEBUG log capture (every test)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.leaks.canary import CanaryFleet, LogCapture, debug_logging, register_canary_fleet
from tests.openbao import OpenBao

NO_FINGERPRINT = "main/books"
"""The key whose metadata fingerprint is removed after registration: to fingerprint it, ``keyfence check``
must read its material from Vault, the one place check mode touches material at all."""


@pytest.fixture(scope="module")
def canary_fleet(openbao: OpenBao, tmp_path_factory: pytest.TempPathFactory) -> Iterator[CanaryFleet]:
    with debug_logging() as capture:
        fleet = register_canary_fleet(openbao, tmp_path_factory.mktemp("leaks"))
    fleet.assert_clean("log records while registering", capture.text)
    path = fleet.path_of(NO_FINGERPRINT)
    custom = openbao.client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=fleet.mount)["data"][
        "custom_metadata"
    ]
    openbao.set_custom_metadata(
        path, {k: v for k, v in custom.items() if k != "fingerprint"}, mount=fleet.mount
    )
    yield fleet


@pytest.fixture(autouse=True)
def logs(monkeypatch: pytest.MonkeyPatch) -> Iterator[LogCapture]:
    """DEBUG for every logger and KEYFENCE_DEBUG=1 for the whole test (searched by the hook below)."""
    monkeypatch.setenv("KEYFENCE_DEBUG", "1")
    with debug_logging() as capture:
        yield capture


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """After each test that has the canary fleet, search its log records: a leak there fails the test."""
    result = yield
    funcargs = getattr(item, "funcargs", {})
    fleet, capture = funcargs.get("canary_fleet"), funcargs.get("logs")
    if isinstance(fleet, CanaryFleet) and isinstance(capture, LogCapture):
        fleet.assert_clean(f"log records of {item.name}", capture.text)
    return result
