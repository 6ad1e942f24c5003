"""Where a resource was declared: the file and line of the program code that constructed it.

A violation on a resource the fleet did not declare (a hand-written Deployment in a wrapping
program) has no spec entry to point at; the line of the program that built it is the next
best thing, and what a code-scanning annotation or a person needs. The Pulumi SDK already
puts that position in every registration request (``sourcePosition``: the first frame in
user code above the resource's constructor), so reading it costs nothing and works wherever
the program runs, in this process or a child.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit


@dataclass(frozen=True)
class CallSite:
    """A file and 1-based line in the program's code."""

    file: str
    line: int


def call_site(request: Any) -> CallSite | None:
    """The declaring file and line of a RegisterResourceRequest; None when the SDK sent none."""
    position = getattr(request, "sourcePosition", None)
    uri = getattr(position, "uri", "") if position is not None else ""
    line = int(getattr(position, "line", 0) or 0)
    if not uri or line < 1:
        return None
    parts = urlsplit(uri)
    if parts.scheme != "file" or not parts.path:
        return None
    return CallSite(unquote(parts.path), line)
