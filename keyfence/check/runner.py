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
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from keyfence_policies import labels as L
from keyfence_policies.names import POLICY_NAMES

from ..errors import KeyfenceError, SpecError
from ..keys import Mode, resolve_keys
from ..program import CONFIG_NAMESPACE, SPEC_KEY, ProgramOptions
from ..spec import FleetSpec, Location, load_spec, locate, parse_yaml
from ..vault import VaultSettings
from .analyzer import PolicyPackSession
from .facts import KeyFacts, offline_facts, vault_facts
from .harness import Collected, RegisteredResource
from .packconfig import ConfigEntry, ConfigLayer, config_source, load_policy_config
from .pipeline import check_overlapped
from .programrun import DEFAULT_TIMEOUT, ProgramRun, run_program
from .results import OFFLINE_NOTE, CheckResult, Finding, PlannedResource, PlanResult, ProcessRow
from .target import (
    DEFAULT_ORGANIZATION,
    DEFAULT_PROJECT,
    DEFAULT_STACK,
    display_path,
    find_project_file,
    read_yaml,
)
from .verdict import Analysis, Violation

LEDGER_POLICY: Final = "key-ledger"
"""The check's own verdict on the key ledger, reported beside the pack's violations."""
PROCESS_TYPE: Final = "keyfence:fleet:Process"
SUBACCOUNT_TYPE: Final = "keyfence:fleet:Subaccount"
DEPLOYMENT_TYPE: Final = "kubernetes:apps/v1:Deployment"
STATEFULSET_TYPE: Final = "kubernetes:apps/v1:StatefulSet"
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


def default_program() -> Path:
    """keyfence's own Pulumi program folder (``infra/``, as ``Pulumi.yaml`` names it) beside the package.

    Raises ``KeyfenceError`` when keyfence was installed without its project folder: the
    check then needs ``--program DIR``.
    """
    folder = Path(__file__).resolve().parents[2] / "infra"
    if not (folder / "__main__.py").is_file():
        raise KeyfenceError(
            f"no keyfence program folder at {folder}: pass --program with the folder of the Pulumi "
            "program to check (the one Pulumi.yaml names in 'main')"
        )
    return folder


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
    organization: str = DEFAULT_ORGANIZATION,
    timeout: float = DEFAULT_TIMEOUT,
    on_resource: Callable[[RegisteredResource], None] | None = None,
) -> Collected:
    """Run the program in a child process under the served engine: what ``pulumi preview`` would register.

    ``program`` is a Pulumi program (a ``__main__.py`` folder or a file) that calls
    ``keyfence.program.run_from_config()`` and may declare more resources beside the fleet;
    by default keyfence's own program (``infra/``, as ``Pulumi.yaml`` names it) runs.
    Stack config comes from the project's ``Pulumi.yaml`` and ``Pulumi.<stack>.yaml``, then
    ``config`` (``key`` means ``<project>:key``), as ``pulumi config set`` would give it.
    ``spec`` is accepted for callers that loaded it already; the child loads it itself.
    ``on_resource`` receives each registration as the engine records it.
    """
    del spec
    if program is None:
        entry, pwd = default_program(), Path.cwd()
    else:
        given = Path(program).resolve()
        file = _program_entry(given)
        entry = given if given.is_dir() else file
        pwd = file.parent
    project_dir = find_project_file(pwd)
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
        options=ProgramOptions(
            spec_path=child_spec, mode=mode, vault=vault_settings, stack=f"{organization}/{project}/{stack}"
        ),
        organization=organization,
        timeout=timeout,
    )
    return run_program(run, on_resource)


def _program_entry(program: Path) -> Path:
    entry = program / "__main__.py" if program.is_dir() else program
    if not entry.is_file():
        raise KeyfenceError(
            f"{program}: no Pulumi program here (expected a folder with __main__.py, or a .py file)"
        )
    # Absolute, as the language host runs it: the SDK records each resource's source position
    # only for frames whose file name is an absolute path.
    return entry.resolve()


def stack_config(project_file: Path, stack: str) -> tuple[dict[str, str], list[str]]:
    """Plain config of the project and stack files, and the keys whose values are encrypted.

    As the Pulumi CLI reads them: project-level ``config`` values and defaults first, the
    stack file's ``config`` over them; keys without a namespace belong to the project;
    structured values are passed as JSON.
    """
    data = read_yaml(project_file)
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
        take(read_yaml(stack_file).get("config"), project_level=False)
    return values, secure


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
    organization: str = DEFAULT_ORGANIZATION,
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
    # The pack's interpreter boots (most of a second) while the program starts in its own
    # process. Meanwhile the check reads the key facts the pack is told (itself, never from the
    # program, which must not be able to change the verdict), configures the pack with them,
    # and has it analyse each registration as the program makes it (keyfence.check.pipeline).
    session = PolicyPackSession(pack_dir, project=project, stack=stack)
    session.spawn_and_close_on_error()
    checked = check_overlapped(
        session,
        read_facts=lambda: key_facts(spec, mode, vault_settings, f"{organization}/{project}/{stack}"),
        run_program=lambda on_resource: collect_program(
            spec_file,
            mode=mode,
            stack=stack,
            project=project,
            vault_settings=vault_settings,
            program=program,
            config=config,
            spec=spec,
            organization=organization,
            timeout=timeout,
            on_resource=on_resource,
        ),
        base_config=lambda facts: pack_base_config(facts, offline=offline),
        config=user_config,
        config_source=config_source(policy_pack_config),
    )
    result = _result(spec_file, stack, offline, spec, checked.collected, checked.analysis)
    result.notes.extend(checked.facts.notes)
    return result


def key_facts(spec: FleetSpec, mode: Mode, settings: VaultSettings | None, stack: str) -> KeyFacts:
    """What the pack is told about keys: the spec's word offline, Vault metadata in check mode."""
    if mode == "offline":
        return offline_facts(spec)
    from ..vault import connect  # hvac is loaded only when Vault is read
    from ..vault.listing import FolderListings

    with connect(settings or VaultSettings.from_env()) as client:
        # One set of folder listings for the run: the facts reuse those resolving the keys made.
        listings = FolderListings(client, spec.vault.mount)
        return vault_facts(client, spec, resolve_keys(spec, client, mode, stack, listings), listings)


def pack_base_config(facts: KeyFacts, *, offline: bool) -> ConfigLayer:
    """keyfence's own config layer for its pack: the key facts for every policy, and offline relaxations.

    Under the user's ``--policy-pack-config``; policies a foreign pack does not have are skipped.
    """
    properties = facts.config()
    layer: ConfigLayer = {name: ConfigEntry(None, dict(properties)) for name in POLICY_NAMES}
    if offline:
        for name, entry in OFFLINE_CONFIG.items():
            layer[name] = ConfigEntry(entry.level, {**layer[name].properties, **entry.properties})
    return layer


def _result(
    spec_file: str, stack: str, offline: bool, spec: FleetSpec, collected: Collected, analysis: Analysis
) -> CheckResult:
    locator = _Locator(spec, collected.resources)
    workloads = _workloads(collected.resources)
    violations = [*analysis.violations, *_ledger_violations(workloads)]
    findings = sorted(
        (Finding(v, *locator.locate(v.urn)) for v in violations),
        key=lambda f: (
            f.violation.policy,
            f.location.line if f.location else 0,
            f.violation.urn,
            f.violation.message,
        ),
    )
    order = {entry.ref: index for index, entry in enumerate(spec.entries())}
    rows = sorted((_row(w) for w in workloads), key=lambda r: (order.get(r.ref, len(order)), r.ref))
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
    # By URN: registrations arrive in whatever order the SDK's tasks finish, and two runs of
    # the same spec must diff clean.
    resources = [
        PlannedResource(r.type, r.name, r.urn, r.parent, whole_numbers(r.inputs()))
        for r in sorted(collected.resources, key=lambda r: r.urn)
    ]
    return PlanResult(spec_file, stack, offline, resources, collected.output)


def whole_numbers(value: Any) -> Any:
    """Numbers as written: the wire format (protobuf Struct) turns every number into a float,
    so ``replicas: 1`` would read back as ``1.0``."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value


# --------------------------------------------------------------------------- reading the declarations


@dataclass(frozen=True)
class _Workload:
    """A declared Deployment or StatefulSet and its redacted metadata, read once for rows and verdicts."""

    resource: RegisteredResource
    metadata: Mapping[str, Any]

    @property
    def annotations(self) -> Mapping[str, Any]:
        return _mapping(self.metadata.get("annotations"))


def _workloads(resources: list[RegisteredResource]) -> list[_Workload]:
    """Deployments and StatefulSets in stack order, each with its metadata (the rest is never read)."""
    return [
        _Workload(r, _mapping(r.input("metadata")))
        for r in resources
        if r.type in (DEPLOYMENT_TYPE, STATEFULSET_TYPE)
    ]


def process_rows(resources: list[RegisteredResource]) -> list[ProcessRow]:
    """One row per declared Deployment or StatefulSet, from its redacted inputs (labels, key annotations)."""
    return [_row(w) for w in _workloads(resources)]


def _row(workload: _Workload) -> ProcessRow:
    metadata, annotations = workload.metadata, workload.annotations
    labels = _mapping(metadata.get("labels"))
    subaccount = _text(labels.get(L.SUBACCOUNT)) or ""
    process = _text(labels.get(L.PROCESS)) or _text(metadata.get("name")) or workload.resource.name
    mount, path = _text(annotations.get(L.VAULT_MOUNT)), _text(annotations.get(L.KEY_PATH))
    return ProcessRow(
        ref=f"{subaccount}/{process}" if subaccount else workload.resource.name,
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


def _ledger_violations(workloads: list[_Workload]) -> list[Violation]:
    """A key the ledger gives to another stack (or records at another path) is mandatory.

    Judged here rather than left to the pack, so any pack, however configured, cannot let
    two stacks share a key; the fact is also on the resources for packs that judge it.
    """
    out = []
    for workload in workloads:
        reason = _text(workload.annotations.get(L.LEDGER_CONFLICT))
        if reason is not None:
            row = _row(workload)
            out.append(
                Violation(
                    policy=LEDGER_POLICY,
                    level="mandatory",
                    urn=workload.resource.urn,
                    message=f"{row.ref} ({row.key}): {reason}",
                    pack="keyfence",
                    description="One key, one holder across every stack: the key ledger in Vault.",
                )
            )
    return out


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
        ref, location = self._by_name(urn.rsplit("::", 1)[-1])
        if location is None:
            location = self._declared_at(urn)
        return ref, location

    def _declared_at(self, urn: str) -> Location | None:
        """A resource no spec entry declared: the program line that did (its own, else a parent's)."""
        seen: set[str] = set()
        resource = self._by_urn.get(urn)
        while resource is not None and resource.urn not in seen:
            seen.add(resource.urn)
            if resource.site is not None:
                return Location(display_path(Path(resource.site.file)), resource.site.line, 1, "")
            resource = self._by_urn.get(resource.parent)
        return None

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
