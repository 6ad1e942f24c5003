"""Facts keyfence reads back from a key's metadata, shown the same way by every command."""

from __future__ import annotations

import re

from keyfence_policies import permissions as perms

from ..keys import FINGERPRINT_PATTERN, METADATA_FINGERPRINT
from ..vault import KeyMetadata


def key_status(metadata: KeyMetadata) -> str:
    current = metadata.current
    if current is None:
        return "no version"
    if current.destroyed:
        return "destroyed"
    if current.deleted:
        return "deleted"
    return "ok"


def shown(value: str | None, pattern: re.Pattern[str]) -> str | None:
    """A metadata value fit to print: it must look like what it claims to be.

    Custom metadata is written by hand too; a secret pasted into the wrong field never
    looks like a name or a timestamp, so it is never echoed.
    """
    return value if value is not None and pattern.match(value) else None


def known_permissions(raw: str | None) -> tuple[str, ...]:
    known = perms.PERMISSION_IDS["spot"] | perms.PERMISSION_IDS["futures"]
    return tuple(sorted({i for i in perms.parse_permissions(raw or "") if i in known}))


def metadata_fingerprint(metadata: KeyMetadata) -> str | None:
    """The fingerprint recorded in custom metadata, if it has the right form."""
    value = metadata.custom_metadata.get(METADATA_FINGERPRINT)
    return value if value is not None and FINGERPRINT_PATTERN.match(value) else None
