"""A loopback HTTP proxy in front of a Vault that injects faults request by request.

Faults are decided per request by a rule the test gives (a scripted status, a reset
connection, a response held past the client's timeout, the whole server going away), so
every fault run is deterministic: nothing depends on how fast the machine is. The proxy
listens on 127.0.0.1 only, answers each request on its own connection (HTTP/1.0), and is
bounded: every wait is cut short when it stops, and it stops itself after ``lifetime``
seconds even if a test forgets to.
"""

from __future__ import annotations

import http.client
import http.server
import socket
import socketserver
import struct
import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

from tests.openbao import LOOPBACK

FaultKind = Literal["status", "reset", "hold", "down", "truncate"]
VAULT_ERROR_BODY = b'{"errors":["injected by FaultProxy"]}'


@dataclass(frozen=True)
class Fault:
    """What the proxy does to one request instead of forwarding it.

    - ``status``: answer ``status`` with a Vault-style error body, never reaching Vault;
    - ``reset``: drop the connection with a TCP reset before answering;
    - ``hold``: keep the request ``seconds`` without answering (past the client's timeout),
      then close the connection;
    - ``down``: stop listening for good and reset this connection, as a server that died
      mid-run (every later connection is refused);
    - ``truncate``: forward, then send Vault's headers and half its body and reset, as a
      server that died while answering.
    """

    kind: FaultKind
    status: int = 503
    seconds: float = 0.0
    body: bytes = VAULT_ERROR_BODY
    content_type: str = "application/json"


Rule = Callable[[str, str, int], Fault | None]
"""``(method, path, n)`` -> a fault, or ``None`` to forward; ``n`` counts requests to that path (1-based)."""


def forward_all(method: str, path: str, n: int) -> Fault | None:
    return None


def each_path_fails(times: int, fault: Fault, *, match: str = "/v1/") -> Rule:
    """Every path containing ``match`` meets ``fault`` on its first ``times`` requests, then passes.

    Per path rather than in total, so concurrent reads each see exactly ``times`` failures
    and the outcome depends on the retry budget alone.
    """

    def rule(method: str, path: str, n: int) -> Fault | None:
        return fault if match in path and n <= times else None

    return rule


def matching(fragment: str, fault: Fault) -> Rule:
    """``fault`` for every request whose path contains ``fragment``; the rest pass."""

    def rule(method: str, path: str, n: int) -> Fault | None:
        return fault if fragment in path else None

    return rule


class FaultProxy:
    """The proxy; use it as a context manager. ``addr`` is what VAULT_ADDR should name."""

    def __init__(self, upstream: str, rule: Rule = forward_all, *, lifetime: float = 60.0) -> None:
        parts = urlsplit(upstream)
        if parts.hostname != LOOPBACK or parts.port is None:
            raise ValueError(f"the proxy only fronts a server on {LOOPBACK}, not {upstream!r}")
        self._upstream_port = parts.port
        self.rule = rule
        self.lifetime = lifetime
        self.counts: Counter[str] = Counter()
        self.log: list[tuple[str, str, str]] = []
        """``(method, path, outcome)`` per request, outcome a fault kind or ``forwarded``."""
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._down = False
        self._server = _Server((LOOPBACK, 0), _handler_for(self))
        self.port = int(self._server.server_address[1])
        self._serving: threading.Thread | None = None
        self._watchdog = threading.Timer(lifetime, self.stop)
        self._watchdog.daemon = True

    @property
    def addr(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def outcomes(self, fragment: str = "") -> list[str]:
        with self._lock:
            return [outcome for _, path, outcome in self.log if fragment in path]

    def start(self) -> FaultProxy:
        self._serving = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.02}, name="fault-proxy", daemon=True
        )
        self._serving.start()
        self._watchdog.start()
        return self

    def stop(self) -> None:
        """Stop listening, end every held request; safe to call twice and from any thread."""
        self._stopping.set()
        self._watchdog.cancel()
        self._go_down()

    def _go_down(self) -> None:
        with self._lock:
            if self._down:
                return
            self._down = True
        if self._serving is not None:
            self._server.shutdown()
            self._serving.join(timeout=5)
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ----------------------------------------------------------------- per request

    def _decide(self, method: str, path: str) -> Fault | None:
        with self._lock:
            self.counts[path] += 1
            fault = self.rule(method, path, self.counts[path])
            self.log.append((method, path, fault.kind if fault else "forwarded"))
            return fault

    def _forward(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, str, bytes]:
        conn = http.client.HTTPConnection(LOOPBACK, self._upstream_port, timeout=10)
        try:
            conn.request(method, path, body=body or None, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheader("Content-Type") or "application/json", response.read()
        finally:
            conn.close()

    def _hold(self, seconds: float) -> None:
        self._stopping.wait(seconds)


class _Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A reset or held connection ends in socket errors by design; they are not failures."""


def _reset(sock: socket.socket) -> None:
    """Close with a TCP RST instead of a FIN: the client sees 'connection reset by peer'."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.close()
    except OSError:
        pass


def _handler_for(proxy: FaultProxy) -> type[http.server.BaseHTTPRequestHandler]:
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _handle(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            fault = proxy._decide(self.command, self.path)
            self.close_connection = True
            if fault is not None and fault.kind == "down":
                proxy._go_down()
                _reset(self.connection)
                return
            if fault is not None and fault.kind == "reset":
                _reset(self.connection)
                return
            if fault is not None and fault.kind == "hold":
                proxy._hold(fault.seconds)
                _reset(self.connection)
                return
            if fault is not None and fault.kind == "status":
                status, kind, payload = fault.status, fault.content_type, fault.body
            else:
                headers = {
                    k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")
                }
                status, kind, payload = proxy._forward(self.command, self.path, headers, body)
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if fault is not None and fault.kind == "truncate":
                self.wfile.write(payload[: len(payload) // 2])
                self.wfile.flush()
                _reset(self.connection)
                return
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_DELETE = do_LIST = do_PATCH = _handle

    return Handler
