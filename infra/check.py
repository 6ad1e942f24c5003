"""``keyfence check`` and ``keyfence plan``: the real program, the real pack, no Pulumi CLI.

The program runs in its own process as the language host runs it, against the engine this
process serves (:mod:`infra.programrun`), in ``check`` (Vault metadata only) or ``offline``
mode, so no key material is ever read. What it registers goes to the policy pack over the
analyzer protocol, and each violation is traced back to the spec entry it comes from, so
reports can point at a line.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from keyfence_policies import labels as L

from .analyzer import Analysis, ConfigEntry, ConfigLayer, Level, PolicyMeta, Violation, load_policy_config
from .analyzer import run_policy_pack as _run_pack
from .errors import EXIT_OK, EXIT_VIOLATION, KeyfenceError, SpecError
from .harness import Collected, RegisteredResource
from .keys import Mode
from .program import CONFIG_NAMESPACE, SPEC_KEY, ProgramOptions
from .programrun import DEFAULT_TIMEOUT, ProgramRun, ResourceStream, run_program
from .spec import FleetSpec, Location, load_spec, locate, parse_yaml
from .vault import VaultSettings

DEFAULT_STACK: Final = "dev"
DEFAULT_PROJECT: Final = "keyfence"
SPEC_CONFIG_KEY: Final = "keyfence:spec"
PROCESS_TYPE: Final = "keyfence:fleet:Process"
SUBACCOUNT_TYPE: Final = "keyfence:fleet:Subaccount"
DEPLOYMENT_TYPE: Final = "kubernetes:apps/v1:Deployment"
OFFLINE_NOTE: Final = (
    "offline check: identities compared by Vault path only; fingerprints and key permissions "
    "from Vault not verified"
)
OFFLINE_CONFIG: Final[ConfigLayer] = {
    "no-duplicate-key-assignment": ConfigEntry(None, {"requireFingerprint": False}),
    "least-privilege-key": ConfigEntry(None, {"requirePermissions": False}),
}
"""Offline there are no fingerprints to compare; the pack must not demand them."""


def default_policy_pack() -> Path:
    """The keyfence pack folder (``policies/``) that holds the installed ``keyfence_policies`` rules.

    Raises ``KeyfenceError`` when the rules were installed without their pack folder (a
    non-editable ``pip install``): the check then needs ``--policy-pack DIR``.
    """
    import keyfence_policies

    folder = Path(keyfence_policies.__file__).resolve().parent.parent
    if not (folder / "PulumiPolicy.yaml").is_file() or not (folder / "__main__.py").is_file():
        raise KeyfenceError(
            f"no policy pack folder beside the installed rules ({folder}): pass --policy-pack "
            "with the path of keyfence's policies/ folder (it holds PulumiPolicy.yaml)"
        )
    return folder


# --------------------------------------------------------------------------- which spec, which stack


@dataclass(frozen=True)
class Target:
    """The spec to check, the stack it stands for, and the Pulumi project name."""

    spec_path: str
    stack: str
    project: str = DEFAULT_PROJECT


def resolve_target(spec: str | Path | None, stack: str | None, *, cwd: Path | None = None) -> Target:
    """``--spec`` wins; otherwise ``keyfence:spec`` from ``Pulumi.<stack>.yaml`` next to ``Pulumi.yaml``.

    ``Pulumi.yaml`` is searched from ``cwd`` upwards, as the Pulumi CLI does; a relative
    ``keyfence:spec`` is relative to the stack file's directory.
    """
    stack_name = stack or DEFAULT_STACK
    project_file = _find_project_file(cwd or Path.cwd())
    project_data = _read_yaml(project_file) if project_file is not None else {}
    project = project_data.get("name") if isinstance(project_data.get("name"), str) else None
    if spec is not None:
        return Target(str(spec), stack_name, project or DEFAULT_PROJECT)
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
    config = _read_yaml(stack_file).get("config")
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
    return Target(_display_path(spec_path), stack_name, project or DEFAULT_PROJECT)


def _display_path(path: Path) -> str:
    """Relative to the working directory when inside it: shorter messages, portable reports."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def _find_project_file(start: Path) -> Path | None:
    for directory in (start.resolve(), *start.resolve().parents):
        for name in ("Pulumi.yaml", "Pulumi.yml"):
            candidate = directory / name
            if candidate.is_file():
                return candidate
    return None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise KeyfenceError(f"{path}: cannot read it: {exc}") from None
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as exc:
        # PyYAML's constructors raise these on odd tags such as `!!int abc`.
        raise KeyfenceError(f"{path}: invalid YAML ({type(exc).__name__})") from None
    return data if isinstance(data, dict) else {}


# --------------------------------------------------------------------------- running the program


def collect_program(
    spec_path: str,
    *,
    mode: Mode,
    stack: str,
    project: str,
    vault_settings: VaultSettings | None = None,
    program: str | Path | None = None,
    config: Mapping[str, str] | None = None,
    spec: FleetSpec | None = None,
    timeout: float = DEFAULT_TIMEOUT,
    on_resource: Callable[[RegisteredResource], None] | None = None,
) -> Collected:
    """Run the program in a child process under the served engine: what ``pulumi preview`` would register.

    ``program`` is a Pulumi program (a ``__main__.py`` folder or a file) that calls
    ``infra.program.run_from_config()`` and may declare more resources beside the fleet;
    by default keyfence's own program (``infra/``, as ``Pulumi.yaml`` names it) runs.
    Stack config comes from the project's ``Pulumi.yaml`` and ``Pulumi.<stack>.yaml``, then
    ``config`` (``key`` means ``<project>:key``), as ``pulumi config set`` would give it.
    ``spec`` is accepted for callers that loaded it already; the child loads it itself.
    ``on_resource`` receives each registration as the engine records it.
    """
    del spec
    if program is None:
        entry, pwd = Path(__file__).resolve().parent, Path.cwd()
    else:
        given = Path(program).resolve()
        file = _program_entry(given)
        entry = given if given.is_dir() else file
        pwd = file.parent
    project_dir = _find_project_file(pwd)
    file_config, secure = stack_config(project_dir, stack) if project_dir is not None else ({}, [])
    given_config = {(k if ":" in k else f"{project}:{k}"): v for k, v in (config or {}).items()}
    stack_values = {**file_config, **given_config, f"{CONFIG_NAMESPACE}:{SPEC_KEY}": spec_path}
    unreadable = [
        k for k in secure if k not in given_config and (program is not None or k.startswith("kubernetes:"))
    ]
    if unreadable:
        raise KeyfenceError(
            f"{project_dir}: stack {stack} has encrypted config the hermetic check cannot decrypt: "
            f"{', '.join(unreadable)}; give each a stand-in value with --config KEY=VALUE"
        )
    child_spec = spec_path if pwd.resolve() == Path.cwd().resolve() else str(Path(spec_path).resolve())
    run = ProgramRun(
        program=entry,
        pwd=pwd,
        project=project,
        stack=stack,
        config=stack_values,
        secret_keys=[k for k in secure if k in given_config],
        options=ProgramOptions(spec_path=child_spec, mode=mode, vault=vault_settings),
        timeout=timeout,
    )
    return run_program(run, on_resource)


def _program_entry(program: Path) -> Path:
    entry = program / "__main__.py" if program.is_dir() else program
    if not entry.is_file():
        raise KeyfenceError(
            f"{program}: no Pulumi program here (expected a folder with __main__.py, or a .py file)"
        )
    return entry


def stack_config(project_file: Path, stack: str) -> tuple[dict[str, str], list[str]]:
    """Plain config of the project and stack files, and the keys whose values are encrypted.

    As the Pulumi CLI reads them: project-level ``config`` values and defaults first, the
    stack file's ``config`` over them; keys without a namespace belong to the project;
    structured values are passed as JSON.
    """
    data = _read_yaml(project_file)
    project = data.get("name") if isinstance(data.get("name"), str) else DEFAULT_PROJECT
    values: dict[str, str] = {}
    secure: list[str] = []

    def take(entries: Any, *, project_level: bool) -> None:
        for key, value in (entries or {}).items() if isinstance(entries, dict) else ():
            full = key if ":" in str(key) else f"{project}:{key}"
            if isinstance(value, dict) and "secure" in value:
                secure.append(full)
                continue
            if project_level and isinstance(value, dict) and ({"value", "default"} & value.keys()):
                value = value.get("value", value.get("default"))
            if value is not None:
                values[full] = value if isinstance(value, str) else json.dumps(value)

    take(data.get("config"), project_level=True)
    config_dir = project_file.parent
    stack_config_dir = data.get("stackConfigDir")
    if isinstance(stack_config_dir, str) and stack_config_dir:
        config_dir = config_dir / stack_config_dir
    stack_file = config_dir / f"Pulumi.{stack}.yaml"
    if stack_file.is_file():
        take(_read_yaml(stack_file).get("config"), project_level=False)
    return values, secure


# --------------------------------------------------------------------------- results


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


# --------------------------------------------------------------------------- check and plan


def run_check(
    spec_path: str | Path,
    *,
    stack: str = DEFAULT_STACK,
    offline: bool,
    policy_pack_dir: str | Path | None = None,
    policy_pack_config: str | Path | None = None,
    vault_settings: VaultSettings | None = None,
    project: str = DEFAULT_PROJECT,
    program: str | Path | None = None,
    config: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> CheckResult:
    """Declare the fleet, run the policy pack on it and map each violation to its spec entry.

    Raises KeyfenceError (exit 2) for an invalid spec or config, a Vault error or a pack failure.
    """
    spec_file = str(spec_path)
    user_config = load_policy_config(policy_pack_config) if policy_pack_config is not None else {}
    pack_dir = Path(policy_pack_dir) if policy_pack_dir is not None else default_policy_pack()
    mode: Mode = "offline" if offline else "check"
    # Loaded for the report, and first: an invalid spec is named before any process starts.
    spec = load_spec(spec_file)
    # As in the engine, each registration is analysed while the program runs; the verdict
    # still needs the program to complete (collect_program raises otherwise).
    stream = ResourceStream()
    with futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="keyfence-program") as pool:
        running = pool.submit(
            collect_program,
            spec_file,
            mode=mode,
            stack=stack,
            project=project,
            vault_settings=vault_settings,
            program=program,
            config=config,
            timeout=timeout,
            on_resource=stream.put,
        )
        running.add_done_callback(lambda _: stream.close())
        try:
            analysis = _run_pack(
                pack_dir,
                stream,
                project=project,
                stack=stack,
                config=user_config,
                base_config=dict(OFFLINE_CONFIG) if offline else {},
                config_source=str(policy_pack_config)
                if policy_pack_config is not None
                else "policy pack config",
            )
        finally:
            # The program's outcome comes first: a run that did not complete has no verdict.
            collected = running.result()
    return _result(spec_file, stack, offline, spec, collected, analysis)


def _result(
    spec_file: str, stack: str, offline: bool, spec: FleetSpec, collected: Collected, analysis: Analysis
) -> CheckResult:
    locator = _Locator(spec, collected.resources)
    findings = sorted(
        (Finding(v, *locator.locate(v.urn)) for v in analysis.violations),
        key=lambda f: (
            f.violation.policy,
            f.location.line if f.location else 0,
            f.violation.urn,
            f.violation.message,
        ),
    )
    order = {entry.ref: index for index, entry in enumerate(spec.entries())}
    rows = sorted(process_rows(collected.resources), key=lambda r: (order.get(r.ref, len(order)), r.ref))
    return CheckResult(
        spec_path=spec_file,
        stack=stack,
        offline=offline,
        pack=analysis.pack,
        pack_version=analysis.version,
        resource_count=len(collected.resources),
        policies=analysis.policies,
        levels={p.name: analysis.effective_level(p.name) for p in analysis.policies},
        processes=rows,
        findings=findings,
        notes=[OFFLINE_NOTE] if offline else [],
        pack_logs=[f"{line.severity}: {line.message}" for line in analysis.logs],
        program_output=collected.output,
    )


def run_plan(
    spec_path: str | Path,
    *,
    stack: str = DEFAULT_STACK,
    offline: bool,
    vault_settings: VaultSettings | None = None,
    project: str = DEFAULT_PROJECT,
    program: str | Path | None = None,
    config: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_TIMEOUT,
) -> PlanResult:
    """What the program would declare, secrets redacted; never reads key material."""
    spec_file = str(spec_path)
    # An invalid spec fails here, naming it, before a program process is started for nothing.
    load_spec(spec_file)
    collected = collect_program(
        spec_file,
        mode="offline" if offline else "check",
        stack=stack,
        project=project,
        vault_settings=vault_settings,
        program=program,
        config=config,
        timeout=timeout,
    )
    resources = [PlannedResource(r.type, r.name, r.urn, r.parent, r.inputs()) for r in collected.resources]
    return PlanResult(spec_file, stack, offline, resources, collected.output)


# --------------------------------------------------------------------------- reading the declarations


def process_rows(resources: list[RegisteredResource]) -> list[ProcessRow]:
    """One row per declared Deployment, from its redacted inputs (labels and key annotations)."""
    rows = []
    for resource in resources:
        if resource.type != DEPLOYMENT_TYPE:
            continue
        metadata = _mapping(resource.inputs().get("metadata"))
        labels = _mapping(metadata.get("labels"))
        annotations = _mapping(metadata.get("annotations"))
        subaccount = _text(labels.get(L.SUBACCOUNT)) or ""
        process = _text(labels.get(L.PROCESS)) or _text(metadata.get("name")) or resource.name
        mount, path = _text(annotations.get(L.VAULT_MOUNT)), _text(annotations.get(L.KEY_PATH))
        rows.append(
            ProcessRow(
                ref=f"{subaccount}/{process}" if subaccount else resource.name,
                subaccount=subaccount,
                process=process,
                namespace=_text(metadata.get("namespace")) or "",
                deployment=_text(metadata.get("name")) or "",
                role=_text(labels.get(L.ROLE)) or "",
                key="/".join(p for p in (mount, path) if p),
                fingerprint=_text(annotations.get(L.FINGERPRINT)),
                version=_text(annotations.get(L.KEY_VERSION)),
                permissions=_text(annotations.get(L.PERMISSIONS)),
            )
        )
    return rows


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class _Locator:
    """Maps a URN to the spec entry it was declared for: process first, else its subaccount."""

    def __init__(self, spec: FleetSpec, resources: list[RegisteredResource]) -> None:
        self._spec = spec
        self._by_urn = {r.urn: r for r in resources}
        self._processes = {e.ref: e.location for e in spec.entries()}
        self._subaccount_table: dict[str, Location] | None = None

    @property
    def _subaccounts(self) -> dict[str, Location]:
        """Read on first use: finding them re-parses the spec, which a clean check never needs."""
        if self._subaccount_table is None:
            self._subaccount_table = _subaccount_locations(self._spec)
        return self._subaccount_table

    def locate(self, urn: str) -> tuple[str | None, Location | None]:
        if not urn:
            return None, None
        seen: set[str] = set()
        resource = self._by_urn.get(urn)
        while resource is not None and resource.urn not in seen:
            seen.add(resource.urn)
            if resource.type == PROCESS_TYPE and resource.name in self._processes:
                return resource.name, self._processes[resource.name]
            if resource.type == SUBACCOUNT_TYPE and resource.name in self._subaccounts:
                return resource.name, self._subaccounts[resource.name]
            resource = self._by_urn.get(resource.parent)
        return self._by_name(urn.rsplit("::", 1)[-1])

    def _by_name(self, name: str) -> tuple[str | None, Location | None]:
        """A URN the program never registered (a pack may build one): match ``<sub>/<proc>[/...]``."""
        for table in (self._processes, self._subaccounts):
            for ref in sorted(table, key=len, reverse=True):
                if name == ref or name.startswith(ref + "/"):
                    return ref, table[ref]
        return None, None


def _subaccount_locations(spec: FleetSpec) -> dict[str, Location]:
    """Where each subaccount is written; the spec keeps only process locations, so re-read it."""
    source = spec.source
    try:
        data = parse_yaml(Path(source).read_text(encoding="utf-8"), source)
    except (OSError, UnicodeDecodeError, SpecError):
        return {}
    out = {}
    for index, sub in enumerate(spec.subaccounts):
        line, column = locate(data, ("subaccounts", index))
        out[sub.name] = Location(source, line, column, f"subaccounts[{index}]")
    return out
