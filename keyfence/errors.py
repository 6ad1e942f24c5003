"""Errors keyfence reports to people, and the exit codes the command line maps them to.

Every message names the file, field or Vault path at fault and what to do; none ever
carries key material. The command line prints them without a traceback.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

EXIT_OK: Final = 0
EXIT_VIOLATION: Final = 1
"""Mandatory policy violation, or a refused key operation (duplicate, lost race)."""
EXIT_INVALID: Final = 2
"""Invalid spec or config, Vault error, or the policy pack failed."""


class KeyfenceError(Exception):
    """An error with a message meant for the person running keyfence."""

    exit_code: int = EXIT_INVALID

    def __init__(self, message: str, *, problems: Iterable[str] = ()) -> None:
        self.problems = list(problems)
        self.headline = message
        super().__init__(self.render())

    def render(self) -> str:
        if not self.problems:
            return self.headline
        lines = [f"{self.headline} ({len(self.problems)} problem{'s' if len(self.problems) != 1 else ''}):"]
        lines.extend(f"  - {p}" for p in self.problems)
        return "\n".join(lines)

    @property
    def cause(self) -> str:
        """What went wrong, without the request it happened to: a Vault request's ``reason`` when
        the error has one (the request is named beside it by the caller), else the headline."""
        reason = getattr(self, "reason", None)
        return reason if isinstance(reason, str) and reason else self.headline


class SpecError(KeyfenceError):
    """The fleet spec cannot be loaded or breaks a rule; each problem names its YAML location."""


class VaultError(KeyfenceError):
    """Vault could not be reached, refused a request, or holds a key that fails verification."""


class KeyVerificationError(VaultError):
    """One or more keys resolved from Vault break the fleet's invariants."""


class PolicyPackError(KeyfenceError):
    """The policy pack could not be started, crashed, or answered outside the protocol."""


class RefusedError(KeyfenceError):
    """A key operation was refused to protect an invariant (duplicate key, existing key, lost race)."""

    exit_code = EXIT_VIOLATION
