"""Which spec and which stack a check runs on.

From `--spec`/`--stack`, `Pulumi.yaml` and `Pulumi.<stack>.yaml`, as the Pulumi CLI finds them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from ..errors import KeyfenceError

DEFAULT_STACK: Final = "dev"
DEFAULT_PROJECT: Final = "keyfence"
DEFAULT_ORGANIZATION: Final = "organization"
"""The organization of every stack in a self-managed Pulumi backend."""
SPEC_CONFIG_KEY: Final = "keyfence:spec"


@dataclass(frozen=True)
class Target:
    """The spec to check, the stack it stands for, and the Pulumi project name."""

    spec_path: str
    stack: str
    project: str = DEFAULT_PROJECT
    organization: str = DEFAULT_ORGANIZATION

    @property
    def qualified(self) -> str:
        """``org/project/stack``: how the key ledger names the stack."""
        return f"{self.organization}/{self.project}/{self.stack}"


def split_stack_name(name: str) -> tuple[str | None, str | None, str]:
    """``stack``, ``project/stack`` or ``org/project/stack`` -> (org, project, stack)."""
    parts = name.split("/")
    if len(parts) > 3 or not all(parts):
        raise KeyfenceError(f"--stack {name!r} is not STACK, PROJECT/STACK or ORG/PROJECT/STACK")
    padded: list[str | None] = [None] * (3 - len(parts)) + list(parts)
    return padded[0], padded[1], parts[-1]


def project_name(cwd: Path | None = None) -> str:
    """The ``name`` of the nearest ``Pulumi.yaml`` from ``cwd`` upwards, else ``keyfence``."""
    project_file = find_project_file(cwd or Path.cwd())
    data = read_yaml(project_file) if project_file is not None else {}
    name = data.get("name")
    return name if isinstance(name, str) and name else DEFAULT_PROJECT


def qualified_stack(name: str, cwd: Path | None = None) -> str:
    """``org/project/stack`` for a stack named as on the command line (project from Pulumi.yaml)."""
    org, project, stack = split_stack_name(name)
    return f"{org or DEFAULT_ORGANIZATION}/{project or project_name(cwd)}/{stack}"


def resolve_target(spec: str | Path | None, stack: str | None, *, cwd: Path | None = None) -> Target:
    """``--spec`` wins; otherwise ``keyfence:spec`` from ``Pulumi.<stack>.yaml`` next to ``Pulumi.yaml``.

    ``Pulumi.yaml`` is searched from ``cwd`` upwards, as the Pulumi CLI does; a relative
    ``keyfence:spec`` is relative to the stack file's directory. ``stack`` may be qualified
    (``org/project/stack``); the organization defaults to ``organization``.
    """
    org, named_project, stack_name = split_stack_name(stack or DEFAULT_STACK)
    organization = org or DEFAULT_ORGANIZATION
    project_file = find_project_file(cwd or Path.cwd())
    project_data = read_yaml(project_file) if project_file is not None else {}
    project = named_project or (
        project_data.get("name") if isinstance(project_data.get("name"), str) else None
    )
    if spec is not None:
        return Target(str(spec), stack_name, project or DEFAULT_PROJECT, organization)
    if project_file is None:
        raise KeyfenceError(
            f"no --spec given and no Pulumi.yaml in {cwd or Path.cwd()} or any parent directory; "
            "pass --spec PATH, or run keyfence inside the Pulumi project"
        )
    config_dir = project_file.parent
    stack_config_dir = project_data.get("stackConfigDir")
    if isinstance(stack_config_dir, str) and stack_config_dir:
        config_dir = config_dir / stack_config_dir
    stack_file = config_dir / f"Pulumi.{stack_name}.yaml"
    if not stack_file.is_file():
        raise KeyfenceError(
            f"{stack_file}: no such stack config; pass --stack NAME for an existing stack, or --spec PATH"
        )
    config = read_yaml(stack_file).get("config")
    value = config.get(SPEC_CONFIG_KEY) if isinstance(config, dict) else None
    if isinstance(value, dict):
        value = value.get("value")
    if not isinstance(value, str) or not value:
        raise KeyfenceError(
            f"{stack_file}: no {SPEC_CONFIG_KEY} in its config; "
            f"run 'pulumi config set {SPEC_CONFIG_KEY} PATH --stack {stack_name}' or pass --spec PATH"
        )
    path = Path(value)
    spec_path = path if path.is_absolute() else stack_file.parent / path
    return Target(display_path(spec_path), stack_name, project or DEFAULT_PROJECT, organization)


def display_path(path: Path) -> str:
    """Relative to the working directory when inside it: shorter messages, portable reports."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def find_project_file(start: Path) -> Path | None:
    for directory in (start.resolve(), *start.resolve().parents):
        for name in ("Pulumi.yaml", "Pulumi.yml"):
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise KeyfenceError(f"{path}: cannot read it: {exc}") from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        # PyYAML's constructors raise these on odd tags such as `!!int abc`.
        raise KeyfenceError(f"{path}: invalid YAML ({type(exc).__name__})") from None
    return data if isinstance(data, dict) else {}
