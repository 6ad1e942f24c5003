"""A key's KV v2 metadata: its versions and the non-secret facts in ``custom_metadata``."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import MappingProxyType
from typing import Any

log = logging.getLogger("keyfence.vault")
retry_log = logging.getLogger("keyfence.vault.retry")
"""Retry notices: their own logger, so a command line can keep them out of a one-message failure."""

# --------------------------------------------------------------------------- metadata


def parse_time(value: Any) -> datetime | None:
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


@dataclass(frozen=True)
class FolderMetadata:
    """One folder level as a detailed-metadata listing shows it: its keys' metadata by path, and
    the paths of its sub-folders."""

    keys: Mapping[str, KeyMetadata]
    folders: tuple[str, ...]


def parse_metadata(mount: str, path: str, data: Any) -> KeyMetadata | None:
    if not isinstance(data, dict):
        return None
    try:
        versions = {
            int(number): KeyVersion(
                version=int(number),
                created_time=parse_time(info.get("created_time")),
                deletion_time=parse_time(info.get("deletion_time")),
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
            created_time=parse_time(data.get("created_time")),
            updated_time=parse_time(data.get("updated_time")),
            cas_required=data.get("cas_required") is True,
            max_versions=int(data.get("max_versions") or 0),
            delete_version_after=str(data.get("delete_version_after") or "0s"),
        )
    except (AttributeError, TypeError, ValueError):
        return None
