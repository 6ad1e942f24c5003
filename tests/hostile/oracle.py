"""What a hostile-input test accepts as an outcome, written independently of ``keyfence/spec/``.

A spec either loads, and then every name and key path in it obeys Kubernetes' and Vault's
rules as restated here, or it raises SpecError whose every problem names the file, a line
and a column inside the text. Anything else (another exception, a problem without a
location, a message a hostile value blew up to megabytes) fails the test.
"""

from __future__ import annotations

import re

from hypothesis import event
from keyfence_policies import permissions as perms

from keyfence.errors import EXIT_INVALID, SpecError
from keyfence.spec import FleetSpec, load_spec_text

SOURCE = "hostile.yaml"
MAX_MESSAGE_LINE = 1000
"""No line of an error may be longer: a hostile value is quoted, never copied whole."""

DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
"""RFC 1123 label as Kubernetes checks names and namespaces (used with fullmatch)."""
VAULT_SEGMENT = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
RESERVED = {"default", "kube-system", "kube-public", "kube-node-lease"}
YAML_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
LOCATION = re.compile(r"(?P<line>\d+):(?P<col>\d+): \S")


def text_lines(text: str) -> int:
    return len(YAML_BREAK.findall(text)) + 1


def subaccount_name_ok(name: str) -> bool:
    return (
        bool(DNS_1123_LABEL.fullmatch(name))
        and len(name) <= 63
        and name not in RESERVED
        and not name.startswith("kube-")
    )


def process_name_ok(name: str) -> bool:
    """46 characters: the ReplicaSet hash and pod suffix add 17 and a pod name is a 63-char label."""
    return bool(DNS_1123_LABEL.fullmatch(name)) and len(name) <= 46


def canonical_path(raw: str) -> str | None:
    """The Vault path keyfence may use for ``raw``, or None when it must be refused."""
    if "%" in raw or "\\" in raw:
        return None  # encoded or Windows-style separators: what they decode to is not what is checked
    parts = [p for p in raw.split("/") if p]
    if not parts or not all(VAULT_SEGMENT.fullmatch(p) for p in parts):
        return None  # '.', '..', blanks, control and non-ASCII characters all fail the segment rule
    return "/".join(parts)


def located_problems(exc: SpecError, text: str, source: str = SOURCE) -> list[tuple[int, int, str]]:
    """Every problem as (line, column, message), after checking the error's whole shape."""
    assert exc.exit_code == EXIT_INVALID
    assert exc.headline.startswith(f"{source}:"), exc.headline
    for rendered in str(exc).splitlines():
        assert len(rendered) <= MAX_MESSAGE_LINE, rendered[:200]
    assert "Traceback" not in str(exc)
    lines = text_lines(text)
    out = []
    for problem in exc.problems or (
        [exc.headline] if LOCATION.match(exc.headline[len(source) + 1 :]) else []
    ):
        assert problem.startswith(f"{source}:"), problem
        found = LOCATION.match(problem[len(source) + 1 :])
        assert found, f"no line:column in {problem!r}"
        line, col = int(found["line"]), int(found["col"])
        assert 1 <= line <= lines and col >= 1, (problem, lines)
        out.append((line, col, problem[len(source) + 1 + found.end() - 1 :]))
    return out


def assert_invariants(spec: FleetSpec) -> None:
    """A spec that loaded obeys every rule, checked here without keyfence's own validators."""
    assert spec.version == 1 and spec.subaccounts
    assert sum(1 for s in spec.subaccounts if s.master) <= 1
    assert canonical_path(spec.vault.mount) == spec.vault.mount
    assert canonical_path(spec.vault.prefix) == spec.vault.prefix
    for sub in spec.subaccounts:
        assert subaccount_name_ok(sub.name), sub.name
        assert len({p.name for p in sub.processes}) == len(sub.processes)
        for proc in sub.processes:
            assert process_name_ok(proc.name), proc.name
            assert len(f"{sub.name}-{proc.name}") <= 63
            assert proc.image and not any(c.isspace() for c in proc.image)
            assert not proc.image.endswith(":latest")
            assert not proc.allow_withdrawals or (proc.role == "treasury" and sub.master)
            if proc.permissions is not None:
                allowed = perms.allowance(
                    proc.role, sub.venue, master=sub.master, allow_withdrawals=proc.allow_withdrawals
                )
                assert set(proc.permissions) <= allowed
    paths = [e.key_path for e in spec.entries()]
    assert len(set(paths)) == len(paths), "two processes on one key path"
    assert all(canonical_path(p) == p for p in paths), paths


def outcome(text: str, source: str = SOURCE) -> FleetSpec | SpecError:
    """``load_spec_text``'s verdict after checking it; any other exception propagates and fails the test."""
    try:
        spec = load_spec_text(text, source)
    except SpecError as exc:
        located_problems(exc, text, source)
        what = re.sub(r"^[0-9]+:[0-9]+: ", "", exc.headline[len(source) + 1 :].strip())
        event(f"refused: {what.split(':')[0][:30]}")
        return exc
    assert_invariants(spec)
    event("loaded")
    return spec
