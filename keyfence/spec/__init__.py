"""The fleet spec: the YAML contract users edit, typed and validated.

Every problem is reported at once, each with the file, line and column of the YAML
node at fault and a sentence saying what to change. Unknown fields are errors: a typo
such as ``permisions`` must never silently fall back to a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ..collector import batched_gc
from ..errors import SpecError
from .model import (
    DNS_LABEL,
    EXTRA_FIELD_HINTS,
    MAX_PROCESS_NAME,
    MAX_SUBACCOUNT_NAME,
    OPERATOR_DELIVERIES,
    PATH_SEGMENT,
    FleetSpec,
    Location,
    OperatorSection,
    Process,
    ProcessEntry,
    Subaccount,
    VaultSection,
)
from .rules import Problem, cross_rules
from .source import MAX_SPEC_BYTES, MAX_YAML_NODES, brief, dotted, kind_of, locate, parse_yaml

__all__ = [
    "DNS_LABEL",
    "MAX_PROCESS_NAME",
    "MAX_SPEC_BYTES",
    "MAX_SUBACCOUNT_NAME",
    "MAX_YAML_NODES",
    "OPERATOR_DELIVERIES",
    "PATH_SEGMENT",
    "FleetSpec",
    "Location",
    "OperatorSection",
    "Process",
    "ProcessEntry",
    "Subaccount",
    "VaultSection",
    "load_spec",
    "load_spec_text",
    "locate",
    "parse_yaml",
    "validate_spec",
]

# --------------------------------------------------------------------------- loading


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            field = str(loc[-1]) if loc else "?"
            hint = EXTRA_FIELD_HINTS.get(field, "check the spelling against the spec reference in README.md")
            message = f"unknown field {brief(field)}: {hint}"
        elif kind == "missing":
            message = "this field is required"
        elif kind in (
            "string_type",
            "bool_type",
            "list_type",
            "dict_type",
            "model_type",
            "model_attributes_type",
        ):
            expected = {
                "string_type": "a string (quote it)",
                "bool_type": "true or false",
                "list_type": "a list",
                "dict_type": "a mapping",
                "model_type": "a mapping",
                "model_attributes_type": "a mapping",
            }[kind]
            got = err.get("input")
            message = f"expected {expected}, got {kind_of(got)}"
            if kind == "string_type" and isinstance(got, (int, float, bool)):
                message = f"expected text, got {kind_of(got)}: quote it, e.g. \"{_yaml_word(got)}\""
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            message = f"{brief(err.get('input'))} is not one of {expected}"
        elif kind == "too_short":
            message = "must list at least one entry"
        else:
            message = err["msg"].removeprefix("Value error, ")
        out.append((loc, message))
    return out


def _yaml_word(value: object) -> str:
    return str(value).lower() if isinstance(value, bool) else str(value)


def _record_locations(spec: FleetSpec, data: Any, source: str) -> None:
    locations: dict[tuple[str, str], Location] = {}
    for si, sub in enumerate(spec.subaccounts):
        for pi, proc in enumerate(sub.processes):
            loc = ("subaccounts", si, "processes", pi)
            line, col = locate(data, loc)
            locations[(sub.name, proc.name)] = Location(source, line, col, dotted(loc))
    spec._locations = locations
    spec._source = source


def validate_spec(data: Any, source: str) -> FleetSpec:
    """Validate parsed YAML; every problem is reported in one SpecError, sorted by position."""
    problems = cross_rules(data)
    spec: FleetSpec | None = None
    try:
        if not isinstance(data, dict):
            raise SpecError(f"{source}: the spec must be a mapping with 'version' and 'subaccounts'")
        spec = FleetSpec.model_validate(data)
    except ValidationError as exc:
        problems = _pydantic_problems(exc) + problems
    if problems:
        seen = set()
        rendered = []
        for loc, message in sorted(problems, key=lambda p: (locate(data, p[0]), dotted(p[0]))):
            line, col = locate(data, loc)
            text = f"{source}:{line}:{col}: {dotted(loc)}: {message}"
            if text not in seen:
                seen.add(text)
                rendered.append(text)
        raise SpecError(f"{source}: invalid fleet spec", problems=rendered)
    assert spec is not None
    _record_locations(spec, data, source)
    return spec


def load_spec_text(text: str, source: str = "<spec>") -> FleetSpec:
    """Parse and validate a spec given as text (``source`` names it in messages).

    The collector runs in batches meanwhile (:func:`keyfence.collector.batched_gc`): a large
    spec's node tree otherwise meets full collections that make its load superlinear.
    """
    with batched_gc():
        return validate_spec(parse_yaml(text, source), source)


def load_spec(path: str | Path) -> FleetSpec:
    """Read, parse and validate the fleet spec at ``path``."""
    p = Path(path)
    try:
        with p.open("rb") as stream:
            raw = stream.read(MAX_SPEC_BYTES + 1)  # never more: the path may be huge, or /dev/zero
    except FileNotFoundError:
        raise SpecError(
            f"{p}: no such spec file (set keyfence:spec in the stack config or pass --spec)"
        ) from None
    except OSError as exc:
        raise SpecError(f"{p}: cannot read the spec: {exc.strerror}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{p}: the spec is larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB; refusing to parse it"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{p}: the spec is not UTF-8 text (byte {exc.start})") from None
    return load_spec_text(text, str(p))
