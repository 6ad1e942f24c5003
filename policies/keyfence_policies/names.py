"""The pack's policy names, importable without the Pulumi policy SDK.

The public contract (config files, CI and people refer to policies by these names), in the
order the pack runs and reports them. ``keyfence check`` needs them to layer its own config
under the user's, and must not load the whole pack into its process to learn them;
:mod:`keyfence_policies.pack` refuses to load if its rules ever disagree with this list.
"""

from __future__ import annotations

from typing import Final

POLICY_NAMES: Final[tuple[str, ...]] = (
    "no-duplicate-key-assignment",
    "single-writer-per-key",
    "subaccount-tag-required",
    "least-privilege-key",
    "key-not-in-env",
    "hardened-workload",
)
