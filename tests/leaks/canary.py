"""The leak detector: canary keys registered for real, and one search for them in everything emitted.

:func:`register_canary_fleet` gives every process of examples/fleet.yaml a fresh key pair in a
real OpenBao, through ``keyfence keys register`` itself, on a KV mount of its own (nothing else
on the shared server can collide with it). The returned :class:`CanaryFleet` knows every form
of that material worth looking for: each api key and secret whole, their first and last
:data:`PARTIAL` characters (a truncated echo is still a leak) and the decoded secret. Every
command a leak test runs goes through :meth:`CanaryFleet.invoke`, and every text it gets back
through :meth:`CanaryFleet.assert_clean`; :class:`LogCapture` holds every log record of every
logger at DEBUG level, exceptions and stacks included, for the same search.
"""

from __future__ import annotations

import base64
import logging
import os
import re
import secrets
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from keyfence.cli.app import app
from keyfence.demo import demo_permissions
from keyfence.errors import EXIT_OK
from keyfence.material import KeyMaterial, fingerprint_of
from keyfence.spec import FleetSpec, load_spec
from tests.fleet_fixtures import EXAMPLE_SPEC
from tests.openbao import OpenBao

PARTIAL = 12
"""Characters of a key or secret that make a leak on their own (a prefix or suffix of the value)."""
LOGGERS = ("keyfence", "hvac", "urllib3", "requests", "pulumi", "grpc", "asyncio", "py.warnings")
"""Named explicitly as well as the root: a library logger with its own level or no propagation would
otherwise stay quiet below WARNING."""
VAULT_VARIABLES = ("VAULT_", "BAO_", "KEYFENCE_VAULT_")


def new_material() -> KeyMaterial:
    """A key pair shaped like Kraken's, random from the first character (so a prefix is telling)."""
    decoded = f"{secrets.token_hex(16)}-canary-secret-{secrets.token_hex(8)}"
    return KeyMaterial(
        api_key=secrets.token_urlsafe(42), api_secret=base64.b64encode(decoded.encode()).decode()
    )


def forms(material: KeyMaterial) -> dict[str, str]:
    """Every string whose presence in an output means (part of) the material leaked."""
    out = {}
    for name, value in (("api key", material.api_key), ("api secret", material.api_secret)):
        out[name] = value
        out[f"first {PARTIAL} characters of the {name}"] = value[:PARTIAL]
        out[f"last {PARTIAL} characters of the {name}"] = value[-PARTIAL:]
    try:  # the canaries decode to text; a real (or the demo's) secret decodes to random bytes
        decoded = base64.b64decode(material.api_secret).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return out
    out["decoded api secret"] = decoded
    out[f"first {PARTIAL} characters of the decoded api secret"] = decoded[:PARTIAL]
    return out


def find_leaks(text: str, materials: dict[str, KeyMaterial]) -> list[str]:
    """Which forms of which process's material occur in ``text`` (empty: clean)."""
    return [
        f"{form} of {ref}"
        for ref, m in materials.items()
        for form, value in forms(m).items()
        if value in text
    ]


class LogCapture(logging.Handler):
    """Every record of every logger, rendered as a handler would: message, arguments, exception, stack."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.texts: list[str] = []
        self._formatter = logging.Formatter("%(name)s %(levelname)s %(message)s")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            rendered = self._formatter.format(record)
        except Exception as exc:  # a record that cannot render is still searched by its parts
            rendered = f"{record.msg!r} {exc!r}"
        self.texts.append(f"{rendered}\n{record.args!r}")

    @property
    def text(self) -> str:
        return "\n".join(self.texts)


@contextmanager
def debug_logging() -> Iterator[LogCapture]:
    """Route every logger's DEBUG records into one capture; restore all levels afterwards."""
    capture = LogCapture()
    root = logging.getLogger()
    loggers = [logging.getLogger(name) for name in LOGGERS]
    saved = [(root, root.level), *((lg, lg.level) for lg in loggers)]
    root.addHandler(capture)
    direct = [lg for lg in loggers if not lg.propagate]
    for lg in direct:
        lg.addHandler(capture)
    for lg, _ in saved:
        lg.setLevel(logging.DEBUG)
    logging.captureWarnings(True)
    try:
        yield capture
    finally:
        logging.captureWarnings(False)
        for lg, level in saved:
            lg.setLevel(level)
        for lg in direct:
            lg.removeHandler(capture)
        root.removeHandler(capture)


@dataclass
class CanaryFleet:
    """examples/fleet.yaml on a mount of its own, with a registered canary key for every process."""

    openbao: OpenBao
    spec_path: Path
    spec: FleetSpec
    mount: str
    materials: dict[str, KeyMaterial]
    emitted: list[tuple[str, str]] = field(default_factory=list)
    """Everything captured so far, as (what, text): command outputs, reports, logs, messages."""

    @property
    def env(self) -> dict[str, str | None]:
        """What every command runs with: the dev server, a token, debugging on; no other Vault setting."""
        env: dict[str, str | None] = {k: None for k in os.environ if k.startswith(VAULT_VARIABLES)}
        env.update(VAULT_ADDR=self.openbao.addr, VAULT_TOKEN=self.openbao.root_token, KEYFENCE_DEBUG="1")
        return env

    def path_of(self, ref: str) -> str:
        return next(e.key_path for e in self.spec.entries() if e.ref == ref)

    def invoke(self, *args: str, stdin: str = "") -> Any:
        """Run ``keyfence ARGS`` in process; its output is searched at once and kept for later searches."""
        result = CliRunner(env=self.env).invoke(app, list(args), input=stdin)
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            raise result.exception
        self.assert_clean(f"keyfence {' '.join(args)}", result.stdout, result.stderr)
        return result

    def assert_clean(self, what: str, *texts: str) -> None:
        """Fail naming every form of material found in ``texts``; keep them for the record."""
        for text in texts:
            self.emitted.append((what, text))
            leaks = find_leaks(text, self.materials)
            assert not leaks, f"{what} leaked: {', '.join(leaks)}"

    def fingerprints(self) -> dict[str, str]:
        return {ref: fingerprint_of(m.api_key) for ref, m in self.materials.items()}


def register_canary_fleet(openbao: OpenBao, workdir: Path) -> CanaryFleet:
    """A fresh KV mount, a copy of examples/fleet.yaml using it, and one key per process via the CLI."""
    mount = openbao.enable_secrets("kv", f"leak-{uuid.uuid4().hex[:10]}", {"version": "2"})
    text = Path(EXAMPLE_SPEC).read_text(encoding="utf-8")
    spec_path = workdir / "fleet.yaml"
    spec_path.write_text(
        re.sub(r"(?m)^  mount: secret\b", f"  mount: {mount}", text, count=1), encoding="utf-8"
    )
    spec = load_spec(spec_path)
    assert spec.vault.mount == mount
    fleet = CanaryFleet(openbao, spec_path, spec, mount, {e.ref: new_material() for e in spec.entries()})
    for entry in spec.entries():
        material = fleet.materials[entry.ref]
        result = fleet.invoke(
            "keys",
            "register",
            entry.ref,
            "--spec",
            str(spec_path),
            "--venue",
            entry.subaccount.venue,
            "--permissions",
            ",".join(demo_permissions(entry)),
            stdin=f"{material.api_key}\n{material.api_secret}\n",
        )
        assert result.exit_code == EXIT_OK, result.stderr
        assert fingerprint_of(material.api_key)[:PARTIAL] in result.stdout, "registered under its fingerprint"
    return fleet
