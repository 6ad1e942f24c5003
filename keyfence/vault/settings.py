"""Connection settings read from the standard Vault environment variables and keyfence's own."""

from __future__ import annotations

import functools
import logging
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final, Literal, TypeVar, cast, get_args
from urllib.parse import unquote, urlsplit, urlunsplit

import idna
from keyfence_policies.labels import canonical_key_path

from ..errors import VaultError

log = logging.getLogger("keyfence.vault")
retry_log = logging.getLogger("keyfence.vault.retry")
"""Retry notices: their own logger, so a command line can keep them out of a one-message failure."""


T = TypeVar("T")

AuthMethod = Literal["token", "approle", "kubernetes", "jwt"]
AUTH_METHODS: Final[tuple[AuthMethod, ...]] = get_args(AuthMethod)
DEFAULT_AUTH_MOUNTS: Final[Mapping[str, str]] = {
    "approle": "approle",
    "kubernetes": "kubernetes",
    "jwt": "jwt",
}
KUBERNETES_TOKEN_FILE: Final = "/var/run/secrets/kubernetes.io/serviceaccount/token"
DEFAULT_TIMEOUT: Final = 10.0
DEFAULT_RETRIES: Final = 4
DEFAULT_CONCURRENCY: Final = 16
MAX_RETRIES: Final = 20
MAX_CONCURRENCY: Final = 256
MAX_TIMEOUT: Final = 600.0
MAX_CREDENTIAL_FILE_BYTES: Final = 64 * 1024
"""A role id, secret id or JWT is well under this; a bigger file is the wrong file."""

BACKOFF_INITIAL: Final = 0.1
BACKOFF_MAX: Final = 2.0
"""Backoff between attempts: short, because a deploy waits on it, but enough to ride out a failover."""
MAX_BACKOFF: Final = 60.0


_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE = frozenset({"", "0", "f", "false", "n", "no", "off"})
_MOUNT_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_VISIBLE_ASCII = re.compile(r"[\x21-\x7e]*\Z")
_SEND_AS_IS = (
    "an HTTP request to Vault cannot carry it (every Vault token, namespace, role, id and JWT is visible "
    "ASCII): set it again without the stray character"
)


def unsendable(value: str, *, secret: bool) -> str | None:
    """Why ``value`` cannot go to Vault as it is (in a header such as ``X-Vault-Token``, or in a login),
    or ``None``.

    http.client encodes header values as Latin-1 and raises a bare UnicodeEncodeError (in the middle
    of a request) for anything else; a line break or control character is refused or, worse, read by
    a proxy as the start of another header. Vault's tokens, namespaces, role names, ids and JWTs are
    all visible ASCII, so anything else is a copy-and-paste accident, caught here with a message.
    A ``secret`` value's characters are never shown, only their kind.
    """
    if _VISIBLE_ASCII.match(value):
        return None
    position, char = next((i, c) for i, c in enumerate(value) if not "\x21" <= c <= "\x7e")
    if char in "\r\n":
        kind = "a line break (two lines pasted, or a file of several lines)"
    elif char in " \t":
        kind = "whitespace inside the value"
    elif char < " " or char == "\x7f":
        kind = "a control character"
    else:
        kind = "a character outside ASCII (a typographic quote, a non-breaking space, an accented letter...)"
    if not secret:
        kind += f": {char!r} at position {position + 1}"
    return kind


def shown_address(addr: str) -> str:
    """``addr`` as messages may show it: a user name or password in it (an authenticating proxy in
    front of Vault) replaced by ``***``.

    Everything before the last ``@`` is hidden, not only what a URL parser calls user info: an
    unencoded ``/``, ``?`` or ``#`` in a password (or a missing ``https://``) makes the parser read
    the rest of the password as a path, query, fragment or scheme.
    """
    if "@" not in addr:
        return addr
    scheme, sep, rest = addr.partition("://")
    if not sep:
        scheme, rest = "", addr
    return f"{scheme}{sep}***@{rest.rpartition('@')[2]}"


def ascii_address(addr: str) -> str:
    """``addr`` with a non-ASCII host name in its ASCII (IDNA) form, as requests would send it.

    Both HTTP paths then see the same plain-ASCII URL. Raises ValueError saying why ``addr`` cannot
    be sent at all: whitespace or a control character, a host no IDNA encoding accepts, or a user
    name or password that HTTP's Basic authentication (Latin-1) cannot carry. Never quotes them.
    """
    stray = next((c for c in addr if c <= " " or c == "\x7f"), None)
    if stray is not None:
        # urlsplit drops tabs and line breaks silently: the address used would not be the one given.
        kind = "whitespace" if stray in " \t\r\n" else "a control character"
        raise ValueError(f"it contains {kind}; give the address alone, such as https://vault.example.com:8200")
    try:
        parts = urlsplit(addr)
    except ValueError as exc:
        raise ValueError(f"it is not a URL ({exc})") from None
    if "@" in addr.partition("://")[2] and "@" not in parts.netloc:
        raise ValueError(
            "its user name or password holds a '/', '?' or '#', which ends the host part early: "
            "percent-encode them (%2F, %3F, %23)"
        )
    userinfo, at, hostport = parts.netloc.rpartition("@")
    host, colon, port = hostport.rpartition(":") if ":" in hostport else (hostport, "", "")
    if not host.isascii():
        try:
            ascii_host = idna.encode(host, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise ValueError(
                f"the host name {host!r} is not a valid internationalised domain name ({exc}); "
                "give its ASCII form (xn--...) or the server's IP address"
            ) from None
        parts = parts._replace(netloc=f"{userinfo}{at}{ascii_host}{colon}{port}")
    for what, value in (("user name", parts.username), ("password", parts.password)):
        if value is None:
            continue
        try:
            unquote(value).encode("latin-1")
        except UnicodeEncodeError:
            raise ValueError(
                f"the {what} in it has a character HTTP Basic authentication cannot carry (outside "
                "Latin-1); percent-encoding does not help, choose credentials in ASCII for the proxy"
            ) from None
    return urlunsplit(parts)


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True, repr=False)
class VaultSettings:
    """How to reach and log in to Vault; credentials are held but never shown."""

    addr: str
    token: str | None = field(default=None, repr=False)
    namespace: str | None = None
    cacert: str | None = None
    capath: str | None = None
    client_cert: str | None = None
    client_key: str | None = None
    skip_verify: bool = False
    auth: AuthMethod = "token"
    auth_mount: str | None = None
    """Where the auth method is mounted; ``None`` means its default (approle, kubernetes, jwt)."""
    role_id: str | None = field(default=None, repr=False)
    secret_id: str | None = field(default=None, repr=False)
    role: str | None = None
    jwt: str | None = field(default=None, repr=False)
    timeout: float = DEFAULT_TIMEOUT
    retries: int = DEFAULT_RETRIES
    """Attempts in total for one request, the first included."""
    concurrency: int = DEFAULT_CONCURRENCY
    backoff: float = BACKOFF_MAX
    """The longest wait between two attempts, in seconds; waits grow from 0.1s up to it."""

    def __post_init__(self) -> None:
        problems = []
        if self.auth not in AUTH_METHODS:
            problems.append(f"auth {self.auth!r} is not one of {', '.join(AUTH_METHODS)}")
        if not 0 < self.timeout <= MAX_TIMEOUT:
            problems.append(f"timeout {self.timeout!r} must be a number of seconds in (0, {MAX_TIMEOUT:g}]")
        if not 1 <= self.retries <= MAX_RETRIES:
            problems.append(f"retries {self.retries!r} must be between 1 and {MAX_RETRIES}")
        if not 1 <= self.concurrency <= MAX_CONCURRENCY:
            problems.append(f"concurrency {self.concurrency!r} must be between 1 and {MAX_CONCURRENCY}")
        if not 0 <= self.backoff <= MAX_BACKOFF:
            problems.append(f"backoff {self.backoff!r} must be a number of seconds in [0, {MAX_BACKOFF:g}]")
        if self.auth == "token" and not self.token:
            problems.append("token auth needs a token")
        if self.auth == "approle" and not self.role_id:
            problems.append("approle auth needs a role id")
        if self.auth in ("kubernetes", "jwt") and not (self.role and self.jwt):
            problems.append(f"{self.auth} auth needs a role and a JWT")
        for name, value, secret in (
            ("token", self.token, True),
            ("namespace", self.namespace, False),
            ("role", self.role, False),
            ("role id", self.role_id, True),
            ("secret id", self.secret_id, True),
            ("JWT", self.jwt, True),
        ):
            kind = unsendable(value, secret=secret) if value else None
            if kind is not None:
                problems.append(f"the {name} contains {kind}; {_SEND_AS_IS}")
        try:
            # Frozen, but this is construction: every later reader sees the ASCII form.
            object.__setattr__(self, "addr", ascii_address(self.addr))
        except ValueError as exc:
            problems.append(f"address {shown_address(self.addr)!r}: {exc}")
        if problems:
            raise VaultError("invalid Vault settings", problems=problems)

    def __repr__(self) -> str:
        shown = {
            "addr": self.shown_addr,
            "namespace": self.namespace,
            "auth": self.auth,
            "auth_mount": self.mount_for_auth,
            "role": self.role,
            "token": "<set>" if self.token else None,
            "role_id": "<set>" if self.role_id else None,
            "secret_id": "<set>" if self.secret_id else None,
            "jwt": "<set>" if self.jwt else None,
            "verify": self.verify,
            "timeout": self.timeout,
            "retries": self.retries,
            "concurrency": self.concurrency,
            "backoff": self.backoff,
        }
        return "VaultSettings(" + ", ".join(f"{k}={v!r}" for k, v in shown.items() if v is not None) + ")"

    __str__ = __repr__

    @functools.cached_property
    def shown_addr(self) -> str:
        """``addr`` as messages show it (:func:`shown_address`), worked out once: errors on every
        read path name the address."""
        return shown_address(self.addr)

    @property
    def verify(self) -> bool | str:
        """What requests verifies TLS with: a CA file, a CA directory, the system store, or nothing."""
        if self.skip_verify:
            return False
        return self.cacert or self.capath or True

    @property
    def mount_for_auth(self) -> str | None:
        if self.auth == "token":
            return None
        return self.auth_mount or DEFAULT_AUTH_MOUNTS[self.auth]

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> VaultSettings:
        """Settings from the standard VAULT_* variables and keyfence's KEYFENCE_VAULT_* ones.

        Every bad value is reported at once, each naming its variable, so one run shows
        everything to fix.
        """
        reader = _EnvReader(env)
        addr = reader.addr()
        auth = reader.choice("KEYFENCE_VAULT_AUTH", AUTH_METHODS, "token")
        token = role_id = secret_id = role = jwt = None
        if auth == "token":
            token = reader.sendable("VAULT_TOKEN", reader.text("VAULT_TOKEN"))
            if token is None and not reader.mentions("VAULT_TOKEN"):
                reader.problem(
                    "VAULT_TOKEN is not set: KEYFENCE_VAULT_AUTH=token (the default) needs a Vault token; "
                    "export VAULT_TOKEN, or log in with approle, kubernetes or jwt via KEYFENCE_VAULT_AUTH"
                )
        elif auth == "approle":
            role_id = reader.credential("KEYFENCE_VAULT_ROLE_ID")
            secret_id = reader.credential("KEYFENCE_VAULT_SECRET_ID")
            if role_id is None and not reader.mentions("KEYFENCE_VAULT_ROLE_ID"):
                reader.problem(
                    "KEYFENCE_VAULT_AUTH=approle needs the role id: "
                    "set KEYFENCE_VAULT_ROLE_ID or KEYFENCE_VAULT_ROLE_ID_FILE"
                )
        elif auth in ("kubernetes", "jwt"):
            role = reader.sendable("KEYFENCE_VAULT_ROLE", reader.text("KEYFENCE_VAULT_ROLE"), secret=False)
            if role is None and not reader.mentions("KEYFENCE_VAULT_ROLE"):
                reader.problem(
                    f"KEYFENCE_VAULT_AUTH={auth} needs the Vault role to log in as: set KEYFENCE_VAULT_ROLE"
                )
            default_file = KUBERNETES_TOKEN_FILE if auth == "kubernetes" else None
            jwt = reader.credential("KEYFENCE_VAULT_JWT", default_file=default_file)
            if jwt is None and not reader.mentions("KEYFENCE_VAULT_JWT"):
                reader.problem(
                    f"KEYFENCE_VAULT_AUTH={auth} needs a JWT: "
                    "set KEYFENCE_VAULT_JWT or KEYFENCE_VAULT_JWT_FILE"
                )
        auth_mount = reader.mount("KEYFENCE_VAULT_AUTH_MOUNT")
        cacert = reader.existing_path("VAULT_CACERT", directory=False)
        capath = reader.existing_path("VAULT_CAPATH", directory=True)
        client_cert = reader.existing_path("VAULT_CLIENT_CERT", directory=False)
        client_key = reader.existing_path("VAULT_CLIENT_KEY", directory=False)
        if client_key and not client_cert:
            reader.problem("VAULT_CLIENT_KEY is set without VAULT_CLIENT_CERT: set both for TLS client auth")
        skip_verify = reader.boolean("VAULT_SKIP_VERIFY")
        timeout = reader.number("KEYFENCE_VAULT_TIMEOUT", DEFAULT_TIMEOUT, float, 0.001, MAX_TIMEOUT)
        retries = reader.number("KEYFENCE_VAULT_RETRIES", DEFAULT_RETRIES, int, 1, MAX_RETRIES)
        concurrency = reader.number(
            "KEYFENCE_VAULT_CONCURRENCY", DEFAULT_CONCURRENCY, int, 1, MAX_CONCURRENCY
        )
        backoff = reader.number("KEYFENCE_VAULT_BACKOFF", BACKOFF_MAX, float, 0, MAX_BACKOFF)
        namespace = reader.sendable("VAULT_NAMESPACE", reader.text("VAULT_NAMESPACE"), secret=False)
        if reader.problems or addr is None:
            raise VaultError("invalid Vault settings in the environment", problems=reader.problems)
        return cls(
            addr=addr,
            token=token,
            namespace=(namespace.strip("/") or None) if namespace else None,
            cacert=cacert,
            capath=capath,
            client_cert=client_cert,
            client_key=client_key,
            skip_verify=skip_verify,
            auth=cast(AuthMethod, auth),
            auth_mount=auth_mount,
            role_id=role_id,
            secret_id=secret_id,
            role=role,
            jwt=jwt,
            timeout=timeout,
            retries=retries,
            concurrency=concurrency,
            backoff=backoff,
        )


class _EnvReader:
    """Reads and checks environment variables, collecting a problem per bad one."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env
        self.problems: list[str] = []
        self._failed: set[str] = set()

    def problem(self, message: str) -> None:
        self.problems.append(message)

    def mentions(self, name: str) -> bool:
        """Whether ``name`` (or its _FILE form) was set but rejected, so 'not set' would mislead."""
        return name in self._failed

    def text(self, name: str) -> str | None:
        value = self.env.get(name, "").strip()
        return value or None

    def addr(self) -> str | None:
        raw = self.text("VAULT_ADDR")
        if raw is None:
            self.problem(
                "VAULT_ADDR is not set: export VAULT_ADDR=https://<vault host>:8200, "
                "the address of the Vault or OpenBao server that holds the keys"
            )
            return None
        shown = shown_address(raw)
        try:
            raw = ascii_address(raw)
        except ValueError as exc:
            self.problem(f"VAULT_ADDR={shown!r}: {exc}")
            return None
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            self.problem(f"VAULT_ADDR={shown!r} is not an http(s) URL such as https://vault.example.com:8200")
            return None
        try:
            parts.port  # noqa: B018 - raises on an invalid port
        except ValueError:
            self.problem(f"VAULT_ADDR={shown!r} has an invalid port")
            return None
        segments = [s for s in parts.path.split("/") if s]
        if "v1" in segments:
            # Every request already goes to <VAULT_ADDR>/v1/...; '/v1' here doubles it and each
            # answer would be a misleading 'no such mount'.
            kept = "/".join(["", *segments[: segments.index("v1")]])
            base = f"{parts.scheme}://{urlsplit(shown).netloc}{kept}"
            self.problem(
                f"VAULT_ADDR={shown!r} includes the API path /v1: give the server's address only "
                f"(VAULT_ADDR={base}); the Vault client adds /v1 itself"
            )
            return None
        return raw.rstrip("/")

    def sendable(self, name: str, value: str | None, *, secret: bool = True) -> str | None:
        """``value`` if Vault can be sent it as it is (:func:`unsendable`); else a problem naming ``name``."""
        if value is None:
            return None
        kind = unsendable(value, secret=secret)
        if kind is None:
            return value
        self.problem(f"{name} contains {kind}; {_SEND_AS_IS}")
        self._failed.add(name)
        return None

    def choice(self, name: str, allowed: tuple[str, ...], default: str) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() not in allowed:
            self.problem(f"{name}={raw!r} is not one of {', '.join(allowed)}")
            return default
        return raw.lower()

    def credential(self, name: str, *, default_file: str | None = None) -> str | None:
        """A credential given inline (``NAME``) or as a file (``NAME_FILE``); never both."""
        inline = self.text(name)
        file_var = f"{name}_FILE"
        path = self.text(file_var)
        if inline is not None and path is not None:
            self.problem(f"{name} and {file_var} are both set: set only one")
            self._failed.add(name)
            return None
        if inline is not None:
            return self.sendable(name, inline)
        if path is None:
            if default_file is None:
                return None
            if not Path(default_file).exists():
                self.problem(
                    f"no service account token at {default_file} (the default for {file_var}): "
                    f"run inside a pod with a mounted token, or set {name} or {file_var}"
                )
                self._failed.add(name)
                return None
            path, file_var = default_file, f"{file_var} (default)"
        try:
            with open(path, "rb") as handle:
                data = handle.read(MAX_CREDENTIAL_FILE_BYTES + 1)
        except OSError as exc:
            self.problem(f"{file_var}={path}: cannot read it: {exc.strerror or type(exc).__name__}")
            self._failed.add(name)
            return None
        if len(data) > MAX_CREDENTIAL_FILE_BYTES:
            self.problem(
                f"{file_var}={path}: larger than {MAX_CREDENTIAL_FILE_BYTES // 1024} KiB; "
                "is it the right file?"
            )
            self._failed.add(name)
            return None
        try:
            value = data.decode("utf-8").strip()
        except UnicodeDecodeError:
            self.problem(f"{file_var}={path}: not UTF-8 text")
            self._failed.add(name)
            return None
        if not value:
            self.problem(f"{file_var}={path}: the file is empty")
            self._failed.add(name)
            return None
        checked = self.sendable(f"{file_var}={path}: the file", value)
        if checked is None:
            self._failed.add(name)
        return checked

    def mount(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        mount = canonical_key_path(raw)
        if not mount or not all(_MOUNT_SEGMENT.match(s) for s in mount.split("/")):
            self.problem(f"{name}={raw!r} is not a mount path such as 'approle' or 'kubernetes-prod'")
            return None
        return mount

    def existing_path(self, name: str, *, directory: bool) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        target = Path(raw)
        if directory and not target.is_dir():
            self.problem(f"{name}={raw}: no such directory")
            return None
        if not directory and not target.is_file():
            self.problem(f"{name}={raw}: no such file")
            return None
        return raw

    def boolean(self, name: str) -> bool:
        raw = self.env.get(name, "").strip().lower()
        if raw in _TRUE:
            return True
        if raw not in _FALSE:
            self.problem(f"{name}={self.env.get(name)!r} is not a boolean (true/false, 1/0)")
        return False

    def number(self, name: str, default: T, kind: Callable[[str], T], low: float, high: float) -> T:
        raw = self.text(name)
        if raw is None:
            return default
        try:
            value = kind(raw)
        except ValueError:
            value = None
        if value is None or not low <= cast(float, value) <= high:
            what = "a whole number" if kind is int else "a number of seconds"
            self.problem(f"{name}={raw!r} must be {what} between {low:g} and {high:g}")
            return default
        return value
