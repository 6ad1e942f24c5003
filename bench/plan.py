"""What ``keyfence plan`` shows for a fleet, written as the bare floor's input (:mod:`bench.bare`).

The plan is taken from the check's own run of the program (check mode: Vault metadata, no
key material), so the floor registers the very resources the check declares: types, names,
parents, inputs and dependencies. Secret inputs are redacted exactly as the plan redacts
them and marked, so the floor registers them as secrets of the same shape.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from pulumi.runtime import rpc

from keyfence.check.harness import SECRET_PLACEHOLDER, Collected
from keyfence.check.runner import collect_program
from keyfence.check.target import DEFAULT_PROJECT, DEFAULT_STACK
from keyfence.vault import VaultSettings

from .bare import SECRET_MARK


def _redacted(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _redacted(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return SECRET_PLACEHOLDER if isinstance(value, str) else value


def _marked(value: Any) -> Any:
    """Plain JSON, every secret as ``{SECRET_MARK: redacted value}``."""
    if rpc.is_rpc_secret(value):
        return {SECRET_MARK: _redacted(rpc.unwrap_rpc_secret(value))}
    if isinstance(value, dict):
        return {k: _marked(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_marked(v) for v in value]
    return value


def plan_of(
    collected: Collected, *, project: str = DEFAULT_PROJECT, stack: str = DEFAULT_STACK
) -> dict[str, Any]:
    """The plan document of what a program run registered."""
    resources = [
        {
            "type": r.type,
            "name": r.name,
            "urn": r.urn,
            "parent": r.parent,
            "custom": r.custom,
            "dependencies": list(r.dependencies),
            "inputs": _marked(rpc.deserialize_properties(r.properties, keep_unknowns=True)),
        }
        for r in collected.resources
    ]
    return {
        "project": project,
        "stack": stack,
        "resources": resources,
        "outputs": _marked(collected.stack_outputs),
    }


def write_plan(spec_path: Path, settings: VaultSettings, out: Path) -> int:
    """Run the program as the check does and write its plan to ``out``; returns the resource count."""
    collected = collect_program(
        str(spec_path), mode="check", stack=DEFAULT_STACK, project=DEFAULT_PROJECT, vault_settings=settings
    )
    out.write_text(json.dumps(plan_of(collected)), encoding="utf-8")
    return len(collected.resources)


def main(argv: list[str]) -> int:
    """``python -m bench.plan SPEC OUT``: write the plan in a fresh interpreter; prints its size as JSON.

    The benchmark's parent never runs the program itself, so its heap stays small while it
    drives the measurements.
    """
    if len(argv) != 2:
        print("usage: python -m bench.plan SPEC OUT", file=sys.stderr)
        return 2
    count = write_plan(Path(argv[0]), VaultSettings.from_env(), Path(argv[1]))
    print(json.dumps({"resources": count}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
