"""Hostile spec files through the command line: exit 2, one ``error:`` line naming the file, no traceback.

In process (typer's CliRunner, the same root group that renders errors) for breadth, and a
few runs of the real console entry point in a subprocess, with ``KEYFENCE_DEBUG=1`` too:
a spec error is the user's to fix, so even debugging shows a message, not a traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from keyfence.cli.app import app
from keyfence.demo import CLI_ENTRY
from keyfence.errors import EXIT_INVALID, EXIT_OK, SpecError
from keyfence.spec import MAX_SPEC_BYTES, load_spec
from tests.hostile import yamlgen as g

ROOT = Path(__file__).resolve().parent.parent.parent
FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

VALID = """\
version: 1
subaccounts:
  - name: alpha
    venue: futures
    processes:
      - name: exec
        role: trader
        image: ghcr.io/acme/x:1.0
"""


def invoke(*args: str, stdin: str = "") -> Any:
    return CliRunner().invoke(app, list(args), input=stdin)


def assert_refused(result: Any, path: Path) -> None:
    """Exit 2, stderr is one rendered SpecError that names the file, stdout is empty."""
    output = result.stdout + result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert result.exit_code == EXIT_INVALID, (result.exit_code, output[:500])
    assert result.stderr.startswith(f"error: {path}"), result.stderr[:500]
    assert "Traceback" not in output and "internal error" not in output, output[:2000]
    assert result.stdout == ""


def spec_is_valid(path: Path) -> bool:
    try:
        load_spec(path)
    except SpecError:
        return False
    return True


@settings(FAST, max_examples=120)
@given(g.hostile_fleets() | g.mangled_example() | st.text(max_size=200))
def test_hostile_specs_make_check_and_plan_exit_2_naming_the_file(text: str) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "fleet.yaml"
        path.write_bytes(text.encode("utf-8", "surrogatepass"))  # lone surrogates: not UTF-8, refused
        plan = invoke("plan", "--offline", "--spec", str(path), "--format", "json")
        if spec_is_valid(path):
            assert plan.exit_code == EXIT_OK, plan.stderr
            assert json.loads(plan.stdout)["resources"]
            return
        assert_refused(plan, path)
        report = Path(workdir) / "report.sarif"
        check = invoke(
            "check", "--offline", "--spec", str(path), "--format", "sarif", "--output", str(report)
        )
        assert_refused(check, path)
        # Exit 2 still writes the report asked for: an error result, never a passing run.
        sarif = json.loads(report.read_text())
        (run,) = sarif["runs"]
        assert run["invocations"][0]["executionSuccessful"] is False
        assert run["results"] and all(r["level"] == "error" for r in run["results"])


def alias_bomb() -> str:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"{chr(98 + i)}: &{chr(98 + i)} [" + ",".join([f"*{chr(97 + i)}"] * 10) + "]" for i in range(8)]
    return "\n".join(lines) + "\n"


def hostile_files(workdir: Path) -> dict[str, bytes]:
    """One file per kind of hostile input, as the bytes a user (or an attacker's PR) could commit."""
    pwned = workdir / "pwned"
    return {
        "not-utf8": b"\xff\xfe\x00version: 1\n",
        "nul-byte": b"version: 1\x00\n",
        "bom-then-garbage": "\ufeffversion: [".encode(),
        "empty": b"",
        "only-comments": b"# nothing to see\n",
        "alias-bomb": alias_bomb().encode(),
        "python-object": f"version: !!python/object/apply:os.system ['touch {pwned}']\n".encode(),
        "duplicate-key": VALID.replace("role: trader", "role: trader\n        role: risk").encode(),
        "deep-nesting": b"version: " + b"[" * 5000 + b"]" * 5000 + b"\n",
        "surrogate-escape": VALID.replace("ghcr.io/acme/x:1.0", '"ghcr.io/acme/x:1.0\\ud800"').encode(),
        "too-large": b"#" * (MAX_SPEC_BYTES + 1),
        "name-47-chars": VALID.replace("name: exec", "name: " + "e" * 47).encode(),
        "instance-label-64": VALID.replace("name: alpha", "name: " + "a" * 20)
        .replace("name: exec", "name: " + "e" * 43)
        .encode(),
        "uppercase-name": VALID.replace("name: alpha", "name: Alpha").encode(),
        "unicode-name": VALID.replace("name: exec", "name: exéc").encode(),
        "key-traversal": (VALID + "        key: kraken/../../sys/raw\n").encode(),
        "key-encoded": (VALID + "        key: kraken/%2e%2e/%2Fsys\n").encode(),
        "key-backslash": (VALID + "        key: 'kraken\\..\\x'\n").encode(),
        "key-nul": (VALID + '        key: "kraken/a\\0b"\n').encode(),
        "key-blank": (VALID + "        key: 'kraken/ a'\n").encode(),
    }


COMMANDS = {
    "check": ["check", "--offline"],
    "plan": ["plan", "--offline"],
    "keys-list": ["keys", "list"],
    "keys-register": ["keys", "register", "alpha/exec"],
    "keys-revoke": ["keys", "revoke", "alpha/exec", "--yes"],
}


@pytest.mark.parametrize("command", list(COMMANDS))
def test_every_kind_of_hostile_file_is_refused_by_every_command(
    command: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The spec is read before anything else (Vault, the policy pack), so no Vault is needed here."""
    for name in [n for n in os.environ if n.startswith(("VAULT_", "BAO_", "KEYFENCE_VAULT_"))]:
        monkeypatch.delenv(name)
    for kind, raw in hostile_files(tmp_path).items():
        path = tmp_path / f"{kind}.yaml"
        path.write_bytes(raw)
        result = invoke(*COMMANDS[command], "--spec", str(path), stdin="k\ns\n")
        try:
            assert_refused(result, path)
        except AssertionError as exc:
            raise AssertionError(f"{kind}: {exc}") from None
    assert not (tmp_path / "pwned").exists(), "a YAML tag ran a command"


@pytest.mark.parametrize("kind", ["python-object", "alias-bomb", "not-utf8", "key-traversal"])
def test_the_console_entry_point_refuses_hostile_files_even_when_debugging(kind: str, tmp_path: Path) -> None:
    path = tmp_path / f"{kind}.yaml"
    path.write_bytes(hostile_files(tmp_path)[kind])
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "KEYFENCE_"))}
    env["KEYFENCE_DEBUG"] = "1"
    proc = subprocess.run(
        [sys.executable, "-c", CLI_ENTRY, "check", "--offline", "--spec", str(path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=120,
    )
    assert proc.returncode == EXIT_INVALID, proc.stderr
    assert proc.stderr.startswith(f"error: {path}"), proc.stderr[:500]
    assert "Traceback" not in proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert not (tmp_path / "pwned").exists()
