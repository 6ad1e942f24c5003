"""Reports of ``keyfence check`` and ``keyfence plan``: text, JSON, Markdown and SARIF.

Every report is rendered from a CheckResult or PlanResult only, that is from redacted
inputs and the pack's violation messages; key material never reaches this module.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final, Literal

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .results import CheckResult, Finding, PlanResult, ProcessRow
from .verdict import Level

CheckFormat = Literal["text", "json", "markdown", "sarif"]
PlanFormat = Literal["text", "json"]
CHECK_FORMATS: Final[tuple[CheckFormat, ...]] = ("text", "json", "markdown", "sarif")
PLAN_FORMATS: Final[tuple[PlanFormat, ...]] = ("text", "json")

SARIF_VERSION: Final = "2.1.0"
SARIF_SCHEMA: Final = "https://json.schemastore.org/sarif-2.1.0.json"
FINGERPRINT_CHARS: Final = 12
_SARIF_LEVEL: Final = {"mandatory": "error", "remediate": "error", "advisory": "warning", "disabled": "none"}
_TABLE_HEADERS: Final = ("process", "namespace", "workload", "key", "fingerprint", "version", "permissions")


# --------------------------------------------------------------------------- shared pieces


def verdict(result: CheckResult) -> str:
    """The one-line outcome every format ends with (and ``--output`` prints).

    A check in which config disabled a blocking policy must say so first: a PASSED that
    hides it would tell the person their stack was checked when it was not.
    """
    advisory = len(result.advisory)
    tail = f"{result.resource_count} resources, {len(result.policies)} policies"
    if result.offline:
        tail += ", offline"
    weakened = weakened_note(result)
    warning = f"; WARNING: {weakened}" if weakened else ""
    if result.ok:
        extra = f" ({advisory} advisory)" if advisory else ""
        return f"PASSED: no mandatory policy violations{extra}{warning} [{tail}]"
    mandatory = len(result.mandatory)
    extra = f", {advisory} advisory" if advisory else ""
    return f"FAILED: {mandatory} mandatory policy violation{_s(mandatory)}{extra}{warning} [{tail}]"


def weakened_note(result: CheckResult) -> str:
    """'' or what config switched off: blocking policies made disabled or advisory-only."""
    parts = []
    wording = (("disabled", "DISABLED (not evaluated)"), ("advisory", "made advisory (cannot block)"))
    for level, what in wording:
        names = [p.name for p in result.weakened if result.levels.get(p.name) == level]
        if names:
            parts.append(
                f"{len(names)} mandatory polic{'y' if len(names) == 1 else 'ies'} {what} by config: "
                f"{_names(names)}"
            )
    return "; ".join(parts)


def _names(names: Sequence[str], shown: int = 4) -> str:
    head = ", ".join(names[:shown])
    return head + (f" and {len(names) - shown} more" if len(names) > shown else "")


def policy_lines(result: CheckResult) -> list[str]:
    """Which policies ran at which level: disabled and advisory-only ones are always named."""
    counts = ", ".join(
        f"{len(result.policies_at(level))} {level}"
        for level in ("mandatory", "remediate", "advisory", "disabled")
        if result.policies_at(level)
    )
    lines = [f"policies: {counts or 'none'}"]
    wording: tuple[tuple[Level, str], ...] = (
        ("disabled", "disabled (not evaluated)"),
        ("advisory", "advisory only (never block)"),
    )
    for level, label in wording:
        names = result.policies_at(level)
        if names:
            lines.append(f"  {label}: {', '.join(names)}")
    return lines


def _s(count: int) -> str:
    return "" if count == 1 else "s"


def _short(fingerprint: str | None) -> str:
    return fingerprint[:FINGERPRINT_CHARS] if fingerprint else "-"


def _row(p: ProcessRow) -> tuple[str, ...]:
    return (
        p.process,
        p.namespace or "-",
        p.deployment or "-",
        p.key or "-",
        _short(p.fingerprint),
        p.version or "-",
        p.permissions or "-",
    )


def _by_subaccount(rows: Iterable[ProcessRow]) -> dict[str, list[ProcessRow]]:
    out: dict[str, list[ProcessRow]] = {}
    for row in rows:
        out.setdefault(row.subaccount or "-", []).append(row)
    return out


def _by_policy(findings: Iterable[Finding]) -> dict[str, list[Finding]]:
    out: dict[str, list[Finding]] = {}
    for finding in sorted(findings, key=lambda f: (f.violation.level != "mandatory", f.violation.policy)):
        out.setdefault(finding.violation.policy, []).append(finding)
    return out


def _where(finding: Finding) -> str:
    subject = finding.ref or finding.violation.urn.rsplit("::", 1)[-1] or "stack"
    if finding.location is None:
        return subject
    return f"{subject} ({finding.location.file}:{finding.location.line})"


def _detail(finding: Finding) -> str:
    """The violation's own sentence: the pack prefixes every message with the policy description."""
    message = finding.violation.message
    description = finding.violation.description
    if description and message.startswith(description + "\n"):
        message = message[len(description) + 1 :]
    return message.strip() or description


def _header(result: CheckResult) -> str:
    return (
        f"keyfence check: stack {result.stack}, spec {result.spec_path}, "
        f"policy pack {result.pack}@{result.pack_version}"
    )


def _plain_table(headers: Sequence[str], rows: Sequence[Sequence[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    lines = [indent + "  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    for r in rows:
        lines.append(indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
    return lines


# --------------------------------------------------------------------------- check: text


def check_text(result: CheckResult) -> str:
    """Plain text for pipes and logs: a table per subaccount, violations by policy, the verdict."""
    lines = [_header(result), *policy_lines(result), ""]
    for subaccount, rows in _by_subaccount(result.processes).items():
        lines.append(f"subaccount {subaccount}")
        lines += _plain_table(_TABLE_HEADERS, [_row(r) for r in rows])
        lines.append("")
    grouped = _by_policy(result.findings)
    if grouped:
        lines.append("violations")
        for policy, findings in grouped.items():
            lines.append(f"  {policy} ({findings[0].violation.level}, {len(findings)})")
            for finding in findings:
                detail = _detail(finding).replace("\n", "\n      ")
                lines.append(f"    - {_where(finding)}: {detail}")
        lines.append("")
    lines += [f"note: {note}" for note in result.notes]
    lines.append(verdict(result))
    return "\n".join(lines) + "\n"


NARROW: Final = 120
"""Below this terminal width the process tables drop the columns derivable from the others."""
_NARROW_HEADERS: Final = ("process", "key", "fingerprint", "version", "permissions")


def _folded(headers: Sequence[str], row: Sequence[str]) -> list[Text]:
    """Cells for a narrow table: permission lists break after commas, never inside a word."""
    return [
        Text(cell.replace(",", ", ") if h == "permissions" else cell)
        for h, cell in zip(headers, row, strict=True)
    ]


def check_rich(result: CheckResult, width: int | None = None) -> RenderableType:
    """The same report for a terminal, as rich tables chosen to fit ``width`` columns."""
    narrow = width is not None and width < NARROW
    headers = _NARROW_HEADERS if narrow else _TABLE_HEADERS
    parts: list[RenderableType] = [Text(_header(result), style="bold")]
    parts += [Text(line, style="yellow" if line.startswith("  ") else "") for line in policy_lines(result)]
    for subaccount, rows in _by_subaccount(result.processes).items():
        mounts = {r.key.split("/", 1)[0] for r in rows if "/" in r.key}
        title = f"subaccount {subaccount}"
        if narrow and len(mounts) == 1:
            title += f" (keys in mount {next(iter(mounts))})"
        table = Table(title=Text(title), title_justify="left", expand=False)
        for header in headers:
            # A header is never split mid-word: it sets the column's minimum width.
            table.add_column(header, overflow="fold", min_width=len(header))
        for r in rows:
            full = dict(zip(_TABLE_HEADERS, _row(r), strict=True))
            if narrow and len(mounts) == 1 and "/" in r.key:
                full["key"] = r.key.split("/", 1)[1]
            # Cells as Text, never markup: a value like "[x]" must print as itself.
            table.add_row(*_folded(headers, [full[h] for h in headers]))
        parts.append(table)
    if narrow and result.processes:
        parts.append(
            Text("namespace and workload columns left out at this width; --format text shows them", "dim")
        )
    for policy, findings in _by_policy(result.findings).items():
        level = findings[0].violation.level
        style = "bold red" if level == "mandatory" else "bold yellow"
        parts.append(Text(f"{policy} ({level}, {len(findings)})", style=style))
        for finding in findings:
            parts.append(Text(f"  - {_where(finding)}: {_detail(finding)}"))
    parts += [Text(f"note: {note}", style="italic") for note in result.notes]
    parts.append(Text(verdict(result), style="bold green" if result.ok else "bold red"))
    return Group(*parts)


# --------------------------------------------------------------------------- check: json


def check_json(result: CheckResult) -> dict[str, Any]:
    """The machine-readable verdict: ok, counts, policies and their levels, every violation and its line."""
    return {
        "ok": result.ok,
        "verdict": verdict(result),
        "resources": result.resource_count,
        "policies": [p.name for p in result.policies],
        "levels": {p.name: result.levels.get(p.name, p.level) for p in result.policies},
        "disabled": result.policies_at("disabled"),
        "advisory_only": result.policies_at("advisory"),
        "weakened": [p.name for p in result.weakened],
        "violations": [
            {
                "policy": f.violation.policy,
                "level": f.violation.level,
                "urn": f.violation.urn,
                "message": f.violation.message,
                "file": f.location.file if f.location else None,
                "line": f.location.line if f.location else None,
            }
            for f in result.findings
        ],
        "offline": result.offline,
        "spec": result.spec_path,
    }


# --------------------------------------------------------------------------- check: sarif


def artifact_uri(path: str) -> str:
    """Relative to the working directory when inside it (what code scanning expects), else a file URI."""
    resolved = Path(path).resolve()
    try:
        return resolved.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return resolved.as_uri()


def _fingerprint(*parts: str) -> str:
    """Stable across runs, so code scanning tracks one alert per violation instead of new ones."""
    return hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()


def check_sarif(result: CheckResult) -> dict[str, Any]:
    """SARIF 2.1.0: one rule per policy, one result per violation at its spec entry's line."""
    rule_index = {p.name: i for i, p in enumerate(result.policies)}
    rules = [
        {
            "id": p.name,
            "name": p.name,
            "shortDescription": {"text": p.description or p.name},
            "fullDescription": {"text": p.description or p.name},
            "defaultConfiguration": {"level": _SARIF_LEVEL[result.levels.get(p.name, p.level)]},
            "properties": {"enforcementLevel": result.levels.get(p.name, p.level), "kind": p.kind},
        }
        for p in result.policies
    ]
    spec_uri = artifact_uri(result.spec_path)
    artifacts = [spec_uri]
    results = []
    for finding in result.findings:
        v = finding.violation
        line, column = (finding.location.line, finding.location.column) if finding.location else (1, 1)
        uri = artifact_uri(finding.location.file) if finding.location else spec_uri
        if uri not in artifacts:
            artifacts.append(uri)
        location: dict[str, Any] = {
            "physicalLocation": {
                "artifactLocation": {"uri": uri},
                "region": {"startLine": line, "startColumn": column},
            }
        }
        if v.urn or finding.ref:
            location["logicalLocations"] = [
                {
                    "name": finding.ref or v.urn.rsplit("::", 1)[-1],
                    "fullyQualifiedName": v.urn,
                    "kind": "resource",
                }
            ]
        item: dict[str, Any] = {
            "ruleId": v.policy,
            "level": "error" if v.level == "mandatory" else "warning",
            "message": {"text": v.message},
            "locations": [location],
            "partialFingerprints": {
                "keyfenceViolation/v1": hashlib.sha256(
                    f"{v.policy}\0{v.urn}\0{v.message}".encode()
                ).hexdigest()
            },
        }
        if v.policy in rule_index:
            item["ruleIndex"] = rule_index[v.policy]
        results.append(item)
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "keyfence",
                        "version": tool_version(),
                        "rules": rules,
                    }
                },
                "artifacts": [{"location": {"uri": uri}} for uri in artifacts],
                "invocations": [invocation(True, [weakened_note(result)] if result.weakened else [])],
                "results": results,
                "properties": {
                    "stack": result.stack,
                    "offline": result.offline,
                    "policyPack": f"{result.pack}@{result.pack_version}",
                    "notes": list(result.notes),
                    "verdict": verdict(result),
                    "disabledPolicies": result.policies_at("disabled"),
                    "advisoryPolicies": result.policies_at("advisory"),
                },
            }
        ],
    }


def invocation(successful: bool, warnings: Sequence[str]) -> dict[str, Any]:
    invocation: dict[str, Any] = {"executionSuccessful": successful}
    if warnings:
        invocation["toolExecutionNotifications"] = [
            {"level": "warning" if successful else "error", "message": {"text": w}} for w in warnings
        ]
    return invocation


def tool_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("keyfence")
    except PackageNotFoundError:
        return "0.0.0"


# --------------------------------------------------------------------------- plan


def plan_json(plan: PlanResult) -> dict[str, Any]:
    """Every declared resource with its inputs; secret values appear only as ``[secret]``."""
    return {
        "resources": [
            {"type": r.type, "name": r.name, "urn": r.urn, "inputs": r.inputs} for r in plan.resources
        ]
    }


def plan_text(plan: PlanResult) -> str:
    """A compact listing: type and name of each declared resource."""
    rows = [(r.type, r.name) for r in plan.resources]
    lines = [
        f"keyfence plan: stack {plan.stack}, spec {plan.spec_path}{' (offline)' if plan.offline else ''}"
    ]
    lines += _plain_table(("type", "name"), rows, indent="") if rows else ["(nothing declared)"]
    lines.append(f"{len(rows)} resources")
    return "\n".join(lines) + "\n"


def plan_rich(plan: PlanResult) -> RenderableType:
    table = Table(
        title=Text(f"keyfence plan: stack {plan.stack}, spec {plan.spec_path}"), title_justify="left"
    )
    table.add_column("type", overflow="fold")
    table.add_column("name", overflow="fold")
    for r in plan.resources:
        table.add_row(Text(r.type), Text(r.name))
    return Group(table, Text(f"{len(plan.resources)} resources"))


def render_plan(plan: PlanResult, fmt: PlanFormat) -> str:
    if fmt == "json":
        return json.dumps(plan_json(plan), indent=2) + "\n"
    return plan_text(plan)
