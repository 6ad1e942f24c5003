"""What a check or a plan yields, built from redacted inputs and violation messages only."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

from ..errors import EXIT_OK, EXIT_VIOLATION
from ..spec import Location
from .verdict import Level, PolicyMeta, Violation

OFFLINE_NOTE: Final = (
    "offline check: identities compared by Vault path only; fingerprints and key permissions "
    "from Vault not verified"
)


@dataclass(frozen=True)
class ProcessRow:
    """One process as declared: only plain, non-secret facts read from the Deployment's inputs."""

    ref: str
    subaccount: str
    process: str
    namespace: str
    deployment: str
    role: str
    key: str
    fingerprint: str | None
    version: str | None
    permissions: str | None


@dataclass(frozen=True)
class Finding:
    """A violation and where in the spec it comes from (``None``: nowhere in particular)."""

    violation: Violation
    ref: str | None
    location: Location | None


@dataclass
class CheckResult:
    """Everything the reports need; built from redacted inputs and violation messages only."""

    spec_path: str
    stack: str
    offline: bool
    pack: str
    pack_version: str
    resource_count: int
    policies: list[PolicyMeta]
    levels: dict[str, Level]
    processes: list[ProcessRow]
    findings: list[Finding]
    notes: list[str] = field(default_factory=list)
    pack_logs: list[str] = field(default_factory=list)
    program_output: list[str] = field(default_factory=list)
    """What the program printed (never part of a report)."""

    @property
    def mandatory(self) -> list[Finding]:
        return [f for f in self.findings if f.violation.level == "mandatory"]

    @property
    def advisory(self) -> list[Finding]:
        return [f for f in self.findings if f.violation.level == "advisory"]

    @property
    def ok(self) -> bool:
        return not self.mandatory

    def policies_at(self, level: Level) -> list[str]:
        """Names of the policies that ran at ``level`` after config (sorted)."""
        return sorted(p.name for p in self.policies if self.levels.get(p.name, p.level) == level)

    @property
    def weakened(self) -> list[PolicyMeta]:
        """Policies the pack declares blocking (mandatory/remediate) that config made disabled or advisory."""
        return sorted(
            (
                p
                for p in self.policies
                if p.level in ("mandatory", "remediate")
                and self.levels.get(p.name, p.level) in ("disabled", "advisory")
            ),
            key=lambda p: p.name,
        )

    @property
    def exit_code(self) -> int:
        return EXIT_OK if self.ok else EXIT_VIOLATION


@dataclass(frozen=True)
class PlannedResource:
    """A declared resource with every secret input shown as ``[secret]``."""

    type: str
    name: str
    urn: str
    parent: str
    inputs: dict[str, Any]


@dataclass
class PlanResult:
    spec_path: str
    stack: str
    offline: bool
    resources: list[PlannedResource]
    program_output: list[str] = field(default_factory=list)
