"""A throwaway OpenBao dev server on 127.0.0.1, and a flaky proxy to put in front of it.

Tests talk to a real server because hvac's and Vault's behaviour (status codes, deleted
versions, check-and-set, policies) is what keyfence's error handling depends on. The
server keeps everything in memory, writes nothing outside its work directory (HOME is
redirected and the root token is not stored) and listens on loopback only.
"""

from __future__ import annotations

import atexit
import http.server
import re
import ssl
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import urlsplit

import hvac
import requests

from keyfence.devvault import LOOPBACK, DevVault, free_port


def wait_for_kv2(client: hvac.Client, mount: str, timeout: float = 30.0) -> None:
    """A new KV v2 mount answers "Upgrading from non-versioned to versioned data" for a moment."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            client.secrets.kv.v2.read_configuration(mount_point=mount)
            return
        except hvac.exceptions.InvalidRequest:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class OpenBao:
    """One ``bao server -dev`` process (keyfence.devvault runs it) and a root hvac client for it."""

    def __init__(self, workdir: Path, *, startup_timeout: float = 30.0) -> None:
        self.workdir = workdir
        self.unseal_key: str | None = None
        self._client: hvac.Client | None = None
        self._dev = DevVault(workdir=workdir, start_timeout=startup_timeout)
        self.root_token = self._dev.root_token

    # ----------------------------------------------------------------- lifecycle

    @property
    def port(self) -> int:
        return self._dev.port

    @property
    def addr(self) -> str:
        return self._dev.addr

    @property
    def client(self) -> hvac.Client:
        """An hvac client holding the root token."""
        if self._client is None:
            self._client = hvac.Client(url=self.addr, token=self.root_token, timeout=10)
        return self._client

    def start(self) -> None:
        self._dev.start()
        atexit.register(self.stop)

    def stop(self) -> None:
        """Terminate the server, waiting for it; kill it if it does not go."""
        self._dev.stop()

    def restart(self) -> None:
        """Stop and start on the same port and token. Dev storage is in memory: data is gone."""
        self._dev.restart()
        self.unseal_key = None
        self._client = None

    @property
    def running(self) -> bool:
        return self._dev.running

    def seal(self) -> None:
        self.client.sys.seal()

    def unseal(self) -> None:
        self.client.sys.submit_unseal_key(self._find_unseal_key())

    def _find_unseal_key(self) -> str:
        """The unseal key from the dev banner, which is printed a moment after the API answers."""
        deadline = time.monotonic() + 10
        while self.unseal_key is None and time.monotonic() < deadline:
            match = re.search(r"Unseal Key: (\S+)", self._dev.log_path.read_text(errors="replace"))
            if match:
                self.unseal_key = match[1]
            else:
                time.sleep(0.05)
        if self.unseal_key is None:
            raise RuntimeError(f"the dev server printed no unseal key; its log:\n{self._dev.log_tail()}")
        return self.unseal_key

    @contextmanager
    def sealed(self) -> Iterator[None]:
        """Sealed inside the block, unsealed again whatever happens (the server is shared)."""
        self.seal()
        try:
            yield
        finally:
            self.unseal()

    # ----------------------------------------------------------------- data

    def put_key(
        self,
        path: str,
        api_key: str,
        api_secret: str,
        *,
        custom_metadata: Mapping[str, str] | None = None,
        mount: str = "secret",
    ) -> int:
        """Store a key pair (a new version) and, if given, replace its custom metadata."""
        version = self.put_data(path, {"api_key": api_key, "api_secret": api_secret}, mount=mount)
        if custom_metadata is not None:
            self.set_custom_metadata(path, custom_metadata, mount=mount)
        return version

    def put_data(self, path: str, data: Mapping[str, Any], *, mount: str = "secret") -> int:
        response = self.client.secrets.kv.v2.create_or_update_secret(
            path=path, secret=dict(data), mount_point=mount
        )
        return int(response["data"]["version"])

    def set_custom_metadata(
        self, path: str, custom_metadata: Mapping[str, str], *, mount: str = "secret"
    ) -> None:
        self.client.secrets.kv.v2.update_metadata(
            path=path, custom_metadata=dict(custom_metadata), delete_version_after=None, mount_point=mount
        )

    # ----------------------------------------------------------------- access

    def policy(self, hcl: str) -> str:
        """Create a policy from HCL under a fresh name and return the name."""
        name = f"p-{uuid.uuid4().hex[:12]}"
        self.client.sys.create_or_update_policy(name=name, policy=hcl)
        return name

    def token(self, hcl: str | None = None, *, ttl: str = "1h", no_default_policy: bool = False) -> str:
        """A child token of root holding the policy in ``hcl`` (plus 'default' unless told not to)."""
        policies = [self.policy(hcl)] if hcl else []
        response = self.client.auth.token.create(
            policies=policies or None, ttl=ttl, no_default_policy=no_default_policy, no_parent=True
        )
        return str(response["auth"]["client_token"])

    def revoke(self, token: str) -> None:
        self.client.auth.token.revoke(token)

    def enable_auth(self, method: str, path: str | None = None) -> str:
        """Enable an auth method once (idempotent across tests sharing the server)."""
        path = path or method
        if f"{path}/" not in self.client.sys.list_auth_methods()["data"]:
            self.client.sys.enable_auth_method(method_type=method, path=path)
        return path

    def enable_secrets(self, engine: str, path: str, options: Mapping[str, str] | None = None) -> str:
        if f"{path}/" not in self.client.sys.list_mounted_secrets_engines()["data"]:
            self.client.sys.enable_secrets_engine(backend_type=engine, path=path, options=dict(options or {}))
            if engine == "kv" and (options or {}).get("version") == "2":
                wait_for_kv2(self.client, path)
        return path

    def approle(self, hcl: str, *, mount: str = "approle") -> tuple[str, str]:
        """A new AppRole holding the policy in ``hcl``; returns (role_id, secret_id)."""
        self.enable_auth("approle", mount)
        role = f"r-{uuid.uuid4().hex[:12]}"
        self.client.auth.approle.create_or_update_approle(
            role_name=role, token_policies=[self.policy(hcl)], token_ttl="10m", mount_point=mount
        )
        role_id = self.client.auth.approle.read_role_id(role_name=role, mount_point=mount)["data"]["role_id"]
        secret_id = self.client.auth.approle.generate_secret_id(role_name=role, mount_point=mount)["data"][
            "secret_id"
        ]
        return str(role_id), str(secret_id)


class Fault(NamedTuple):
    """A scripted answer; ``forward=True`` passes the request on first, then answers ``status``
    anyway (a write that landed although the client saw it fail); ``location`` makes it a redirect
    to that address (a standby node pointing at the active one)."""

    status: int
    forward: bool = False
    location: str | None = None


class FlakyProxy:
    """An HTTP proxy on 127.0.0.1 that answers chosen statuses first, then forwards to OpenBao.

    ``script`` is consumed one entry per request whose path contains ``match``: a status
    code (or a Fault) is answered instead of Vault's response; when the script is empty,
    requests are forwarded to ``upstream`` unchanged. It also serves as a forward proxy
    (requests naming the whole URL), and serves TLS with ``tls=(certificate, key)``.
    """

    def __init__(
        self,
        upstream: str,
        *,
        port: int | None = None,
        match: str = "/v1/",
        tls: tuple[str, str] | None = None,
    ) -> None:
        self.upstream = upstream
        self.tls = tls
        self.port = port or free_port()
        self.match = match
        self.script: list[int | Fault] = []
        self.seen: list[tuple[str, str]] = []
        self.authorizations: list[str | None] = []
        """Each request's Authorization header, in order (Vault ignores a Basic one)."""
        self.on_request: Callable[[str, str], None] | None = None
        self._lock = threading.Lock()
        self._server: http.server.ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def addr(self) -> str:
        return f"{'https' if self.tls else 'http'}://{LOOPBACK}:{self.port}"

    def hits(self, fragment: str) -> int:
        """How many requests (answered or forwarded) had ``fragment`` in their path."""
        with self._lock:
            return sum(1 for _, path in self.seen if fragment in path)

    def start(self) -> None:
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                # A client using us as its forward proxy names the whole URL: keep its path.
                path = self.path
                if "://" in path:
                    path = urlsplit(path)._replace(scheme="", netloc="").geturl()
                with proxy._lock:
                    proxy.seen.append((self.command, self.path))
                    proxy.authorizations.append(self.headers.get("Authorization"))
                    entry = proxy.script.pop(0) if proxy.script and proxy.match in path else None
                fault = Fault(entry) if isinstance(entry, int) else entry
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                if fault is None or fault.forward:
                    with requests.Session() as direct:
                        direct.trust_env = False  # a proxy must not send its own requests to a proxy
                        upstream = direct.request(
                            self.command, proxy.upstream + path, headers=headers, data=body, timeout=10
                        )
                if fault is not None:
                    payload = b'{"errors":["injected by FlakyProxy"]}'
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(payload)))
                    if fault.location:
                        self.send_header("Location", fault.location + path)
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                self.send_response(upstream.status_code)
                for name in ("Content-Type",):
                    if name in upstream.headers:
                        self.send_header(name, upstream.headers[name])
                self.send_header("Content-Length", str(len(upstream.content)))
                self.end_headers()
                self.wfile.write(upstream.content)

            do_GET = do_POST = do_PUT = do_DELETE = do_LIST = do_PATCH = _handle

        self._server = http.server.ThreadingHTTPServer((LOOPBACK, self.port), Handler)
        if self.tls:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(*self.tls)
            self._server.socket = context.wrap_socket(self._server.socket, server_side=True)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="flaky-proxy", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> FlakyProxy:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
