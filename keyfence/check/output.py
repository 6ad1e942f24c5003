"""Every ``keyfence check`` report, by format: a verdict (exit 0/1) or a check that could not run (exit 2).

The pull request sees both the same way: SARIF annotations at the spec lines and a
comment; a stopped check is never a missing report.
"""

from __future__ import annotations

import json
from typing import Any

from .failure import CheckFailure, failure_verdict
from .markdown import check_markdown, failure_markdown
from .report import (
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


def render_check(result: CheckResult, fmt: CheckFormat, *, details: str | None = None) -> str:
    """A check report as text ready to print or write (plain text for ``text``)."""
    if fmt == "json":
        return json.dumps(check_json(result), indent=2) + "\n"
    if fmt == "sarif":
        return json.dumps(check_sarif(result), indent=2) + "\n"
    if fmt == "markdown":
        return check_markdown(result, details=details)
    return check_text(result)


def render_failure(failure: CheckFailure, fmt: CheckFormat) -> str:
    """The report of a check that stopped before a verdict, in the requested format."""
    if fmt == "json":
        return json.dumps(failure_json(failure), indent=2) + "\n"
    if fmt == "sarif":
        return json.dumps(failure_sarif(failure), indent=2) + "\n"
    if fmt == "markdown":
        return failure_markdown(failure)
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
