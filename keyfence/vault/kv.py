"""KV version 2 operations on exchange keys: each method is one hvac call through the transport."""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any, Final

import hvac
import hvac.exceptions
import requests
from keyfence_policies.labels import canonical_key_path
from requests.adapters import HTTPAdapter

from ..errors import KeyfenceError, RefusedError
from ..material import KeyMaterial
from .errors import (
    KeyAccessDeniedError,
    KeyVersionGoneError,
    KVMountError,
    MalformedKeyError,
    VaultRequestError,
)
from .metadata import FolderMetadata, KeyMetadata, parse_metadata
from .pooled import PooledAdapter, VaultSession
from .settings import VaultSettings
from .transport import NO_ROUTE, Operation, Transport, data_of, errors_text, gone_state

log = logging.getLogger("keyfence.vault")
retry_log = logging.getLogger("keyfence.vault.retry")
"""Retry notices: their own logger, so a command line can keep them out of a one-message failure."""

API_KEY_FIELD: Final = "api_key"
API_SECRET_FIELD: Final = "api_secret"
WHOLE_LISTING: Final = {"limit": -1}
"""Query of a plain LIST: every entry. Without it OpenBao silently applies a policy's pagination_limit."""
PAGINATION_HINT: Final = (
    "; if it has 'list' there, a 'pagination_limit' in the policy's rule caps the listing, and keyfence "
    "needs every key to tell which exist: remove pagination_limit from that rule"
)
LIST_PAGE: Final = 1000
"""Entries per detailed-metadata page: one page holds a large folder (0.1 s for 1000 on loopback)."""


class KV2Client(Transport):
    """KV version 2 operations on keys, over one hvac client and one pooled session.

    Safe to share between threads: hvac keeps no per-request state and the session's
    connection pool is thread-safe. Create it with :func:`connect`.
    """

    # ----------------------------------------------------------------- key operations

    def read_metadata(self, mount: str, path: str) -> KeyMetadata:
        """The key's metadata; never reads the material (needs only read on ``<mount>/metadata/<path>``)."""
        mount, path = _checked(mount, path)
        op = Operation("read the metadata of", mount, f"{mount}/{path}", "read", f"{mount}/metadata/{path}")
        response = self._call(
            op, lambda: self._client.secrets.kv.v2.read_secret_metadata(path=path, mount_point=mount)
        )
        metadata = parse_metadata(mount, path, data_of(self._vault_json(op, response)))
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
        op = Operation(f"read version {version} of", mount, f"{mount}/{path}", "read", f"{mount}/data/{path}")
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
        body = data_of(self._vault_json(op, response))
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
        op = Operation(
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
        body = data_of(response)
        version = body.get("version") if isinstance(body, dict) else None
        if not isinstance(version, int):
            raise VaultRequestError(
                self.addr, op.ref, "Vault accepted the write but did not say which version it made"
            )
        return version

    def update_custom_metadata(self, mount: str, path: str, custom_metadata: Mapping[str, str]) -> None:
        """Replace the key's custom metadata; its other metadata settings stay as they are."""
        mount, path = _checked(mount, path)
        op = Operation(
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
        op = Operation(
            "update the metadata of", mount, f"{mount}/{path}", "update", f"{mount}/metadata/{path}"
        )
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

    def read_record(self, mount: str, path: str) -> tuple[dict[str, str], int] | None:
        """A non-secret record (string fields) and its version; ``None`` when nothing is there.

        For keyfence's own bookkeeping (the key ledger), never for key material. A record whose
        current version was deleted or destroyed is not "nothing": KeyVersionGoneError says so.
        """
        mount, path = _checked(mount, path)
        op = Operation("read", mount, f"{mount}/{path}", "read", f"{mount}/data/{path}")
        try:
            response = self._call(
                op,
                lambda: self._client.secrets.kv.v2.read_secret_version(
                    path=path, mount_point=mount, raise_on_deleted_version=True
                ),
                translate_missing=False,
            )
        except hvac.exceptions.InvalidPath as exc:
            if NO_ROUTE.search(errors_text(exc)) or self._mount_finding(mount):
                raise self._missing(op, exc) from None
            gone = gone_state(exc)
            if gone is not None:
                state, version = gone
                which = f"its current version {version}" if version else "its current version"
                raise KeyVersionGoneError(
                    self.addr, op.ref, f"{which} is {state}", state=state, version=version
                ) from None
            return None
        body = data_of(self._vault_json(op, response))
        data = body.get("data") if isinstance(body, dict) else None
        meta = body.get("metadata") if isinstance(body, dict) else None
        version = meta.get("version") if isinstance(meta, dict) else None
        if not isinstance(data, dict) or not isinstance(version, int):
            raise VaultRequestError(self.addr, op.ref, "Vault answered with a record keyfence cannot parse")
        return {str(k): str(v) for k, v in data.items() if v is not None}, version

    def write_record(self, mount: str, path: str, record: Mapping[str, str], cas: int) -> tuple[int, str]:
        """Write a non-secret record with check-and-set (``cas=0``: create only); the new version
        and its ``created_time`` as Vault wrote it (which names that version for good: a record
        deleted and created again restarts at version 1, never at the same time).

        A lost race is a RefusedError. Not retried on a check-and-set mismatch: the caller
        reads again and decides, because someone else's write may be the reason.
        """
        mount, path = _checked(mount, path)
        op = Operation(
            "create" if cas == 0 else "update",
            mount,
            f"{mount}/{path}",
            "create" if cas == 0 else "update",
            f"{mount}/data/{path}",
        )
        response = self._call(
            op,
            lambda: self._client.secrets.kv.v2.create_or_update_secret(
                path=path, secret=dict(record), cas=cas, mount_point=mount
            ),
        )
        body = data_of(response)
        version = body.get("version") if isinstance(body, dict) else None
        created = body.get("created_time") if isinstance(body, dict) else None
        if not isinstance(version, int):
            raise VaultRequestError(self.addr, op.ref, "Vault accepted the write but did not say its version")
        return version, created if isinstance(created, str) else ""

    def capabilities(self, api_paths: Sequence[str]) -> dict[str, frozenset[str]] | None:
        """The token's capabilities on each ACL path (``sys/capabilities-self``).

        None when the token may not ask (the default policy allows it): the requests themselves
        are then the only check.
        """
        paths = list(api_paths)
        op = Operation(
            "look up the token's capabilities on", "", ", ".join(paths), "update", "sys/capabilities-self"
        )
        try:
            response = self._call(op, lambda: self._client.sys.get_capabilities(paths=paths))
        except KeyAccessDeniedError:
            return None
        answer = self._vault_json(op, response)
        nested = answer.get("data")
        data: dict[str, Any] = nested if isinstance(nested, dict) else answer
        out: dict[str, frozenset[str]] = {}
        for path in paths:
            granted = data.get(path)
            if not isinstance(granted, list):
                return None  # an answer keyfence does not understand proves nothing either way
            out[path] = frozenset(str(c) for c in granted)
        return out

    def list_keys(self, mount: str, prefix: str = "") -> list[str]:
        """Every leaf path under ``prefix``, recursively, sorted; empty when there is none.

        LIST answers one folder level, sub-folders marked by a trailing '/'; a name can be
        both a key and a folder. Each LIST asks for every entry (``limit=-1``): OpenBao cuts an
        unpaginated LIST to a policy's ``pagination_limit`` without a word, but refuses an explicit
        limit above it, so a capped listing is a refusal here, never a short list.
        """
        mount = canonical_key_path(mount)
        if not mount:
            raise ValueError("mount must not be empty")
        found: list[str] = []
        pending = [canonical_key_path(prefix)]
        while pending:
            folder = pending.pop()
            listing = f"{mount}/{folder}".rstrip("/") + "/"
            metadata = f"{mount}/metadata/{folder}".rstrip("/") + "/"
            op = Operation("list the keys under", mount, listing, "list", metadata)
            url = f"/v1/{metadata}"
            try:
                response = self._call(
                    op,
                    functools.partial(self._client.adapter.list, url, params=WHOLE_LISTING),
                    translate_missing=False,
                )
            except KeyAccessDeniedError as exc:
                raise KeyAccessDeniedError(exc.addr, exc.ref, exc.reason + PAGINATION_HINT) from None
            except hvac.exceptions.InvalidPath as exc:
                # An empty folder is a 404, and so is any LIST on a KV v1 mount: ask which.
                if NO_ROUTE.search(errors_text(exc)) or self._mount_finding(mount):
                    raise self._missing(op, exc) from None
                continue
            data = data_of(self._vault_json(op, response))
            names = data.get("keys") if isinstance(data, dict) else None
            if not isinstance(names, list):
                # KV version 1 ignores the limit and answers an empty object instead of its 404.
                finding = self._mount_finding(mount)
                if finding:
                    raise KVMountError(self.addr, op.ref, finding)
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

    def list_detailed_metadata(
        self, mount: str, folder: str, *, for_key: str | None = None
    ) -> FolderMetadata | None:
        """Every key directly in ``folder`` with its metadata, and the sub-folders' paths, from
        OpenBao's paginated ``LIST <mount>/detailed-metadata/<folder>/``.

        ``None`` means "not available, read each key instead", and only for what a per-key read
        could still answer: a server without the endpoint (HashiCorp Vault: 404 or 405), a token
        without 'list' on it (403 from a live token), a folder that does not exist, any other
        refusal of this request, an answer keyfence cannot parse -- never "no keys". What no
        read could survive (unreachable once the retries are spent, sealed, 5xx, rate-limited,
        token rejected, not Vault's JSON) raises the VaultUnavailableError the per-key read
        would: with ``for_key`` (the first key the listing stands in for) its message and retry
        notices read exactly as that key's metadata read's, else as listing the folder's keys.

        The keys returned may be a subset of the folder's: a page that a policy's list filter
        shortened reads as the last one. Never take a key's absence here as its absence.
        """
        mount, folder = canonical_key_path(mount), canonical_key_path(folder)
        if not mount:
            raise ValueError("mount must not be empty")
        url = f"/v1/{mount}/detailed-metadata/{folder}".rstrip("/") + "/"
        action, ref = (
            ("read the metadata of", f"{mount}/{canonical_key_path(for_key)}")
            if for_key
            else ("list the keys under", f"{mount}/{folder}".rstrip("/") + "/")
        )
        op = Operation(action, mount, ref, "list", url[4:])
        found: dict[str, KeyMetadata] = {}
        folders: list[str] = []
        after = ""
        while True:
            params = {"limit": LIST_PAGE, **({"after": after} if after else {})}
            try:
                response = self._call(
                    op,
                    functools.partial(self._client.adapter.list, url, params=params),
                    translate_missing=False,
                )
            except hvac.exceptions.InvalidPath:
                # The page after a full last page is a 404 too: only the first one says "not available".
                return FolderMetadata(found, tuple(folders)) if after else None
            except VaultRequestError:
                return None
            page = data_of(self._vault_json(op, response))
            names = page.get("keys") if isinstance(page, dict) else None
            infos = page.get("key_info") if isinstance(page, dict) else None
            if not isinstance(names, list) or not isinstance(infos, dict):
                return None
            for name in names:
                if not isinstance(name, str) or not name.strip("/"):
                    return None
                path = f"{folder}/{name}" if folder else name
                if name.endswith("/"):
                    # A sub-folder: its key_info is empty, or a copy of a same-named key's.
                    folders.append(path.rstrip("/"))
                    continue
                metadata = parse_metadata(mount, path, infos.get(name))
                if metadata is None:
                    return None
                found[path] = metadata
            if len(names) < LIST_PAGE:
                return FolderMetadata(found, tuple(folders))
            after = str(names[-1])

    def destroy_all_versions(self, mount: str, path: str) -> None:
        """Delete the key's metadata and every version permanently: the material is gone for good."""
        mount, path = _checked(mount, path)
        op = Operation(
            "destroy every version of", mount, f"{mount}/{path}", "delete", f"{mount}/metadata/{path}"
        )
        self._call(
            op,
            lambda: self._client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point=mount),
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


def _checked(mount: str, path: str) -> tuple[str, str]:
    mount, path = canonical_key_path(mount), canonical_key_path(path)
    if not mount or not path:
        raise ValueError("mount and path must both be non-empty")
    return mount, path


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
            settings.shown_addr,
        )
    session = VaultSession()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=settings.concurrency, max_retries=0)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    # hvac prefers the session's verify over its own argument when the session's is truthy.
    session.verify = settings.verify
    # requests re-reads the environment on every request while trust_env is set (proxy variables,
    # ~/.netrc, the CA bundle variables): a third of a metadata read's CPU. Read it once, here.
    session.proxies = requests.utils.get_environ_proxies(settings.addr)
    if session.verify is True:
        session.verify = os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or True
    session.trust_env = False
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
        adapter=PooledAdapter,
    )
    kv = KV2Client(client, settings, session)
    try:
        kv.login()
    except BaseException:
        kv.close()
        raise
    return kv
