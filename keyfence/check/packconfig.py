"""The pack's own project file and its configuration, resolved the way the Pulumi CLI resolves them."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import jsonschema
import yaml

from ..errors import KeyfenceError, PolicyPackError
from .verdict import ALL_POLICIES, LEVELS, Level, PolicyConfig, PolicyMeta

# --------------------------------------------------------------------------- the pack's project file


@dataclass(frozen=True)
class PackProject:
    """What ``PulumiPolicy.yaml`` says about how to start the pack."""

    directory: Path
    python: str
    version: str | None
    virtualenv: Path | None


def read_pack_project(pack_dir: str | Path) -> PackProject:
    """Read ``PulumiPolicy.yaml`` and choose the interpreter the CLI would use for the pack."""
    directory = Path(pack_dir).resolve()
    project_file = directory / "PulumiPolicy.yaml"
    if not directory.is_dir():
        raise PolicyPackError(f"{directory}: no such policy pack directory")
    try:
        raw = yaml.safe_load(project_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise PolicyPackError(
            f"{directory}: not a policy pack (no PulumiPolicy.yaml); --policy-pack must name a pack directory"
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise PolicyPackError(f"{project_file}: cannot read the policy pack project: {exc}") from None
    if not isinstance(raw, dict):
        raise PolicyPackError(f"{project_file}: expected a mapping with at least 'runtime'")
    runtime = raw.get("runtime")
    options: dict[str, Any] = {}
    if isinstance(runtime, dict):
        options = runtime.get("options") or {}
        runtime = runtime.get("name")
        if not isinstance(options, dict):
            raise PolicyPackError(f"{project_file}: runtime.options must be a mapping")
    if runtime != "python":
        raise PolicyPackError(
            f"{project_file}: runtime is {runtime!r}; keyfence runs Python policy packs only "
            "(runtime: python)"
        )
    version = raw.get("version")
    virtualenv = _virtualenv(directory, project_file, options)
    python = str(venv_python(virtualenv)) if virtualenv is not None else sys.executable
    return PackProject(directory, python, str(version) if version is not None else None, virtualenv)


def _virtualenv(directory: Path, project_file: Path, options: Mapping[str, Any]) -> Path | None:
    configured = options.get("virtualenv")
    if configured in (None, ""):
        return None
    venv = Path(str(configured))
    venv = (venv if venv.is_absolute() else directory / venv).resolve()
    if not venv_python(venv).exists():
        raise PolicyPackError(
            f"{project_file}: runtime.options.virtualenv is {configured!r}, but {venv} is not a virtual "
            f"environment; create it with 'python -m venv {venv}' and install the pack's requirements into it"
        )
    return venv


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


# --------------------------------------------------------------------------- policy pack config


@dataclass(frozen=True)
class ConfigEntry:
    """One entry of a config layer; a level of None leaves the level as it was."""

    level: Level | None = None
    properties: dict[str, Any] = field(default_factory=dict)


ConfigLayer = dict[str, ConfigEntry]


def parse_policy_config(data: Any, source: str) -> ConfigLayer:
    """Parse Pulumi's ``--policy-pack-config`` format; invalid levels or shapes are errors."""
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise KeyfenceError(f"{source}: policy pack config must be a JSON object keyed by policy name")
    layer: ConfigLayer = {}
    for name, value in data.items():
        if isinstance(value, str):
            layer[name] = ConfigEntry(_level(value, source, name))
        elif isinstance(value, dict):
            props = dict(value)
            level = props.pop("enforcementLevel", None)
            parsed = None if level is None else _level(level, source, name)
            if name == ALL_POLICIES and props:
                raise KeyfenceError(
                    f"{source}: {name!r} takes only an enforcement level, "
                    f"not properties ({', '.join(sorted(props))})"
                )
            if parsed is None and not props:
                continue
            layer[name] = ConfigEntry(parsed, props)
        else:
            raise KeyfenceError(
                f"{source}: {name!r}: expected an enforcement level string or an object, "
                f"got {type(value).__name__}"
            )
    return layer


INLINE_CONFIG: Final = "inline --policy-pack-config JSON"


def is_inline(value: str | Path) -> bool:
    """Whether a ``--policy-pack-config`` value is the JSON object itself rather than a file."""
    return isinstance(value, str) and value.lstrip().startswith("{")


def config_source(value: str | Path | None) -> str:
    """How messages name a ``--policy-pack-config`` value: its file, or that it was inline JSON."""
    if value is None:
        return "policy pack config"
    return INLINE_CONFIG if is_inline(value) else str(value)


def load_policy_config(value: str | Path) -> ConfigLayer:
    """Read ``--policy-pack-config``: inline JSON when the text is an object, else a JSON file.

    Pulumi takes a file; people also write the object itself (``'{"all":"disabled"}'``), so a
    value starting with ``{`` is parsed as JSON and every error says which of the two was tried.
    """
    if is_inline(value):
        return _parse_json(str(value), INLINE_CONFIG)
    if not str(value).strip():
        raise KeyfenceError("--policy-pack-config is empty: give a JSON file or an inline JSON object")
    p = Path(value)
    try:
        text = p.read_text(encoding="utf-8")
    except IsADirectoryError:
        raise KeyfenceError(f"{p}: is a directory, not a policy pack config file (a JSON file)") from None
    except FileNotFoundError:
        raise KeyfenceError(
            f"{p}: no such policy pack config file (a value starting with '{{' is read as inline JSON)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise KeyfenceError(f"{p}: cannot read the policy pack config file: {exc}") from None
    if not text.strip():
        return {}
    return _parse_json(text, str(p))


def _parse_json(text: str, source: str) -> ConfigLayer:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeyfenceError(f"{source}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    return parse_policy_config(data, source)


def _level(value: Any, source: str, policy: str) -> Level:
    if isinstance(value, str) and value in LEVELS:
        return value
    raise KeyfenceError(
        f"{source}: {policy!r}: {value!r} is not an enforcement level; use one of {', '.join(LEVELS)}"
    )


def reconcile_config(
    policies: Sequence[PolicyMeta],
    initial: ConfigLayer,
    layers: Sequence[tuple[ConfigLayer, bool]],
    *,
    source: str = "policy pack config",
) -> dict[str, PolicyConfig]:
    """Each policy's effective config, built the way the Pulumi CLI builds it.

    Start from each policy's level and its schema's ``default`` values, apply the pack's
    initialConfig, then each layer in order (``(layer, strict)``; a strict layer may not name
    a policy the pack lacks, a lenient one skips such entries). In every layer ``all`` sets
    the level of every policy first, then per-policy entries win. Finally each policy's
    properties are validated against its schema.
    """
    known = {p.name for p in policies}
    result: dict[str, PolicyConfig] = {}
    for policy in policies:
        defaults = {
            k: v["default"]
            for k, v in ((policy.config_schema or {}).get("properties") or {}).items()
            if isinstance(v, dict) and "default" in v and k != "enforcementLevel"
        }
        result[policy.name] = PolicyConfig(policy.level, defaults)
    _apply(result, initial, known, strict=False)
    for layer, strict in layers:
        if strict:
            unknown = sorted(k for k in layer if k != ALL_POLICIES and k not in known)
            if unknown:
                raise KeyfenceError(
                    f"{source}: unknown polic{'y' if len(unknown) == 1 else 'ies'} "
                    f"{', '.join(map(repr, unknown))}; the pack has {', '.join(sorted(known))}"
                )
        _apply(result, layer, known, strict=strict)
    _validate(policies, result, source)
    return result


def _apply(result: dict[str, PolicyConfig], layer: ConfigLayer, known: set[str], *, strict: bool) -> None:
    everything = layer.get(ALL_POLICIES)
    if everything is not None and everything.level is not None:
        for name, current in list(result.items()):
            result[name] = PolicyConfig(everything.level, current.properties)
    for name, entry in layer.items():
        if name == ALL_POLICIES or name not in known:
            continue
        current = result[name]
        result[name] = PolicyConfig(entry.level or current.level, {**current.properties, **entry.properties})


def _validate(policies: Sequence[PolicyMeta], config: Mapping[str, PolicyConfig], source: str) -> None:
    problems: list[str] = []
    for policy in policies:
        if policy.config_schema is None:
            continue
        schema = {"type": "object", **policy.config_schema}
        try:
            validator_cls = jsonschema.validators.validator_for(schema, default=jsonschema.Draft7Validator)
            validator_cls.check_schema(schema)
        except jsonschema.SchemaError as exc:
            raise PolicyPackError(
                f"policy {policy.name!r} declares an invalid config schema: {exc.message}"
            ) from None
        validator = validator_cls(schema)
        properties = config[policy.name].properties if policy.name in config else {}
        for error in sorted(validator.iter_errors(properties), key=lambda e: list(map(str, e.absolute_path))):
            where = ".".join(str(p) for p in error.absolute_path)
            problems.append(f"{policy.name}{'.' + where if where else ''}: {error.message}")
    if problems:
        raise KeyfenceError(f"{source}: invalid policy configuration", problems=problems)
