"""Transient Vault faults: retried with backoff, successful when Vault recovers within the budget.

A proxy fails each path a chosen number of times, then forwards: with a budget
(KEYFENCE_VAULT_RETRIES, attempts in total) one larger than the failures the run
succeeds; with a budget equal to them it fails, naming the address and the attempts.
The proxy counts the attempts it saw, so the budget is proven exact, not just large
enough. Nothing here measures time: waits are configuration (KEYFENCE_VAULT_BACKOFF),
and the retry notices are checked for the waits they announce.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from keyfence.devvault import DevVault
from keyfence.errors import EXIT_INVALID, EXIT_OK
from tests.faults.conftest import (
    ROOT,
    Fleet,
    Surface,
    material,
    point_at,
    root_client,
    run_cli,
    write_fleet,
)
from tests.faults.proxy import Fault, FaultProxy, each_path_fails
from tests.openbao import OpenBao, free_port

pytestmark = pytest.mark.vault

TRANSIENT = {
    "503": (Fault("status", 503), "Vault at {addr} failed while trying to read the metadata of"),
    "502": (Fault("status", 502), "Vault at {addr} failed while trying to read the metadata of"),
    "reset": (Fault("reset"), "cannot reach Vault at {addr}: the connection was refused or dropped"),
    "truncated": (Fault("truncate"), "Vault at {addr} dropped the connection in the middle of its answer"),
}
"""Each transient fault, and how its message begins once the budget is spent."""


@pytest.fixture(params=sorted(TRANSIENT))
def transient(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def attempts_per_path(proxy: FaultProxy) -> dict[str, int]:
    """How many times each fleet path was asked for: the budget as the server saw it."""
    return {path: n for path, n in proxy.counts.items() if path.startswith("/v1/secret/")}


def test_recovers_within_the_budget(
    surface: Surface, transient: str, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    fault, _ = TRANSIENT[transient]
    fault_env.setenv("KEYFENCE_VAULT_RETRIES", "3")
    with FaultProxy(openbao.addr, each_path_fails(2, fault)) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        surface.passes(fleet.spec)
    counts = attempts_per_path(proxy)
    # Each read rides out its two faults (3 requests). keyfence check reads key metadata and the
    # ledger itself, for the facts it tells the pack, and then the program reads them once more.
    # A folder's detailed-metadata listing (OpenBao) counts as one read: the check lists each
    # folder once, whether for its own keys or for every other key under the prefix.
    expected = {3} if surface.mode == "deploy" else {3, 4}
    assert counts and set(counts.values()) <= expected and 3 in set(counts.values()), counts
    reads = {"check": "metadata/", "deploy": "/data/"}[surface.mode]
    assert any(reads in path for path in counts), "the surface's own reads were the ones retried"


def test_fails_when_the_budget_is_spent(
    surface: Surface, transient: str, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    fault, says = TRANSIENT[transient]
    fault_env.setenv("KEYFENCE_VAULT_RETRIES", "3")
    with FaultProxy(openbao.addr, each_path_fails(3, fault)) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        message = surface.fails(fleet.spec, says.format(addr=proxy.addr), "(3 attempts)")
    assert fleet.ref("executor") in message or fleet.ref("feed") in message
    # keyfence check reads key metadata and the ledger for the pack's facts while the program
    # reads them too: two readers, each within its own budget.
    readers = 2 if surface.mode == "check" else 1
    assert max(attempts_per_path(proxy).values()) <= 3 * readers, "no reader asked for more than the budget"


@pytest.mark.parametrize("budget", [1, 2, 6])
def test_the_budget_is_keyfence_vault_retries(
    surface: Surface, budget: int, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    """budget-1 failures are ridden out; budget failures are not: the variable is the budget."""
    fault_env.setenv("KEYFENCE_VAULT_RETRIES", str(budget))
    fault_env.setenv("KEYFENCE_VAULT_BACKOFF", "0")
    if budget > 1:
        with FaultProxy(openbao.addr, each_path_fails(budget - 1, Fault("status", 503))) as proxy:
            fault_env.setenv("VAULT_ADDR", proxy.addr)
            surface.passes(fleet.spec)
        # keyfence check reads each key for the pack's facts, then the program reads it once more.
        assert max(attempts_per_path(proxy).values()) == budget + (surface.mode == "check")
    with FaultProxy(openbao.addr, each_path_fails(budget, Fault("status", 503))) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        tries = f"({budget} attempts)" if budget > 1 else "HTTP 503: injected by FaultProxy; check"
        surface.fails(fleet.spec, f"Vault at {proxy.addr} failed", tries)
    readers = 2 if surface.mode == "check" else 1
    assert budget <= max(attempts_per_path(proxy).values()) <= budget * readers


def test_default_budget_is_four_attempts(
    surface: Surface, fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    fault_env.delenv("KEYFENCE_VAULT_RETRIES")
    with FaultProxy(openbao.addr, each_path_fails(3, Fault("status", 503))) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        surface.passes(fleet.spec)
    with FaultProxy(openbao.addr, each_path_fails(4, Fault("status", 503))) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        surface.fails(fleet.spec, f"Vault at {proxy.addr} failed", "(4 attempts)")


def test_backoff_waits_are_capped_by_keyfence_vault_backoff(
    fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Every retry notice announces a wait no longer than KEYFENCE_VAULT_BACKOFF."""
    fault_env.setenv("KEYFENCE_VAULT_RETRIES", "6")
    fault_env.setenv("KEYFENCE_VAULT_BACKOFF", "0.02")
    with (
        caplog.at_level(logging.WARNING, logger="keyfence.vault.retry"),
        FaultProxy(openbao.addr, each_path_fails(5, Fault("status", 503))) as proxy,
    ):
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        Surface("program").passes(fleet.spec)
    waits = [announced_wait(r) for r in caplog.records if r.name == "keyfence.vault.retry"]
    assert len(waits) == 5 * len(attempts_per_path(proxy)), "five retries of every read"
    assert all(0 <= wait <= 0.02 for wait in waits), waits


def announced_wait(record: logging.LogRecord) -> float:
    """The wait a retry notice announces: its last argument ('... in %.1fs')."""
    assert isinstance(record.args, tuple)
    wait = record.args[-1]
    assert isinstance(wait, float)
    return wait


@pytest.mark.parametrize("value", ["-1", "61", "soon"])
def test_backoff_setting_is_checked(
    surface: Surface, fleet: Fleet, fault_env: pytest.MonkeyPatch, value: str
) -> None:
    fault_env.setenv("KEYFENCE_VAULT_BACKOFF", value)
    surface.fails(
        fleet.spec,
        "invalid Vault settings in the environment",
        f"KEYFENCE_VAULT_BACKOFF={value!r} must be a number of seconds between 0 and 60",
    )


def test_register_rides_out_a_flaky_write(
    fleet: Fleet, openbao: OpenBao, fault_env: pytest.MonkeyPatch
) -> None:
    """5xx on the write itself (never forwarded, so nothing landed): retried, one version written."""
    write = f"/v1/secret/data/{fleet.prefix}/momentum/new"

    def rule(method: str, path: str, n: int) -> Fault | None:
        return Fault("status", 503) if path == write and n <= 2 else None

    key = material(fleet.prefix, "new")
    with FaultProxy(openbao.addr, rule) as proxy:
        fault_env.setenv("VAULT_ADDR", proxy.addr)
        run = run_cli(
            "keys",
            "register",
            "momentum/new",
            "--venue",
            "futures",
            "--permissions",
            "general-full",
            "--prefix",
            fleet.prefix,
            stdin=f"{key.api_key}\n{key.api_secret}\n",
        )
    assert run.exit_code == EXIT_OK, run.message
    assert f"registered secret/{fleet.prefix}/momentum/new version 1" in run.stdout
    assert proxy.outcomes(write) == ["status", "status", "forwarded"]


# =========================================================================== a real server coming back


class DevVaultRevival:
    """Start a stopped dev server again on its port and token, with the fleet registered anew
    (a dev server keeps nothing across a restart)."""

    def __init__(self, server: DevVault, fleet: Fleet) -> None:
        self.server = server
        self.fleet = fleet
        self.revived: DevVault | None = None

    def __call__(self) -> None:
        self.revived = DevVault(port=self.server.port, root_token=self.server.root_token).start()
        self.fleet.register(root_client(self.revived))

    def stop(self) -> None:
        if self.revived is not None:
            self.revived.stop()


class _ComesBackAfter(logging.Handler):
    """Start the server again when one read announces its ``attempt``-th try: deterministic,
    because the client logs the notice before it waits and tries again."""

    def __init__(self, attempt: int, revive: DevVaultRevival) -> None:
        super().__init__(logging.WARNING)
        self.attempt = attempt
        self.revive = revive

    def emit(self, record: logging.LogRecord) -> None:
        announced = record.args[4] if isinstance(record.args, tuple) and len(record.args) > 4 else None
        if announced == self.attempt and self.revive.revived is None:
            self.revive()


@pytest.fixture
def revival(dedicated: DevVault, tmp_path: Path, fault_env: pytest.MonkeyPatch) -> Iterator[DevVaultRevival]:
    fleet = write_fleet(tmp_path, "kraken")
    point_at(fault_env, dedicated.addr, dedicated.root_token)
    fault_env.setenv("KEYFENCE_VAULT_CONCURRENCY", "1")
    dedicated.stop()
    revival = DevVaultRevival(dedicated, fleet)
    try:
        yield revival
    finally:
        revival.stop()


@pytest.mark.slow
@pytest.mark.parametrize(("budget", "recovers"), [(4, True), (2, False)])
def test_real_server_back_within_the_budget(
    surface: Surface, revival: DevVaultRevival, fault_env: pytest.MonkeyPatch, budget: int, recovers: bool
) -> None:
    """Two attempts are refused by a stopped OpenBao; it is back for the third, if there is one."""
    fault_env.setenv("KEYFENCE_VAULT_RETRIES", str(budget))
    hook = _ComesBackAfter(3, revival)
    logger = logging.getLogger("keyfence.vault.retry")
    logger.addHandler(hook)
    try:
        if recovers:
            surface.passes(revival.fleet.spec)
        else:
            surface.fails(
                revival.fleet.spec,
                f"cannot reach Vault at {revival.server.addr}",
                "(2 attempts)",
                "that Vault is running",
            )
    finally:
        logger.removeHandler(hook)
    assert (revival.revived is not None) is recovers


# =========================================================================== the real command, one line


def keyfence(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The installed console script in a process of its own: stderr exactly as a person sees it."""
    script = Path(sys.executable).parent / "keyfence"
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "KEYFENCE_"))}
    return subprocess.run(
        [str(script), *args],
        env={**clean, **env},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.slow
def test_console_script_says_it_in_one_line(fleet: Fleet) -> None:
    """Found by this suite: each retry was printed raw by Python's last-resort log handler
    before the error; now the error is the only line, and --debug shows the retries."""
    addr = f"http://127.0.0.1:{free_port()}"
    env = {
        "VAULT_ADDR": addr,
        "VAULT_TOKEN": "t",
        "KEYFENCE_VAULT_RETRIES": "3",
        "KEYFENCE_VAULT_BACKOFF": "0",
    }
    quiet = keyfence("check", "--spec", str(fleet.spec), env=env)
    assert quiet.returncode == EXIT_INVALID
    (line,) = quiet.stderr.splitlines()
    assert line.startswith(
        f"error: cannot reach Vault at {addr}: the connection was refused or dropped (3 attempts)"
    )
    assert quiet.stdout == ""

    listed = keyfence("keys", "list", "--prefix", fleet.prefix, env=env)
    assert listed.returncode == EXIT_INVALID
    (line,) = listed.stderr.splitlines()
    assert line.startswith(f"error: cannot reach Vault at {addr}")

    debug = keyfence("--debug", "check", "--spec", str(fleet.spec), env=env)
    lines = debug.stderr.splitlines()
    assert debug.returncode == EXIT_INVALID and "Traceback" not in debug.stderr
    notices = [line.split(";")[-1].strip() for line in lines[:-1]]
    # Both keys may be read at once, so each announces its own retries.
    assert notices.count("attempt 2 of 3 in 0.0s") == notices.count("attempt 3 of 3 in 0.0s") >= 1, notices
    assert set(notices) == {"attempt 2 of 3 in 0.0s", "attempt 3 of 3 in 0.0s"}, notices
    assert all(
        line.startswith(f"warning: Vault at {addr}: could not read the metadata of") for line in lines[:-1]
    )
    assert lines[-1].startswith(f"error: cannot reach Vault at {addr}")
