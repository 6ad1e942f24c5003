"""Entry point for ``pulumi preview`` / ``pulumi up`` (Pulumi.yaml: ``main: infra/``)."""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Pulumi runs this folder as a script, with infra/ itself first on sys.path; put the
    # project root there instead so `infra` imports as a package even when not installed.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

import pulumi

from infra.errors import KeyfenceError
from infra.program import run_from_config

try:
    run_from_config()
except KeyfenceError as exc:
    # RunError ends the program with this message and no traceback.
    raise pulumi.RunError(str(exc)) from None
