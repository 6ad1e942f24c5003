"""Deprecated: the wrapping-program API moved to ``keyfence.program``; this alias goes in the next release."""

import warnings
from typing import Any

from keyfence import program as _program


def run_from_config() -> dict[str, dict[str, Any]]:
    """``keyfence.program.run_from_config()``, with a DeprecationWarning naming the new import."""
    warnings.warn(
        "infra.program.run_from_config() is deprecated and will be removed in the next release; "
        "use `from keyfence.program import run_from_config`",
        DeprecationWarning,
        stacklevel=2,
    )
    return _program.run_from_config()
