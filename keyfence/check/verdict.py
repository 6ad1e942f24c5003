"""What a policy pack run yields: its policies, their effective levels, violations and log lines."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final, Literal

Level = Literal["advisory", "mandatory", "remediate", "disabled"]
ReportedLevel = Literal["advisory", "mandatory"]
LEVELS: Final[tuple[Level, ...]] = ("advisory", "mandatory", "remediate", "disabled")


ALL_POLICIES: Final = "all"
"""The reserved config key whose enforcement level applies to every policy."""


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class Violation:
    """One diagnostic a pack reported; ``remediate`` that still fires arrives as ``mandatory``."""

    policy: str
    level: ReportedLevel
    urn: str
    """The resource at fault; empty for a stack-wide violation."""
    message: str
    pack: str
    description: str = ""


@dataclass(frozen=True)
class PolicyMeta:
    """A policy as the pack describes it in GetAnalyzerInfo."""

    name: str
    description: str
    level: Level
    """The policy's own level (or the pack's default), before any config."""
    kind: Literal["resource", "stack", "unspecified"]
    config_schema: dict[str, Any] | None
    """JSON schema of the policy's config object; None when the pack does not support config."""


@dataclass(frozen=True)
class PolicyConfig:
    """A policy's effective config: its enforcement level and properties."""

    level: Level
    properties: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LogLine:
    """Something the pack said: via the engine's Log service, or on stdout after the port."""

    source: Literal["engine", "stdout"]
    severity: str
    message: str
    urn: str = ""


@dataclass
class Analysis:
    """Everything one run of a pack produced."""

    pack: str
    version: str
    policies: list[PolicyMeta]
    config: dict[str, PolicyConfig]
    violations: list[Violation]
    logs: list[LogLine] = field(default_factory=list)

    @property
    def mandatory(self) -> list[Violation]:
        return [v for v in self.violations if v.level == "mandatory"]

    def effective_level(self, policy: str) -> Level:
        entry = self.config.get(policy)
        if entry is not None:
            return entry.level
        return next((p.level for p in self.policies if p.name == policy), "advisory")
