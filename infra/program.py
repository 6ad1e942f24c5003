"""The keyfence Pulumi program: spec -> verified keys -> resources, in that order.

Everything that can fail (spec, Vault, key verification) runs before the first
resource is declared, so a bad input never leaves a half-declared fleet.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .keys import Mode, ResolvedKey, resolve_keys
from .resources import declare_fleet
from .spec import FleetSpec, load_spec
from .vault import VaultSettings, connect


@dataclass(frozen=True)
class ProgramOptions:
    """How to run the program: which spec, and how much of Vault to read."""

    spec_path: str
    mode: Mode = "deploy"
    vault: VaultSettings | None = None
    """Connection settings; ``None`` reads the standard VAULT_* variables (unused offline)."""


def prepare(options: ProgramOptions) -> tuple[FleetSpec, list[ResolvedKey]]:
    """Load and validate the spec and resolve every key; raises KeyfenceError, declares nothing."""
    spec = load_spec(options.spec_path)
    if options.mode == "offline":
        return spec, resolve_keys(spec, None, "offline")
    settings = options.vault or VaultSettings.from_env()
    with connect(settings) as client:
        return spec, resolve_keys(spec, client, options.mode)


def run(options: ProgramOptions) -> dict[str, dict[str, Any]]:
    """The whole program; the Pulumi entry point and ``keyfence check`` both call this."""
    spec, keys = prepare(options)
    return declare_fleet(spec, keys)
