"""The one adapter between keyfence and hvac: sessions, login, retries and error translation."""

from __future__ import annotations

import functools
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeVar
from urllib.parse import urlsplit, urlunsplit

import hvac
import hvac.exceptions
import requests
import tenacity

from ..errors import KeyfenceError, RefusedError
from .errors import (
    KeyAccessDeniedError,
    KeyNotFoundError,
    KeyVersionGoneError,
    KVMountError,
    VaultRequestError,
    VaultUnavailableError,
)
from .pooled import DowngradedRedirectError
from .settings import BACKOFF_INITIAL, VaultSettings

log = logging.getLogger("keyfence.vault")
retry_log = logging.getLogger("keyfence.vault.retry")
"""Retry notices: their own logger, so a command line can keep them out of a one-message failure."""


@dataclass(frozen=True)
class Operation:
    """One request, described the way its error message needs it."""

    action: str
    """What we tried, as a verb phrase: 'read the metadata of'."""
    mount: str
    ref: str
    """``<mount>/<path>`` of the key (or prefix)."""
    capability: str
    api_path: str
    """The ACL path the capability is needed on: ``<mount>/metadata/<path>``."""
    secrets: tuple[str, ...] = ()
    """Strings to scrub from anything Vault echoes back."""

    @property
    def verb(self) -> str:
        return self.action.split(" ", 1)[0]


T = TypeVar("T")
R = TypeVar("R")
_SEALED = re.compile(r"\bsealed\b", re.I)
_CAS_MISMATCH = re.compile(r"check-and-set", re.I)
NO_ROUTE = re.compile(r"no handler for route", re.I)
_INVALID_TOKEN = re.compile(r"invalid token|bad token|token (is )?expired", re.I)
_POLICY_DENIAL = re.compile(r"\d+ errors? occurred", re.I)
"""Vault wraps an ACL denial of a live token in a multierror ('1 error occurred: permission denied');
a token it does not know at all gets a bare 'permission denied' (or 'invalid token')."""
_PLAIN_HTTP = re.compile(r"WRONG_VERSION_NUMBER|wrong version number|record layer failure|http request", re.I)
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9.+-]{1,40}/[A-Za-z0-9.+-]{1,60}$")

_UNKNOWN: Final = ""
"""A mount finding meaning 'could not look': the token may not read the mount's settings."""


def _scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret:
            text = text.replace(secret, "<redacted>")
    return text


def _vault_said(exc: hvac.exceptions.VaultError, secrets: Iterable[str]) -> str:
    """Vault's own error strings, flattened and bounded, with any echoed credential removed."""
    errors = exc.errors if isinstance(exc.errors, list) else []
    text = "; ".join(" ".join(str(e).replace("*", " ").split()) for e in errors if str(e).strip())
    text = _scrub(text, secrets)
    return text[:300] + ("..." if len(text) > 300 else "")


def _ssl_reason(exc: BaseException) -> str:
    """The OpenSSL reason code (``WRONG_VERSION_NUMBER``), never the whole nested repr."""
    match = re.search(r"\[SSL: ([A-Z0-9_]+)\]", str(exc))
    return match[1] if match else type(exc).__name__


def errors_text(exc: hvac.exceptions.VaultError) -> str:
    return " ".join(map(str, exc.errors)) if isinstance(exc.errors, list) else ""


TransportT = TypeVar("TransportT", bound="Transport")


class Transport:
    """The adapter every engine method goes through: one hvac client, one pooled session,
    retries limited to failures safe to repeat, and errors that name the address and key.

    Safe to share between threads: hvac keeps no per-request state and the session's
    connection pool is thread-safe.
    """

    def __init__(
        self,
        client: hvac.Client,
        settings: VaultSettings,
        session: requests.Session,
        *,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self.settings = settings
        self.session = session
        self._sleep = sleep
        self._local = threading.local()
        self._lock = threading.Lock()
        self._token_rejected: bool | None = None
        self._mount_findings: dict[str, str | None] = {}
        session.hooks["response"].append(self._record_status)

    def __repr__(self) -> str:
        return f"KV2Client(addr={self.addr!r}, auth={self.settings.auth!r})"

    def __enter__(self: TransportT) -> TransportT:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    @property
    def addr(self) -> str:
        """Vault's address as messages show it (never a password from VAULT_ADDR)."""
        return self.settings.shown_addr

    @property
    def hvac_client(self) -> hvac.Client:
        """The underlying hvac client, for what this class does not wrap."""
        return self._client

    def read_many(self, fn: Callable[[T], R], items: Iterable[T]) -> list[R | KeyfenceError]:
        """:func:`read_many` with this client's concurrency."""
        return read_many(fn, items, self.settings.concurrency)

    # ----------------------------------------------------------------- login

    def login(self) -> None:
        """Exchange AppRole, Kubernetes or JWT credentials for a token; token auth needs nothing."""
        s = self.settings
        mount = s.mount_for_auth
        if mount is None:
            return
        auth = self._client.auth
        login: Callable[[], Any]
        if s.auth == "approle":
            login = functools.partial(
                auth.approle.login, role_id=s.role_id, secret_id=s.secret_id, mount_point=mount
            )
            check = "KEYFENCE_VAULT_ROLE_ID and KEYFENCE_VAULT_SECRET_ID"
        elif s.auth == "kubernetes":
            login = functools.partial(auth.kubernetes.login, role=s.role, jwt=s.jwt, mount_point=mount)
            check = "KEYFENCE_VAULT_ROLE and the service account token"
        else:
            login = functools.partial(auth.jwt.jwt_login, role=s.role, jwt=s.jwt, path=mount)
            check = "KEYFENCE_VAULT_ROLE and KEYFENCE_VAULT_JWT"
        secrets = tuple(x for x in (s.role_id, s.secret_id, s.jwt) if x)
        op = Operation(
            f"log in with {s.auth} at",
            mount,
            f"auth/{mount}",
            "update",
            f"auth/{mount}/login",
            secrets=secrets,
        )
        try:
            self._call(op, login, translate_missing=False, translate_client_errors=False)
        except hvac.exceptions.VaultError as exc:
            said = _vault_said(exc, secrets)
            if isinstance(exc, hvac.exceptions.InvalidPath) or NO_ROUTE.search(said):
                reason = (
                    f"no {s.auth} auth method is mounted at auth/{mount}; "
                    "set KEYFENCE_VAULT_AUTH_MOUNT to where it is mounted"
                )
            elif isinstance(exc, hvac.exceptions.Forbidden) and said.lower() in ("", "permission denied"):
                # Vault answers a login to an unmounted path exactly like refused credentials.
                reason = (
                    f"permission denied: either no {s.auth} auth method is mounted at auth/{mount} "
                    f"(set KEYFENCE_VAULT_AUTH_MOUNT) or Vault refused the credentials (check {check})"
                )
            else:
                reason = f"Vault refused the credentials ({said or type(exc).__name__}); check {check}"
            raise VaultUnavailableError(
                f"{s.auth} login to Vault at {self.addr} (auth/{mount}/login) failed: {reason}"
            ) from None

    # ----------------------------------------------------------------- plumbing

    def _record_status(self, response: requests.Response, *args: Any, **kwargs: Any) -> None:
        self._local.status = response.status_code

    def _status(self) -> int | None:
        status: int | None = getattr(self._local, "status", None)
        return status

    def _call(
        self,
        op: Operation,
        fn: Callable[[], T],
        *,
        translate_missing: bool = True,
        translate_client_errors: bool = True,
    ) -> T:
        """Run one request, retrying transient failures; translate what still fails.

        ``translate_missing``/``translate_client_errors`` let a caller that knows more
        (deleted versions, empty listings, logins) handle 404s or all 4xx itself.
        """
        attempts = 0

        def attempt() -> T:
            nonlocal attempts
            attempts += 1
            self._local.status = None
            return fn()

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.settings.retries),
            wait=self._backoff(),
            retry=tenacity.retry_if_exception(self._transient),
            before_sleep=lambda state: self._log_retry(op, state),
            sleep=self._sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except hvac.exceptions.VaultError as exc:
            status = self._status()
            server_side = _server_side(exc, status)
            if isinstance(exc, hvac.exceptions.InvalidPath) and not translate_missing:
                raise
            if not (translate_client_errors or server_side):
                raise
            raise self._translated(op, exc, status, attempts) from None
        except requests.RequestException as exc:
            raise self._unreachable(op, exc, attempts) from None

    def _vault_json(self, op: Operation, response: Any) -> dict[str, Any]:
        """The JSON object a successful read returns; anything else did not come from Vault.

        hvac hands back the raw response when a 2xx body is not JSON (a login page, a proxy's
        placeholder); reading that as 'no data' would tell people to re-register a good key.
        """
        if isinstance(response, dict):
            return response
        status = getattr(response, "status_code", None)
        headers = getattr(response, "headers", None)
        kind = str(headers.get("Content-Type") or "") if headers is not None else ""
        kind = kind.split(";", 1)[0].strip()
        shown = f"HTTP {status}" if isinstance(status, int) else "a response"
        if status == 204:
            shown += " and no body"
        elif _MEDIA_TYPE.match(kind):
            shown += f" ({kind})"
        raise VaultUnavailableError(
            f"Vault at {self.addr} answered the request to {op.action} {op.ref} with {shown} instead of "
            "Vault's JSON; check that VAULT_ADDR is the address of Vault's API, not of a web page, proxy or "
            "load balancer in front of it"
        )

    def _backoff(self) -> Callable[[tenacity.RetryCallState], float]:
        """Exponential waits from 0.1s, jittered, never longer than ``settings.backoff``.

        Jitter spreads the retries of many concurrent reads; the cap is applied to the sum
        so that KEYFENCE_VAULT_BACKOFF really is the longest wait.
        """
        cap = self.settings.backoff
        first = min(BACKOFF_INITIAL, cap)
        grow = tenacity.wait_exponential(multiplier=first, max=cap)
        jitter = tenacity.wait_random(0, first)
        return lambda state: min(cap, grow(state) + jitter(state))

    def _transient(self, exc: BaseException) -> bool:
        """Connection failures and 5xx are worth another attempt; a 4xx never changes on its own."""
        if isinstance(exc, requests.exceptions.SSLError):
            return False
        if isinstance(exc, (requests.ConnectionError, requests.exceptions.ChunkedEncodingError)):
            # Refused, reset, or cut off in the middle of Vault's answer: all gone by the next try.
            return True
        if isinstance(exc, hvac.exceptions.VaultDown):
            # A sealed Vault needs an operator, not a retry.
            return not _SEALED.search(errors_text(exc))
        if isinstance(exc, (hvac.exceptions.InternalServerError, hvac.exceptions.BadGateway)):
            return True
        if isinstance(exc, hvac.exceptions.UnexpectedError):
            status = self._status()
            return status is not None and status >= 500
        return False

    def _log_retry(self, op: Operation, state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        status = self._status()
        what = f"HTTP {status}" if status else type(exc).__name__
        delay = state.next_action.sleep if state.next_action else 0.0
        retry_log.warning(
            "Vault at %s: could not %s %s (%s); attempt %d of %d in %.1fs",
            self.addr,
            op.action,
            op.ref,
            what,
            state.attempt_number + 1,
            self.settings.retries,
            delay,
        )

    def _unreachable(
        self, op: Operation, exc: requests.RequestException, attempts: int
    ) -> VaultUnavailableError:
        addr = self.addr
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        during = f"while trying to {op.action} {op.ref}"
        if isinstance(exc, DowngradedRedirectError):
            return VaultUnavailableError(
                f"Vault at {addr} redirected the request {during} to plain http at {exc.target_host}; "
                "the token was not sent: a Vault node's api_addr (or a proxy's redirect) must use https"
            )
        if isinstance(exc, requests.exceptions.SSLError) and _PLAIN_HTTP.search(str(exc)):
            return VaultUnavailableError(
                f"Vault at {addr} answered in plain HTTP, not TLS, {during}: the server does not serve "
                "https on this port; use http:// in VAULT_ADDR if it is a dev or loopback server, or "
                "enable TLS on it"
            )
        if isinstance(exc, requests.exceptions.SSLError) and "CERTIFICATE_VERIFY_FAILED" in str(exc):
            return VaultUnavailableError(
                f"TLS with Vault at {addr} failed {during}: its certificate is not trusted; set "
                "VAULT_CACERT to the CA bundle that signed Vault's certificate"
            )
        if isinstance(exc, requests.exceptions.SSLError):
            return VaultUnavailableError(
                f"TLS with Vault at {addr} failed {during}: the handshake failed ({_ssl_reason(exc)}); "
                "check that VAULT_ADDR names Vault's TLS port, and VAULT_CACERT"
            )
        if isinstance(exc, requests.exceptions.ConnectTimeout):
            return VaultUnavailableError(
                f"cannot reach Vault at {addr}: connecting timed out after {self.settings.timeout:g}s{tries} "
                f"{during}; check VAULT_ADDR and the network, or raise KEYFENCE_VAULT_TIMEOUT"
            )
        if isinstance(exc, requests.exceptions.Timeout):
            return VaultUnavailableError(
                f"Vault at {addr} did not answer within {self.settings.timeout:g}s {during}; "
                "raise KEYFENCE_VAULT_TIMEOUT if Vault is only slow, or check its health"
            )
        if isinstance(exc, requests.ConnectionError):
            return VaultUnavailableError(
                f"cannot reach Vault at {addr}: the connection was refused or dropped{tries} {during}; "
                "check VAULT_ADDR and that Vault is running"
            )
        if isinstance(exc, requests.exceptions.ChunkedEncodingError):
            return VaultUnavailableError(
                f"Vault at {addr} dropped the connection in the middle of its answer{tries} {during}; "
                "check that Vault is running and healthy, and any proxy or load balancer in front of it"
            )
        return VaultUnavailableError(
            f"the request to Vault at {addr} failed {during}: {type(exc).__name__}; "
            "check VAULT_ADDR and that it points at Vault's API"
        )

    def _translated(
        self, op: Operation, exc: hvac.exceptions.VaultError, status: int | None, attempts: int
    ) -> KeyfenceError:
        """The error to raise for a failed request, phrased for the person running keyfence."""
        addr = self.addr
        said = _vault_said(exc, op.secrets)
        detail = f": {said}" if said else ""
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        during = f"while trying to {op.action} {op.ref}"
        if isinstance(exc, hvac.exceptions.Unauthorized):
            return self._token_error(op)
        if isinstance(exc, hvac.exceptions.Forbidden):
            if self._token_is_rejected():
                return self._token_error(op)
            return KeyAccessDeniedError(
                addr,
                op.ref,
                f"permission denied: the token may not {op.verb} it; its policy needs the "
                f"'{op.capability}' capability on '{op.api_path}'",
            )
        if isinstance(exc, hvac.exceptions.InvalidPath):
            return self._missing(op, exc)
        if isinstance(exc, hvac.exceptions.InvalidRequest) and _CAS_MISMATCH.search(said):
            expected = "no key there yet" if op.capability == "create" else "the version it was read at"
            return RefusedError(
                f"{op.ref}: the key changed concurrently (check-and-set expected {expected}); "
                f"nothing was written; look at the key's current state and run again (Vault at {addr})"
            )
        if isinstance(exc, hvac.exceptions.RateLimitExceeded):
            return VaultUnavailableError(
                f"Vault at {addr} rate-limited keyfence (HTTP 429) {during}; "
                f"lower KEYFENCE_VAULT_CONCURRENCY (now {self.settings.concurrency}) or try again later"
            )
        if isinstance(exc, hvac.exceptions.VaultDown) and _SEALED.search(said):
            return VaultUnavailableError(
                f"Vault at {addr} is sealed; unseal it ('vault operator unseal' or 'bao operator unseal') "
                "and run again"
            )
        if isinstance(exc, hvac.exceptions.VaultNotInitialized):
            return VaultUnavailableError(
                f"Vault at {addr} is not initialized; initialize and unseal it first"
            )
        if _server_side(exc, status):
            return VaultUnavailableError(
                f"Vault at {addr} failed {during}: HTTP {status or '5xx'}{detail}{tries}; "
                "check Vault's health and logs"
            )
        return VaultRequestError(
            addr, op.ref, f"Vault rejected the request to {op.action} it (HTTP {status or '4xx'}{detail})"
        )

    def _token_error(self, op: Operation) -> VaultUnavailableError:
        how = (
            "log in again and export a fresh VAULT_TOKEN"
            if self.settings.auth == "token"
            else f"check the token TTL of the {self.settings.auth} role"
        )
        return VaultUnavailableError(
            f"Vault at {self.addr} rejected the token while trying to {op.action} {op.ref}: "
            f"it is expired, revoked or unknown to this server; {how}"
        )

    def _token_is_rejected(self) -> bool:
        """Whether 403s come from a dead token rather than a missing capability; asked once.

        Vault answers a bad token with the same 403 as a missing capability; only a
        self-lookup, which the 'default' policy allows every live token, tells them apart.
        """
        with self._lock:
            if self._token_rejected is None:
                try:
                    self._client.auth.token.lookup_self()
                    self._token_rejected = False
                except hvac.exceptions.Unauthorized:
                    self._token_rejected = True
                except hvac.exceptions.Forbidden as exc:
                    # A live token without the 'default' policy may not look itself up either; only
                    # an unwrapped denial, or one naming the token, means the token itself is dead.
                    said = errors_text(exc)
                    dead = bool(_INVALID_TOKEN.search(said)) or not _POLICY_DENIAL.search(said)
                    self._token_rejected = dead
                except (hvac.exceptions.VaultError, requests.RequestException):
                    return False
            return self._token_rejected

    def _missing(self, op: Operation, exc: hvac.exceptions.VaultError) -> KeyNotFoundError:
        mount = op.mount
        if NO_ROUTE.search(errors_text(exc)):
            return KVMountError(
                self.addr,
                op.ref,
                f"no secrets engine is mounted at '{mount}/'; set vault.mount in the spec "
                "(--mount for 'keyfence keys') to the KV version 2 mount that holds the keys",
            )
        finding = self._mount_finding(mount)
        if finding:
            return KVMountError(self.addr, op.ref, finding)
        hint = (
            f" (if it does exist, check that '{mount}' is a KV version 2 mount)"
            if finding == _UNKNOWN
            else ""
        )
        served_at = urlsplit(self.addr)
        if finding == _UNKNOWN and served_at.path.strip("/"):
            # Vault answers 404 for every path under a prefix it does not serve: a proxy prefix
            # in VAULT_ADDR that is wrong makes every key look missing.
            root = urlunsplit((served_at.scheme, served_at.netloc, "", "", ""))
            hint = (
                f" (VAULT_ADDR has the path '{served_at.path.rstrip('/')}', and Vault found neither "
                f"the key nor its mount under it: if Vault is served at the root, set VAULT_ADDR={root}; "
                f"else check that '{mount}' is a KV version 2 mount)"
            )
        return KeyNotFoundError(
            self.addr,
            op.ref,
            f"no key is stored here ('{op.api_path}' not found){hint}; "
            "register it with 'keyfence keys register'",
        )

    def _mount_finding(self, mount: str) -> str | None:
        """Why ``mount`` cannot hold KV v2 keys: ``None`` if it can, ``_UNKNOWN`` if we may not look."""
        with self._lock:
            if mount in self._mount_findings:
                return self._mount_findings[mount]
        finding: str | None = _UNKNOWN
        try:
            info = data_of(self._client.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}"))
        except (hvac.exceptions.VaultError, requests.RequestException):
            info = None
        if isinstance(info, dict):
            kind = info.get("type")
            options = info.get("options")
            version = options.get("version") if isinstance(options, dict) else None
            at = str(info.get("path") or "").rstrip("/")
            if at and at != mount:
                finding = (
                    f"'{mount}' is not a mount but a path inside the mount '{at}'; set vault.mount to '{at}' "
                    "and move the rest into the key path"
                )
            elif kind == "kv" and str(version) != "2":
                finding = (
                    f"'{mount}' is a KV version 1 mount; keyfence needs KV version 2 "
                    f"(upgrade it with 'vault kv enable-versioning {mount}')"
                )
            elif kind != "kv":
                finding = (
                    f"'{mount}' is a {kind} secrets engine, not KV version 2; "
                    "set vault.mount to a KV v2 mount"
                )
            else:
                finding = None
        with self._lock:
            self._mount_findings[mount] = finding
        return finding

    def _version_missing(
        self, op: Operation, path: str, version: int, exc: hvac.exceptions.InvalidPath
    ) -> KeyNotFoundError:
        state = gone_state(exc)
        if state is not None and state[0] == "destroyed":
            return KeyVersionGoneError(
                self.addr,
                op.ref,
                f"version {version} is destroyed, its material is gone for good; "
                "register a new key with 'keyfence keys register'",
            )
        if state is not None:
            return KeyVersionGoneError(
                self.addr,
                op.ref,
                f"version {version} is deleted; undelete it with 'vault kv undelete -mount={op.mount} "
                f"-versions={version} {path}' or register a new key",
            )
        if NO_ROUTE.search(errors_text(exc)):
            return self._missing(op, exc)
        return KeyNotFoundError(
            self.addr, op.ref, f"version {version} does not exist; read the metadata again and retry"
        )


def gone_state(exc: hvac.exceptions.InvalidPath) -> tuple[str, int | None] | None:
    """``("destroyed" | "deleted", version)`` when a 404 on a data read is about a version that exists.

    KV v2 answers the read of a deleted or destroyed version with a 404 that still carries the
    version's metadata; a path without that version carries none (``None``).
    """
    body = exc.json if isinstance(exc.json, dict) else {}
    data = body.get("data")
    meta = data.get("metadata") if isinstance(data, dict) else None
    if not isinstance(meta, dict):
        return None
    version = meta.get("version")
    number = version if isinstance(version, int) and version > 0 else None
    if meta.get("destroyed") is True:
        return "destroyed", number
    if meta.get("deletion_time"):
        return "deleted", number
    return None


def _server_side(exc: hvac.exceptions.VaultError, status: int | None) -> bool:
    """Whether Vault (or a proxy before it) failed, as opposed to refusing the request."""
    return isinstance(
        exc,
        (
            hvac.exceptions.VaultDown,
            hvac.exceptions.InternalServerError,
            hvac.exceptions.BadGateway,
            hvac.exceptions.VaultNotInitialized,
            hvac.exceptions.RateLimitExceeded,
        ),
    ) or (status is not None and status >= 500)


def read_many(fn: Callable[[T], R], items: Iterable[T], concurrency: int) -> list[R | KeyfenceError]:
    """``fn`` over every item on up to ``concurrency`` threads; results in input order.

    A KeyfenceError from one item is that item's result, so every failure is collected.
    A VaultUnavailableError (nothing else can succeed either) or an unexpected exception
    cancels what has not started and is raised.
    """
    todo = list(items)
    if not todo:
        return []
    results: dict[int, R | KeyfenceError] = {}
    workers = max(1, min(concurrency, len(todo)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="keyfence-vault") as pool:
        futures: dict[Future[R], int] = {pool.submit(fn, item): index for index, item in enumerate(todo)}
        pending = set(futures)
        while pending:
            done, pending = wait(pending, return_when=FIRST_EXCEPTION)
            for future in done:
                try:
                    results[futures[future]] = future.result()
                except VaultUnavailableError:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
                except KeyfenceError as exc:
                    results[futures[future]] = exc
                except BaseException:
                    pool.shutdown(wait=True, cancel_futures=True)
                    raise
    return [results[index] for index in range(len(todo))]


def data_of(response: Any) -> Any:
    """The ``data`` member of a Vault JSON answer, or None when the answer has none."""
    return response.get("data") if isinstance(response, dict) else None
