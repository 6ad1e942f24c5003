"""Progress for operations over many keys: the terminal layer shows it, and pipes stay quiet."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from ..errors import KeyfenceError
from ..vault import KV2Client

# --------------------------------------------------------------------------- progress

T = TypeVar("T")
R = TypeVar("R")


class Progress(Protocol):
    """Where long operations report how far they are; the CLI draws it, tests ignore it."""

    def begin(self, description: str, total: int) -> None: ...

    def step(self) -> None: ...

    def end(self) -> None: ...


class NoProgress:
    """Reports nowhere: the default, and what a pipe gets."""

    def begin(self, description: str, total: int) -> None:
        return None

    def step(self) -> None:
        return None

    def end(self) -> None:
        return None


def tracked(
    client: KV2Client, fn: Callable[[T], R], items: Sequence[T], progress: Progress, description: str
) -> list[R | KeyfenceError]:
    """``client.read_many`` with one progress step per finished item."""

    def one(item: T) -> R:
        try:
            return fn(item)
        finally:
            progress.step()

    progress.begin(description, len(items))
    try:
        return client.read_many(one, items)
    finally:
        progress.end()
