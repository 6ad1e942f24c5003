"""Fixtures for the Vault fault matrix: a fleet in a real OpenBao, and the two ways to meet a fault.

Every fault is checked on both surfaces a person uses: ``keyfence check`` (the command
line, check mode: metadata only) and the Pulumi program itself (``infra/__main__.py``
under the SDK's mocks, deploy mode: key material too). ``surface`` is parametrised, so
each fault test runs once per surface and reports separately.
"""

from __future__ import annotations

import base64
import hashlib
import os
import runpy
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal
from unittest import mock

import hvac
import pulumi
import pytest
import yaml
from typer.testing import CliRunner

from keyfence.check import harness
from keyfence.check.harness import RegisteredResource, collect
from keyfence.cli.app import app
from keyfence.devvault import DevVault
from keyfence.errors import EXIT_INVALID, EXIT_OK
from keyfence.keys import (
    METADATA_FINGERPRINT,
    METADATA_PERMISSIONS,
    METADATA_SUBACCOUNT,
    METADATA_VENUE,
)
from keyfence.material import KeyMaterial
from tests.openbao import OpenBao

ROOT = Path(__file__).resolve().parents[2]
PROGRAM = ROOT / "infra" / "__main__.py"
SPEC_CONFIG = "keyfence:spec"
FAST_RETRIES = {
    "KEYFENCE_VAULT_RETRIES": "3",
    "KEYFENCE_VAULT_BACKOFF": "0.05",
    "KEYFENCE_VAULT_TIMEOUT": "5",
}
"""Small budgets keep fault runs quick; each test that needs other values sets them."""

PROCESSES: dict[str, tuple[str, str]] = {
    "executor": ("trader", "general-full"),
    "feed": ("market-data", "general-read"),
}
"""The fleet: two processes of one futures subaccount, each with its exact permissions."""
SUBACCOUNT = "momentum"

SurfaceName = Literal["cli", "program"]


# --------------------------------------------------------------------------- the fleet


def material(prefix: str, process: str) -> KeyMaterial:
    """Recognisable canary material: a fault message that shows any of it is a leak."""
    digest = hashlib.sha256(f"{prefix}/{process}".encode()).hexdigest()[:20]
    return KeyMaterial(
        api_key=f"CANARYKEY-{digest}", api_secret=base64.b64encode(f"CANARYSECRET-{digest}".encode()).decode()
    )


@dataclass
class Fleet:
    """A two-process spec whose keys live under a prefix of their own, and how to reach them."""

    prefix: str
    spec: Path
    mount: str = "secret"

    def path(self, process: str) -> str:
        return f"{self.prefix}/{SUBACCOUNT}/{process}"

    def ref(self, process: str) -> str:
        """``<mount>/<path>``, how keyfence's messages name a key."""
        return f"{self.mount}/{self.path(process)}"

    def custom_metadata(self, process: str, **override: str | None) -> dict[str, str]:
        """What 'keyfence keys register' records; ``override`` changes fields (None drops one)."""
        _, permissions = PROCESSES[process]
        custom: dict[str, str | None] = {
            METADATA_FINGERPRINT: material(self.prefix, process).fingerprint,
            METADATA_SUBACCOUNT: SUBACCOUNT,
            METADATA_VENUE: "futures",
            METADATA_PERMISSIONS: permissions,
        }
        custom.update(override)
        return {k: v for k, v in custom.items() if v is not None}

    def register(self, client: hvac.Client, *, mount: str | None = None) -> None:
        """Store every key and its metadata, as a correct registration would."""
        for process in PROCESSES:
            key = material(self.prefix, process)
            client.secrets.kv.v2.create_or_update_secret(
                path=self.path(process),
                secret={"api_key": key.api_key, "api_secret": key.api_secret},
                mount_point=mount or self.mount,
            )
            self.set_metadata(client, process)

    def set_metadata(self, client: hvac.Client, process: str, **override: str | None) -> None:
        client.secrets.kv.v2.update_metadata(
            path=self.path(process),
            custom_metadata=self.custom_metadata(process, **override),
            delete_version_after=None,
            mount_point=self.mount,
        )

    def with_mount(self, mount: str) -> Fleet:
        """The same fleet, its spec pointing at another mount."""
        return write_fleet(self.spec.parent, self.prefix, mount=mount)


def write_fleet(directory: Path, prefix: str, *, mount: str = "secret") -> Fleet:
    processes = [
        {"name": name, "role": role, "image": f"ghcr.io/acme/{name}:1.0.0", "permissions": [permission]}
        for name, (role, permission) in PROCESSES.items()
    ]
    data = {
        "version": 1,
        "vault": {"mount": mount, "prefix": prefix},
        "subaccounts": [{"name": SUBACCOUNT, "venue": "futures", "processes": processes}],
    }
    spec = directory / f"fleet-{mount.replace('/', '_')}.yaml"
    spec.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return Fleet(prefix, spec, mount)


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Iterator[None]:
    """Proxies stop themselves: no proxy thread may outlive the test that started it."""
    yield
    stray = [t for t in threading.enumerate() if t.name == "fault-proxy" and t.is_alive()]
    assert not stray, stray


@pytest.fixture
def fault_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.MonkeyPatch]:
    """No Vault variable from the developer's shell, and fast retry settings; returns monkeypatch."""
    for name in list(os.environ):
        if name.startswith(("VAULT_", "BAO_", "KEYFENCE_VAULT_", "KEYFENCE_DEBUG")):
            monkeypatch.delenv(name)
    for name, value in FAST_RETRIES.items():
        monkeypatch.setenv(name, value)
    yield monkeypatch


def point_at(monkeypatch: pytest.MonkeyPatch, addr: str, token: str) -> None:
    monkeypatch.setenv("VAULT_ADDR", addr)
    monkeypatch.setenv("VAULT_TOKEN", token)


@pytest.fixture
def fleet(openbao: OpenBao, vault_prefix: str, tmp_path: Path, fault_env: pytest.MonkeyPatch) -> Fleet:
    """A registered fleet on the shared server, VAULT_* pointing there with the root token."""
    fleet = write_fleet(tmp_path, vault_prefix)
    fleet.register(openbao.client)
    point_at(fault_env, openbao.addr, openbao.root_token)
    return fleet


@pytest.fixture
def dedicated(fault_env: pytest.MonkeyPatch) -> Iterator[DevVault]:
    """A server of this test's own, for faults that break it (sealing, stopping) for good."""
    with DevVault() as server:
        yield server


def root_client(server: DevVault) -> hvac.Client:
    return hvac.Client(url=server.addr, token=server.root_token, timeout=10)


# --------------------------------------------------------------------------- the two surfaces


@dataclass
class Run:
    """What one surface did: its exit code, its message, and what the program declared."""

    surface: SurfaceName
    exit_code: int
    message: str
    """The CLI's stderr, or the text of the program's RunError."""
    stdout: str = ""
    resources: list[RegisteredResource] = field(default_factory=list)
    error: BaseException | None = None


def run_cli(*args: str, stdin: str | None = None) -> Run:
    result = CliRunner().invoke(app, list(args), input=stdin)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return Run("cli", result.exit_code, result.stderr, result.stdout)


@contextmanager
def _recording_monitors() -> Iterator[list[Any]]:
    """Every resource monitor the harness creates, so a failed run can still be asked what it declared."""
    monitors: list[Any] = []

    class Recording(harness._RecordingMonitor):
        def __init__(self) -> None:
            super().__init__()
            monitors.append(self)

    with mock.patch.object(harness, "_RecordingMonitor", Recording):
        yield monitors


def run_program(spec: Path) -> Run:
    """``infra/__main__.py`` as ``pulumi up`` runs it (deploy mode), under the SDK's mocks."""
    saved_path = list(sys.path)
    error: BaseException | None = None
    with _recording_monitors() as monitors:
        try:
            collect(
                lambda: runpy.run_path(str(PROGRAM), run_name="__main__"), config={SPEC_CONFIG: str(spec)}
            )
        except pulumi.RunError as exc:
            error = exc
        finally:
            sys.path[:] = saved_path
    (monitor,) = monitors
    return Run(
        "program",
        EXIT_INVALID if error is not None else EXIT_OK,
        str(error) if error is not None else "",
        resources=list(monitor.registered),
        error=error,
    )


@dataclass(frozen=True)
class Surface:
    """``keyfence check --spec`` (check mode) or the Pulumi program (deploy mode)."""

    name: SurfaceName

    @property
    def mode(self) -> Literal["check", "deploy"]:
        return "check" if self.name == "cli" else "deploy"

    def run(self, spec: Path) -> Run:
        return run_cli("check", "--spec", str(spec)) if self.name == "cli" else run_program(spec)

    def fails(self, spec: Path, *fragments: str) -> str:
        """Run, expect one clear failure holding every fragment, and return its message."""
        run = self.run(spec)
        expect_failure(run, *fragments)
        return run.message

    def passes(self, spec: Path) -> Run:
        run = self.run(spec)
        expect_success(run)
        return run


@pytest.fixture(params=["cli", "program"])
def surface(request: pytest.FixtureRequest) -> Surface:
    return Surface(request.param)


def expect_failure(run: Run, *fragments: str) -> None:
    """Exit 2 (or a RunError), one message naming what failed and what to do, nothing declared.

    For the command line, 'one message' means: stderr starts with the single ``error:``
    line, and any further line is an indented problem of that same message; no retry
    notice, no traceback, nothing on stdout.
    """
    text = run.message
    assert run.exit_code == EXIT_INVALID, f"{run.surface}: exit {run.exit_code}\n{text}\n{run.stdout}"
    assert "Traceback" not in text and 'File "' not in text, text
    assert "CANARY" not in text + run.stdout, "key material in a fault message"
    for fragment in fragments:
        assert fragment in text, f"{run.surface}: {fragment!r} not in:\n{text}"
    if run.surface == "cli":
        lines = text.rstrip("\n").split("\n")
        assert lines[0].startswith("error: "), text
        assert all(line.startswith("  - ") for line in lines[1:]), text
        assert run.stdout == ""
    else:
        assert isinstance(run.error, pulumi.RunError)
        assert run.resources == [], [r.urn for r in run.resources]


def expect_success(run: Run) -> None:
    assert run.exit_code == EXIT_OK, f"{run.surface}: exit {run.exit_code}\n{run.message}\n{run.stdout}"
    assert "CANARY" not in run.message + run.stdout
    if run.surface == "program":
        deployments = [r for r in run.resources if r.type == "kubernetes:apps/v1:Deployment"]
        assert len(deployments) == len(PROCESSES)
    else:
        assert run.message == "", "a passing check prints nothing on stderr"
