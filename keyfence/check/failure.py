"""A check that could not reach a verdict (exit 2), as a report.

An invalid spec, an unregistered key or a Vault error stops ``keyfence check`` before the
policy pack runs; the pull request still needs to see why, where the person looks: a
code-scanning annotation at the spec line and a comment listing the problems. The
messages already carry ``file:line:col``; this module reads those positions back.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Final

from ..errors import KeyfenceError

_POSITION: Final = re.compile(
    r"(?P<file>[^\s:][^:\n]*?):(?P<line>\d+):(?P<column>\d+)(?::\s*|\s+)(?P<text>.*)", re.S
)


@dataclass(frozen=True)
class Problem:
    """One reason the check stopped, and where it is written when the message says so."""

    text: str
    file: str | None = None
    line: int | None = None
    column: int | None = None


@dataclass
class CheckFailure:
    """What a report shows when no verdict could be reached."""

    stack: str
    spec_path: str | None
    offline: bool
    headline: str
    problems: list[Problem] = field(default_factory=list)
    exit_code: int = 2

    @classmethod
    def from_error(
        cls, exc: KeyfenceError, *, stack: str, spec_path: str | None, offline: bool
    ) -> CheckFailure:
        texts = exc.problems or [exc.headline]
        return cls(
            stack=stack,
            spec_path=spec_path,
            offline=offline,
            headline=exc.headline,
            problems=[parse_problem(t) for t in texts],
            exit_code=exc.exit_code,
        )


def parse_problem(text: str) -> Problem:
    """``file:line:col: message`` (or ``file:line:col (ref) message``) -> a located Problem."""
    match = _POSITION.fullmatch(text.strip())
    if match is None:
        return Problem(text.strip())
    return Problem(match["text"], match["file"], int(match["line"]), int(match["column"]))


def failure_verdict(failure: CheckFailure) -> str:
    """The one-line outcome: no verdict, and why."""
    count = len(failure.problems)
    return (
        f"ERROR: no verdict: {failure.headline} "
        f"({count} problem{'' if count == 1 else 's'}; the policy pack did not run) "
        f"[exit {failure.exit_code}]"
    )
