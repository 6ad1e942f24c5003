"""``keyfence check --format markdown``: the pull-request comment, short enough by construction.

GitHub refuses a comment over 65,536 characters, and a workflow that cuts a long report
cuts whatever comes last. So the comment is built in order of importance — verdict,
weakened policies, violations, then the fleet — against a byte budget, large tables are
summarised, and anything left out is counted and says where the full report is.
"""

from __future__ import annotations

from collections import Counter
from typing import Final

from .failure import CheckFailure, failure_verdict
from .report import (
    _TABLE_HEADERS,
    _by_policy,
    _detail,
    _row,
    _s,
    _where,
    policy_lines,
    verdict,
    weakened_note,
)
from .results import OFFLINE_NOTE, CheckResult

GITHUB_COMMENT_LIMIT: Final = 65_536
"""Characters GitHub accepts in one issue or pull-request comment."""
MARKDOWN_BUDGET: Final = 60_000
"""UTF-8 bytes the comment may use (bytes >= characters), leaving room for a workflow's own header."""
MAX_TABLE_ROWS: Final = 40
"""Above this many processes the fleet is shown per subaccount instead of per process."""
MAX_DETAIL: Final = 1_500
"""Longest single violation message shown; the rest is in the full report."""
FULL_REPORT_HINT: Final = (
    "the full report: `keyfence check --format text` (or `--format json`); every violation is also "
    "in the SARIF code-scanning results"
)


def full_report(details_url: str | None) -> str:
    """Where the person finds what the comment left out: the CI run when given, else how to get it."""
    return f"the full report: {details_url}" if details_url else FULL_REPORT_HINT


def _md(text: str) -> str:
    """Cell- and comment-safe: no table breaks, no HTML from a pack's message."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _size(lines: list[str]) -> int:
    return sum(len(line.encode("utf-8")) + 1 for line in lines)


def _clip(text: str, limit: int = MAX_DETAIL) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class _Budget:
    """Lines added while they fit; what did not fit is counted, never silently dropped."""

    def __init__(self, limit: int) -> None:
        self.lines: list[str] = []
        self.limit = limit
        self.left_out: Counter[str] = Counter()
        self.shortened = 0
        """Messages shown clipped (the full text is in the full report)."""

    def clip(self, text: str) -> str:
        clipped = _clip(text)
        self.shortened += clipped != text
        return clipped

    def omissions(self, where: str) -> list[str]:
        """The note saying what the comment does not show in full, and where it is; [] when nothing."""
        parts = []
        if self.left_out:
            shown = ", ".join(f"{n} {what}" for what, n in sorted(self.left_out.items()))
            parts.append(f"Left out to stay under GitHub's comment limit: {shown}")
        if self.shortened:
            count = self.shortened
            parts.append(f"{count} long message{_s(count)} shortened (ending in …)")
        if not parts:
            return []
        return [f"> {'; '.join(parts)}. See {where}.", ""]

    def add(self, *lines: str, what: str = "") -> bool:
        if _size(self.lines) + _size(list(lines)) > self.limit:
            if what:
                self.left_out[what] += 1
            return False
        self.lines.extend(lines)
        return True


def check_markdown(
    result: CheckResult, *, details_url: str | None = None, budget: int = MARKDOWN_BUDGET
) -> str:
    """Verdict heading, weakened policies, violations first, then the fleet (summarised when large).

    ``details_url`` (the CI run holding every report) is named at the top and wherever the
    comment summarises or leaves something out.
    """
    if result.ok and result.weakened:
        heading = "## ⚠️ keyfence check passed only because mandatory policies were switched off"
    elif result.ok:
        heading = "## ✅ keyfence check passed"
    else:
        count = len(result.mandatory)
        heading = f"## ❌ keyfence check failed: {count} mandatory violation{_s(count)}"
    if result.weakened and not result.ok:
        heading += " — ⚠️ and mandatory policies were switched off"
    head = [
        heading,
        "",
        f"**{_md(verdict(result))}**",
        "",
        f"Stack `{result.stack}` · spec `{result.spec_path}` · policy pack "
        f"`{result.pack}@{result.pack_version}` · {result.resource_count} resources · "
        f"{len(result.policies)} policies",
        "",
    ]
    if details_url:
        head += [f"Full report: {details_url}", ""]
    if result.weakened:
        head += [f"> [!WARNING]\n> {_md(weakened_note(result))}.", ""]
    if result.offline:
        head += [f"> **Offline check**: {_md(OFFLINE_NOTE.split(': ', 1)[1])}.", ""]
    tail_reserve = 2_000  # the omission note and the closing verdict always fit
    out = _Budget(budget - tail_reserve)
    out.add(*head)
    grouped = _by_policy(result.findings)
    if grouped:
        out.add("### Violations", "")
        for policy, findings in grouped.items():
            level = findings[0].violation.level
            icon = "❌" if level == "mandatory" else "⚠️"
            out.add(f"#### {icon} `{policy}` ({level}, {len(findings)})", "", what="violations")
            for finding in findings:
                detail = " ".join(_md(out.clip(_detail(finding))).split("\n"))
                out.add(f"- **{_md(_where(finding))}**: {detail}", what="violations")
            out.add("")
    out.add("### Policies", "", *(f"- {_md(line.strip())}" for line in policy_lines(result)), "")
    _fleet(out, result, details_url)
    lines = out.lines + out.omissions(full_report(details_url))
    lines.append(f"**{_md(verdict(result))}**")
    return "\n".join(lines) + "\n"


def _fleet(out: _Budget, result: CheckResult, details_url: str | None) -> None:
    if not result.processes:
        return
    if len(result.processes) <= MAX_TABLE_ROWS:
        out.add(
            "### Fleet",
            "",
            "| subaccount | " + " | ".join(_TABLE_HEADERS) + " |",
            "|" + "---|" * (len(_TABLE_HEADERS) + 1),
        )
        for r in result.processes:
            cells = [r.subaccount or "-", *_row(r)]
            out.add("| " + " | ".join(_md(c) for c in cells) + " |", what="fleet rows")
        out.add("")
        return
    per: dict[str, list[str]] = {}
    for r in result.processes:
        per.setdefault(r.subaccount or "-", []).append(r.role or "-")
    every = (
        f"every process is in {full_report(details_url)}"
        if details_url
        else "`keyfence check --format text` lists every process"
    )
    out.add(
        "### Fleet",
        "",
        f"{len(result.processes)} processes in {len(per)} subaccounts (one row per subaccount; {every}).",
        "",
        "| subaccount | processes | roles |",
        "|---|---:|---|",
    )
    for subaccount, roles in per.items():
        mix = ", ".join(f"{role} {n}" for role, n in sorted(Counter(roles).items()))
        out.add(f"| {_md(subaccount)} | {len(roles)} | {_md(mix)} |", what="subaccount rows")
    out.add("")


def failure_markdown(
    failure: CheckFailure, *, details_url: str | None = None, budget: int = MARKDOWN_BUDGET
) -> str:
    """The comment for a check that stopped before the pack ran (exit 2): every problem, located."""
    out = _Budget(budget - 2_000)
    out.add(
        "## ⛔ keyfence check could not run: no verdict",
        "",
        f"Stack `{failure.stack}` · spec `{failure.spec_path or '-'}`"
        + (" · offline" if failure.offline else ""),
        "",
    )
    if details_url:
        out.add(f"Full report: {details_url}", "")
    out.add(f"{_md(failure.headline)}. Nothing was checked; fix these and push again:", "")
    for problem in failure.problems:
        where = f"`{_md(problem.file)}:{problem.line}:{problem.column}`: " if problem.file else ""
        out.add(f"- {where}{_md(out.clip(problem.text))}", what="problems")
    out.add("")
    where = full_report(details_url) if details_url else "the output of `keyfence check` for every problem"
    lines = out.lines + out.omissions(where)
    lines.append(f"**{_md(failure_verdict(failure))}**")
    return "\n".join(lines) + "\n"
