"""The Vault (or OpenBao) connection, and a thin KV version 2 client for exchange keys.

hvac already models Vault's API, so each method here is one hvac call. What this module
adds is what keyfence needs around those calls: settings from the standard environment,
one pooled HTTP session shared by every thread, retries limited to failures that are safe
to repeat, and errors that name the Vault address, the key and what to do. No message,
log line or repr ever carries key material or a credential.
"""

from __future__ import annotations

import functools
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from types import MappingProxyType, TracebackType
from typing import Any, Final, Literal, TypeVar, cast, get_args
from urllib.parse import urlsplit

import hvac
import hvac.exceptions
import requests
import tenacity
from keyfence_policies.labels import canonical_key_path
from requests.adapters import HTTPAdapter

from .errors import KeyfenceError, RefusedError, VaultError
from .keys import KeyMaterial

log = logging.getLogger("keyfence.vault")
retry_log = logging.getLogger("keyfence.vault.retry")
"""Retry notices: their own logger, so a command line can keep them out of a one-message failure."""

T = TypeVar("T")
R = TypeVar("R")

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

API_KEY_FIELD: Final = "api_key"
API_SECRET_FIELD: Final = "api_secret"

_TRUE = frozenset({"1", "t", "true", "y", "yes", "on"})
_FALSE = frozenset({"", "0", "f", "false", "n", "no", "off"})
_SEALED = re.compile(r"\bsealed\b", re.I)
_CAS_MISMATCH = re.compile(r"check-and-set", re.I)
_NO_ROUTE = re.compile(r"no handler for route", re.I)
_MOUNT_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
_MEDIA_TYPE = re.compile(r"^[A-Za-z0-9.+-]{1,40}/[A-Za-z0-9.+-]{1,60}$")


# --------------------------------------------------------------------------- errors


class VaultUnavailableError(VaultError):
    """Vault as a whole cannot serve us (unreachable, sealed, token rejected): no key can be read."""


class VaultRequestError(VaultError):
    """A request about one key failed; ``reason`` says what is wrong there and what to do."""

    def __init__(self, addr: str, ref: str, reason: str) -> None:
        self.addr = addr
        self.ref = ref
        self.reason = reason
        super().__init__(f"{ref}: {reason} (Vault at {addr})")


class KeyNotFoundError(VaultRequestError):
    """Nothing is stored at the path (or the mount is not a KV version 2 mount)."""


class KeyVersionGoneError(KeyNotFoundError):
    """The version asked for was deleted or destroyed."""


class KVMountError(KeyNotFoundError):
    """The mount itself cannot hold keys (missing, KV version 1, another engine): no key under it can.

    A KeyNotFoundError for compatibility, but callers that treat 'not found' as 'free to
    write' must not: a KV version 1 mount answers 404 and would accept a write elsewhere.
    """


class KeyAccessDeniedError(VaultRequestError):
    """The token lacks a capability on this key's path (HTTP 403)."""


class MalformedKeyError(VaultRequestError):
    """The stored data is not an api_key/api_secret pair of non-empty strings."""


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
        if problems:
            raise VaultError("invalid Vault settings", problems=problems)

    def __repr__(self) -> str:
        shown = {
            "addr": self.addr,
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
            token = reader.text("VAULT_TOKEN")
            if token is None:
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
            role = reader.text("KEYFENCE_VAULT_ROLE")
            if role is None:
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
        namespace = reader.text("VAULT_NAMESPACE")
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
        parts = urlsplit(raw)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
            self.problem(f"VAULT_ADDR={raw!r} is not an http(s) URL such as https://vault.example.com:8200")
            return None
        try:
            parts.port  # noqa: B018 - raises on an invalid port
        except ValueError:
            self.problem(f"VAULT_ADDR={raw!r} has an invalid port")
            return None
        return raw.rstrip("/")

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
            return inline
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
        return value

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


# --------------------------------------------------------------------------- metadata


def _parse_time(value: Any) -> datetime | None:
    """Vault's RFC 3339 times (nanoseconds, 'Z'); Python 3.10 parses neither natively."""
    if not isinstance(value, str) or not value:
        return None
    match = re.match(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(\.\d+)?(Z|[+-]\d\d:\d\d)$", value)
    if not match:
        return None
    # Go trims trailing zeros and keeps nanoseconds; Python 3.10 wants exactly 6 digits.
    fraction = (match[2] or ".")[1:7].ljust(6, "0")
    zone = "+00:00" if match[3] == "Z" else match[3]
    try:
        return datetime.fromisoformat(f"{match[1]}.{fraction}{zone}")
    except ValueError:
        return None


@dataclass(frozen=True)
class KeyVersion:
    """One version of a key as its metadata describes it."""

    version: int
    created_time: datetime | None
    deletion_time: datetime | None
    """When the version is (or is scheduled to be) deleted; ``delete_version_after`` sets future times."""
    destroyed: bool

    def deleted_at(self, now: datetime) -> bool:
        return self.deletion_time is not None and self.deletion_time <= now

    @property
    def deleted(self) -> bool:
        return self.deleted_at(datetime.now(timezone.utc))

    @property
    def available(self) -> bool:
        """Whether the version's data can still be read."""
        return not (self.destroyed or self.deleted)


@dataclass(frozen=True)
class KeyMetadata:
    """A key's KV v2 metadata: versions and custom metadata, never the material."""

    mount: str
    path: str
    current_version: int
    oldest_version: int
    versions: Mapping[int, KeyVersion]
    custom_metadata: Mapping[str, str]
    created_time: datetime | None
    updated_time: datetime | None
    cas_required: bool
    max_versions: int
    delete_version_after: str

    @property
    def ref(self) -> str:
        return f"{self.mount}/{self.path}"

    @property
    def current(self) -> KeyVersion | None:
        """The current version, or ``None`` when the key has metadata but no data yet."""
        return self.versions.get(self.current_version) if self.current_version else None


def _parse_metadata(mount: str, path: str, data: Any) -> KeyMetadata | None:
    if not isinstance(data, dict):
        return None
    try:
        versions = {
            int(number): KeyVersion(
                version=int(number),
                created_time=_parse_time(info.get("created_time")),
                deletion_time=_parse_time(info.get("deletion_time")),
                destroyed=info.get("destroyed") is True,
            )
            for number, info in (data.get("versions") or {}).items()
        }
        custom = data.get("custom_metadata") or {}
        if not isinstance(custom, dict):
            return None
        return KeyMetadata(
            mount=mount,
            path=path,
            current_version=int(data.get("current_version") or 0),
            oldest_version=int(data.get("oldest_version") or 0),
            versions=MappingProxyType(versions),
            custom_metadata=MappingProxyType({str(k): str(v) for k, v in custom.items()}),
            created_time=_parse_time(data.get("created_time")),
            updated_time=_parse_time(data.get("updated_time")),
            cas_required=data.get("cas_required") is True,
            max_versions=int(data.get("max_versions") or 0),
            delete_version_after=str(data.get("delete_version_after") or "0s"),
        )
    except (AttributeError, TypeError, ValueError):
        return None


# --------------------------------------------------------------------------- client


@dataclass(frozen=True)
class _Op:
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


def _errors_text(exc: hvac.exceptions.VaultError) -> str:
    return " ".join(map(str, exc.errors)) if isinstance(exc.errors, list) else ""


class KV2Client:
    """KV version 2 operations on keys, over one hvac client and one pooled session.

    Safe to share between threads: hvac keeps no per-request state and the session's
    connection pool is thread-safe. Create it with :func:`connect`.
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

    def __enter__(self) -> KV2Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self.session.close()

    @property
    def addr(self) -> str:
        return self.settings.addr

    @property
    def hvac_client(self) -> hvac.Client:
        """The underlying hvac client, for what this class does not wrap."""
        return self._client

    # ----------------------------------------------------------------- key operations

    def read_metadata(self, mount: str, path: str) -> KeyMetadata:
        """The key's metadata; never reads the material (needs only read on ``<mount>/metadata/<path>``)."""
        mount, path = _checked(mount, path)
        op = _Op("read the metadata of", mount, f"{mount}/{path}", "read", f"{mount}/metadata/{path}")
        response = self._call(
            op, lambda: self._client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount)
        )
        metadata = _parse_metadata(mount, path, _data(self._vault_json(op, response)))
        if metadata is None:
            raise VaultRequestError(
                self.addr,
                op.ref,
                f"Vault answered with metadata keyfence cannot parse; is '{mount}' a KV version 2 mount?",
            )
        return metadata

    def read_version(self, mount: str, path: str, version: int) -> KeyMaterial:
        """The api_key/api_secret pair stored at exactly ``version``."""
        mount, path = _checked(mount, path)
        if version < 1:
            raise ValueError(f"version must be 1 or more, not {version}")
        op = _Op(f"read version {version} of", mount, f"{mount}/{path}", "read", f"{mount}/data/{path}")
        try:
            response = self._call(
                op,
                lambda: self._client.secrets.kv.v2.read_secret_version(
                    path=path, version=version, mount_point=mount, raise_on_deleted_version=True
                ),
                translate_missing=False,
            )
        except hvac.exceptions.InvalidPath as exc:
            raise self._version_missing(op, path, version, exc) from None
        body = _data(self._vault_json(op, response))
        data = body.get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise MalformedKeyError(
                self.addr, op.ref, f"version {version} holds no data; register the key again"
            )
        return _material(self.addr, op.ref, version, data)

    def write_key(self, mount: str, path: str, material: KeyMaterial, cas: int) -> int:
        """Store a new version with check-and-set; ``cas=0`` creates only. Returns the new version.

        A retried write whose first attempt did land meets a check-and-set mismatch; that
        case is recognised (the current version is ours) rather than reported as a race.
        """
        mount, path = _checked(mount, path)
        if cas < 0:
            raise ValueError(f"cas must be 0 or more, not {cas}")
        op = _Op(
            "create" if cas == 0 else "write a new version of",
            mount,
            f"{mount}/{path}",
            "create" if cas == 0 else "update",
            f"{mount}/data/{path}",
            secrets=(material.api_key, material.api_secret),
        )
        attempts = 0

        def write() -> Any:
            nonlocal attempts
            attempts += 1
            return self._client.secrets.kv.v2.create_or_update_secret(
                path=path,
                secret={API_KEY_FIELD: material.api_key, API_SECRET_FIELD: material.api_secret},
                cas=cas,
                mount_point=mount,
            )

        try:
            response = self._call(op, write)
        except RefusedError:
            if attempts == 1:
                raise
            landed = self._landed(mount, path, cas + 1, material)
            if landed:
                return cas + 1
            if landed is None:
                raise RefusedError(
                    f"{op.ref}: check-and-set failed on a retry: either an earlier attempt that Vault "
                    f"answered with an error wrote version {cas + 1} after all, or the key changed "
                    "concurrently; nothing more was written; compare the key's metadata with what you "
                    f"meant to write before running again (Vault at {self.addr})"
                ) from None
            raise
        body = _data(response)
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, int):
            raise VaultRequestError(
                self.addr, op.ref, "Vault accepted the write but did not say which version it made"
            )
        return version

    def update_custom_metadata(self, mount: str, path: str, custom_metadata: Mapping[str, str]) -> None:
        """Replace the key's custom metadata; its other metadata settings stay as they are."""
        mount, path = _checked(mount, path)
        op = _Op(
            "update the custom metadata of", mount, f"{mount}/{path}", "update", f"{mount}/metadata/{path}"
        )
        self._call(
            op,
            lambda: self._client.secrets.kv.v2.update_metadata(
                path=path,
                mount_point=mount,
                custom_metadata={str(k): str(v) for k, v in custom_metadata.items()},
                # hvac sends "0s" unless told otherwise, which would erase a configured expiry.
                delete_version_after=None,
            ),
        )

    def write_key_metadata(
        self, mount: str, path: str, custom_metadata: Mapping[str, str], *, cas_required: bool
    ) -> None:
        """Replace the key's custom metadata and set whether every write must use check-and-set.

        ``cas_required`` makes Vault itself refuse a plain ``kv put`` over a registered key.
        """
        mount, path = _checked(mount, path)
        op = _Op("update the metadata of", mount, f"{mount}/{path}", "update", f"{mount}/metadata/{path}")
        self._call(
            op,
            lambda: self._client.secrets.kv.v2.update_metadata(
                path=path,
                mount_point=mount,
                custom_metadata={str(k): str(v) for k, v in custom_metadata.items()},
                cas_required=cas_required,
                delete_version_after=None,
            ),
        )

    def list_keys(self, mount: str, prefix: str = "") -> list[str]:
        """Every leaf path under ``prefix``, recursively, sorted; empty when there is none.

        LIST answers one folder level, sub-folders marked by a trailing '/'; a name can be
        both a key and a folder.
        """
        mount = canonical_key_path(mount)
        if not mount:
            raise ValueError("mount must not be empty")
        found: list[str] = []
        pending = [canonical_key_path(prefix)]
        while pending:
            folder = pending.pop()
            listing = f"{mount}/{folder}".rstrip("/") + "/"
            op = _Op(
                "list the keys under", mount, listing, "list", f"{mount}/metadata/{folder}".rstrip("/") + "/"
            )
            try:
                response = self._call(
                    op,
                    functools.partial(
                        self._client.secrets.kv.v2.list_secrets, path=folder, mount_point=mount
                    ),
                    translate_missing=False,
                )
            except hvac.exceptions.InvalidPath as exc:
                # An empty folder is a 404, and so is any LIST on a KV v1 mount: ask which.
                if _NO_ROUTE.search(_errors_text(exc)) or self._mount_finding(mount):
                    raise self._missing(op, exc) from None
                continue
            data = _data(self._vault_json(op, response))
            names = data.get("keys") if isinstance(data, dict) else None
            if not isinstance(names, list):
                # Never read a malformed answer as an empty folder: 'no keys' would be a false 'clean'.
                raise VaultRequestError(
                    self.addr,
                    op.ref,
                    f"Vault answered the listing without a list of keys; is '{mount}' a KV version 2 mount?",
                )
            for name in names:
                child = f"{folder}/{name}" if folder else str(name)
                if str(name).endswith("/"):
                    pending.append(child.rstrip("/"))
                else:
                    found.append(child)
        return sorted(found)

    def destroy_all_versions(self, mount: str, path: str) -> None:
        """Delete the key's metadata and every version permanently: the material is gone for good."""
        mount, path = _checked(mount, path)
        op = _Op("destroy every version of", mount, f"{mount}/{path}", "delete", f"{mount}/metadata/{path}")
        self._call(
            op,
            lambda: self._client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=mount),
        )

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
        op = _Op(
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
            if isinstance(exc, hvac.exceptions.InvalidPath) or _NO_ROUTE.search(said):
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
        op: _Op,
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

    def _vault_json(self, op: _Op, response: Any) -> dict[str, Any]:
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
            return not _SEALED.search(_errors_text(exc))
        if isinstance(exc, (hvac.exceptions.InternalServerError, hvac.exceptions.BadGateway)):
            return True
        if isinstance(exc, hvac.exceptions.UnexpectedError):
            status = self._status()
            return status is not None and status >= 500
        return False

    def _log_retry(self, op: _Op, state: tenacity.RetryCallState) -> None:
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

    def _unreachable(self, op: _Op, exc: requests.RequestException, attempts: int) -> VaultUnavailableError:
        addr = self.addr
        tries = f" ({attempts} attempts)" if attempts > 1 else ""
        during = f"while trying to {op.action} {op.ref}"
        if isinstance(exc, requests.exceptions.SSLError):
            return VaultUnavailableError(
                f"TLS with Vault at {addr} failed {during}: its certificate is not trusted or the handshake "
                "failed; set VAULT_CACERT to the CA bundle that signed Vault's certificate"
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
        self, op: _Op, exc: hvac.exceptions.VaultError, status: int | None, attempts: int
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

    def _token_error(self, op: _Op) -> VaultUnavailableError:
        how = (
            "log in again and export a fresh VAULT_TOKEN"
            if self.settings.auth == "token"
            else f"check the token TTL of the {self.settings.auth} role"
        )
        return VaultUnavailableError(
            f"Vault at {self.addr} rejected the token while trying to {op.action} {op.ref}: "
            "it is expired, revoked or unknown (it cannot look itself up either; "
            f"a token without the 'default' policy looks the same); {how}"
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
                except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
                    self._token_rejected = True
                except (hvac.exceptions.VaultError, requests.RequestException):
                    return False
            return self._token_rejected

    def _missing(self, op: _Op, exc: hvac.exceptions.VaultError) -> KeyNotFoundError:
        mount = op.mount
        if _NO_ROUTE.search(_errors_text(exc)):
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
            info = _data(self._client.adapter.get(f"/v1/sys/internal/ui/mounts/{mount}"))
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
        self, op: _Op, path: str, version: int, exc: hvac.exceptions.InvalidPath
    ) -> KeyNotFoundError:
        body = exc.json if isinstance(exc.json, dict) else {}
        data = body.get("data")
        meta = data.get("metadata") if isinstance(data, dict) else None
        meta = meta if isinstance(meta, dict) else {}
        if meta.get("destroyed") is True:
            return KeyVersionGoneError(
                self.addr,
                op.ref,
                f"version {version} is destroyed, its material is gone for good; "
                "register a new key with 'keyfence keys register'",
            )
        if meta.get("deletion_time"):
            return KeyVersionGoneError(
                self.addr,
                op.ref,
                f"version {version} is deleted; undelete it with 'vault kv undelete -mount={op.mount} "
                f"-versions={version} {path}' or register a new key",
            )
        if _NO_ROUTE.search(_errors_text(exc)):
            return self._missing(op, exc)
        return KeyNotFoundError(
            self.addr, op.ref, f"version {version} does not exist; read the metadata again and retry"
        )

    def _landed(self, mount: str, path: str, version: int, material: KeyMaterial) -> bool | None:
        """Whether ``version`` is current and holds exactly ``material`` (our earlier attempt landed).

        ``None`` when that cannot be told: a key-admin token may write material but not read it.
        """
        try:
            if self.read_metadata(mount, path).current_version != version:
                return False
            return self.read_version(mount, path, version) == material
        except KeyAccessDeniedError:
            return None
        except KeyfenceError:
            return False


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


def _checked(mount: str, path: str) -> tuple[str, str]:
    mount, path = canonical_key_path(mount), canonical_key_path(path)
    if not mount or not path:
        raise ValueError("mount and path must both be non-empty")
    return mount, path


def _data(response: Any) -> Any:
    return response.get("data") if isinstance(response, dict) else None


def _material(addr: str, ref: str, version: int, data: Mapping[str, Any]) -> KeyMaterial:
    """A KeyMaterial from stored data; every problem with either field reported together."""
    problems = []
    for name in (API_KEY_FIELD, API_SECRET_FIELD):
        value = data.get(name)
        if name not in data:
            problems.append(f"field '{name}' is missing")
        elif not isinstance(value, str):
            problems.append(f"field '{name}' is not a string")
        elif not value:
            problems.append(f"field '{name}' is empty")
        elif value != value.strip():
            problems.append(f"field '{name}' has leading or trailing whitespace")
    if problems:
        raise MalformedKeyError(
            addr,
            ref,
            f"version {version}: {'; '.join(problems)}; store both {API_KEY_FIELD} and {API_SECRET_FIELD} "
            "as exact non-empty strings (e.g. with 'keyfence keys register')",
        )
    return KeyMaterial(api_key=data[API_KEY_FIELD], api_secret=data[API_SECRET_FIELD])


def connect(settings: VaultSettings) -> KV2Client:
    """A client for ``settings``: one session sized to the concurrency, logged in when needed."""
    if settings.skip_verify:
        log.warning(
            "VAULT_SKIP_VERIFY is set: the TLS certificate of Vault at %s is not verified, so anyone on the "
            "network path could read the keys; set VAULT_CACERT instead",
            settings.addr,
        )
    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=settings.concurrency, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # hvac prefers the session's verify over its own argument when the session's is truthy.
    session.verify = settings.verify
    cert: tuple[str, str] | str | None = None
    if settings.client_cert:
        cert = (settings.client_cert, settings.client_key) if settings.client_key else settings.client_cert
        session.cert = cert
    client = hvac.Client(
        url=settings.addr,
        # An empty token, not None: hvac would otherwise pick up VAULT_TOKEN or ~/.vault-token itself.
        token=settings.token or "",
        namespace=settings.namespace,
        verify=settings.verify,
        cert=cert,
        timeout=settings.timeout,
        session=session,
    )
    kv = KV2Client(client, settings, session)
    try:
        kv.login()
    except BaseException:
        kv.close()
        raise
    return kv


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
