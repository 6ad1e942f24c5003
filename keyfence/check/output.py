"""Every ``keyfence check`` report, by format: a verdict (exit 0/1) or a check that could not run (exit 2).

The pull request sees both the same way: SARIF annotations at the spec lines and a
comment; a stopped check is never a missing report. One run writes every report asked
for (``--output`` and each ``--report FORMAT=FILE``), so annotations, comment and the
archived reports can never disagree, and the check's cost is paid once.
"""

from __future__ import annotations

import json
import os
import urllib.parse
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from ..errors import KeyfenceError
from .failure import CheckFailure, failure_verdict
from .markdown import check_markdown, failure_markdown
from .report import (
    CHECK_FORMATS,
    SARIF_SCHEMA,
    SARIF_VERSION,
    CheckFormat,
    artifact_uri,
    check_json,
    check_sarif,
    check_text,
    invocation,
    tool_version,
)
from .results import CheckResult


def render_check(result: CheckResult, fmt: CheckFormat, *, details_url: str | None = None) -> str:
    """A check report as text ready to print or write (plain text for ``text``)."""
    if fmt == "json":
        return json.dumps(check_json(result), indent=2) + "\n"
    if fmt == "sarif":
        return json.dumps(check_sarif(result), indent=2) + "\n"
    if fmt == "markdown":
        return check_markdown(result, details_url=details_url)
    return check_text(result)


def render_failure(failure: CheckFailure, fmt: CheckFormat, *, details_url: str | None = None) -> str:
    """The report of a check that stopped before a verdict, in the requested format."""
    if fmt == "json":
        return json.dumps(failure_json(failure), indent=2) + "\n"
    if fmt == "sarif":
        return json.dumps(failure_sarif(failure), indent=2) + "\n"
    if fmt == "markdown":
        return failure_markdown(failure, details_url=details_url)
    lines = [f"keyfence check: stack {failure.stack}, spec {failure.spec_path or '-'}"]
    for problem in failure.problems:
        where = f"{problem.file}:{problem.line}:{problem.column}: " if problem.file else ""
        lines.append(f"  - {where}{problem.text}")
    lines.append(failure_verdict(failure))
    return "\n".join(lines) + "\n"


def failure_json(failure: CheckFailure) -> dict[str, Any]:
    return {
        "ok": False,
        "verdict": failure_verdict(failure),
        "error": failure.headline,
        "exit_code": failure.exit_code,
        "problems": [
            {"message": p.text, "file": p.file, "line": p.line, "column": p.column} for p in failure.problems
        ],
        "offline": failure.offline,
        "spec": failure.spec_path,
    }


RULE_ID = "keyfence-check-error"


def failure_sarif(failure: CheckFailure) -> dict[str, Any]:
    """SARIF 2.1.0 with one error result per problem, at its spec location when it has one."""
    results = []
    artifacts: list[str] = []
    for problem in failure.problems:
        file = problem.file or failure.spec_path
        item: dict[str, Any] = {
            "ruleId": RULE_ID,
            "ruleIndex": 0,
            "level": "error",
            "message": {"text": problem.text if problem.file else f"{failure.headline}: {problem.text}"},
        }
        if file:
            uri = artifact_uri(file)
            if uri not in artifacts:
                artifacts.append(uri)
            item["locations"] = [
                {
                    "physicalLocation": {
                        "artifactLocation": {"uri": uri},
                        "region": {"startLine": problem.line or 1, "startColumn": problem.column or 1},
                    }
                }
            ]
        results.append(item)
    rule = {
        "id": RULE_ID,
        "name": RULE_ID,
        "shortDescription": {"text": "keyfence check could not run: invalid spec or configuration, or Vault"},
        "defaultConfiguration": {"level": "error"},
    }
    return {
        "$schema": SARIF_SCHEMA,
        "version": SARIF_VERSION,
        "runs": [
            {
                "tool": {"driver": {"name": "keyfence", "version": tool_version(), "rules": [rule]}},
                "artifacts": [{"location": {"uri": uri}} for uri in artifacts],
                "invocations": [invocation(False, [failure.headline])],
                "results": results,
                "properties": {
                    "stack": failure.stack,
                    "offline": failure.offline,
                    "verdict": failure_verdict(failure),
                },
            }
        ],
    }


# --------------------------------------------------------------------------- report files


REPORT_OPTION: Final = "--report"


@dataclass(frozen=True)
class ReportFile:
    """One report to write, and the option that asked for it (named in every error about it)."""

    fmt: CheckFormat
    path: Path
    option: str


def refuse_overwriting(option: str, path: Path, inputs: Mapping[str, Path | None]) -> None:
    """An output never replaces an input: ``-o fleet.yaml`` would destroy the spec it checks."""
    target = path.resolve()
    for what, source in inputs.items():
        if source is not None and source.resolve() == target:
            raise KeyfenceError(f"{option}: {path} is the {what} this command reads; write to another file")


def report_files(
    values: Sequence[str],
    *,
    output: Path | None = None,
    output_format: CheckFormat = "text",
    inputs: Mapping[str, Path | None] | None = None,
) -> list[ReportFile]:
    """``--output`` and every ``--report FORMAT=FILE``, checked before the check spends its time.

    An unknown format, two reports into one file or a file that cannot be written is an
    error now (exit 2) rather than a report lost after the run.
    """
    files = [ReportFile(output_format, output, f"--output {output}")] if output is not None else []
    for value in values:
        option = f"{REPORT_OPTION} {value}"
        name, sep, path = value.partition("=")
        fmt = name.strip().lower()
        if not sep or not path.strip():
            raise KeyfenceError(f"{option}: expected FORMAT=FILE, for example sarif=keyfence.sarif")
        if fmt not in CHECK_FORMATS:
            raise KeyfenceError(
                f"{option}: unknown report format {name.strip()!r}; use one of {', '.join(CHECK_FORMATS)}"
            )
        files.append(ReportFile(_as_format(fmt), Path(path.strip()), option))
    seen: dict[Path, ReportFile] = {}
    for file in files:
        key = file.path.resolve()
        if key in seen:
            raise KeyfenceError(
                f"{seen[key].option} and {file.option} name the same file {file.path}; "
                "give each report its own file"
            )
        seen[key] = file
        refuse_overwriting(file.option, file.path, inputs or {})
        reason = _unwritable(file.path)
        if reason:
            raise KeyfenceError(f"{file.option}: cannot write the report: {reason}")
    return files


def _as_format(name: str) -> CheckFormat:
    return next(fmt for fmt in CHECK_FORMATS if fmt == name)


def _unwritable(path: Path) -> str | None:
    """Why ``path`` cannot take a report, or ``None`` when it can (as far as can be told before writing)."""
    if path.is_dir():
        return f"{path} is a folder; name a file"
    folder = path.parent
    if not folder.is_dir():
        return f"folder {folder} does not exist; create it or name a file in an existing folder"
    if path.exists():
        return None if os.access(path, os.W_OK) else f"{path} is not writable"
    if not os.access(folder, os.W_OK | os.X_OK):
        return f"folder {folder} is not writable"
    return None


def write_reports(files: Sequence[ReportFile], render: Callable[[CheckFormat], str]) -> None:
    """Write every file, each format rendered once; a file that fails does not stop the others."""
    bodies: dict[CheckFormat, str] = {}
    problems = []
    for file in files:
        if file.fmt not in bodies:
            bodies[file.fmt] = render(file.fmt)
        try:
            file.path.write_text(bodies[file.fmt], encoding="utf-8")
        except OSError as exc:
            problems.append(f"{file.option}: {exc.strerror or exc}")
    if problems:
        raise KeyfenceError("cannot write the report", problems=problems)


DETAILS_OPTION: Final = "--details-url"
_URL_FORBIDDEN: Final = frozenset(' \t\r\n<>"`|[]()\\')


def details_url(value: str) -> str:
    """An http(s) URL safe to print into a markdown comment as a bare, auto-linked address."""
    url = value.strip()
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc or _URL_FORBIDDEN & set(url):
        raise KeyfenceError(
            f"{DETAILS_OPTION} {value!r}: expected an http(s) URL without spaces, brackets or quotes, "
            "for example the CI run's URL"
        )
    return url
