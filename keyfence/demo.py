"""``make demo``: the whole system on an embedded OpenBao, and what keyfence stops.

Every keyfence action runs the real command line in a subprocess, exactly as an operator
would type it, against a real (in-memory, loopback-only) OpenBao dev server; the demo only
generates throwaway keys and plays the careless operator. It checks each outcome and exits
0 only if every step behaved as expected, else 1 naming the step that deviated, so the
demo doubles as an end-to-end test. Generated key material is fed on stdin and never
printed: every captured output is searched for it before it is shown.
"""

from __future__ import annotations

import base64
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import hvac
import yaml
from keyfence_policies import permissions as perms
from rich import box
from rich.console import Console
from rich.panel import Panel
from rich.rule import Rule
from rich.table import Table
from rich.text import Text

from .devvault import DevVault
from .errors import EXIT_OK, EXIT_VIOLATION, KeyfenceError
from .material import KeyMaterial
from .spec import FleetSpec, ProcessEntry, load_spec

ROOT: Final = Path(__file__).resolve().parent.parent
EXAMPLE_SPEC: Final = "examples/fleet.yaml"
OPERATORS_SPEC: Final = "examples/fleet-operators.yaml"
"""The same fleet and keys with one process delivered by an operator: what step 4 checks."""
TOTAL_STEPS: Final = 6
CLI_ENTRY: Final = "import sys; from keyfence.cli import main; sys.exit(main())"
"""The console script's own entry point, run with this interpreter so the checkout's code is used."""
COMMAND_TIMEOUT: Final = 180.0
SHARED_SOURCE: Final = ("momentum", "executor")
SHARED_COPY: Final = "executor-b"
"""The second executor a careless operator gives the first one's key."""
SHARED_SPEC_NAME: Final = "fleet-shared-key.yaml"


class Deviation(Exception):
    """A step did not behave as the demo expects; the message says what happened instead."""


@dataclass(frozen=True)
class CliRun:
    """One finished ``keyfence`` invocation."""

    shown: str
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stdout + self.stderr).rstrip("\n")


def generate_material() -> KeyMaterial:
    """A throwaway key shaped like Kraken's: an opaque api key and a base64 64-byte secret."""
    return KeyMaterial(
        api_key=secrets.token_urlsafe(42),
        api_secret=base64.b64encode(secrets.token_bytes(64)).decode("ascii"),
    )


def demo_permissions(entry: ProcessEntry) -> tuple[str, ...]:
    """The spec's exact set when it states one, else everything the role may hold.

    ``perms.allowance`` already drops withdrawal rights except for the master's treasury
    with ``allow_withdrawals``, so the generated keys are least-privilege by construction.
    """
    if entry.process.permissions:
        return tuple(sorted(entry.process.permissions))
    sub, proc = entry.subaccount, entry.process
    allowed = perms.allowance(
        proc.role, sub.venue, master=sub.master, allow_withdrawals=proc.allow_withdrawals
    )
    return tuple(sorted(allowed))


def shared_key_spec(source: Path, target: Path) -> Path:
    """A copy of ``source`` with one more momentum executor, whose key path will hold a copy."""
    data: Any = yaml.safe_load(source.read_text(encoding="utf-8"))
    subaccount_name, process_name = SHARED_SOURCE
    for sub in data["subaccounts"]:
        if sub["name"] == subaccount_name:
            original = next(p for p in sub["processes"] if p["name"] == process_name)
            clone = {k: v for k, v in original.items() if k in ("role", "image", "args")}
            sub["processes"].append({"name": SHARED_COPY, **clone})
            break
    else:
        raise Deviation(f"{source} has no subaccount {subaccount_name!r} to add {SHARED_COPY!r} to")
    header = (
        f"# Derived from {EXAMPLE_SPEC} by the keyfence demo: {subaccount_name}/{SHARED_COPY} is a second\n"
        f"# executor whose key path holds a hand-made copy of {subaccount_name}/{process_name}'s key.\n"
    )
    target.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


# --------------------------------------------------------------------------- the screen


class Screen:
    """Headed steps, commands and their output: rich on a terminal, plain text in a pipe."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self.rich = console.is_terminal

    def _plain(self, text: str = "") -> None:
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    def title(self, text: str) -> None:
        if self.rich:
            self.console.print(Panel(Text(text, style="bold"), box=box.DOUBLE, expand=False))
        else:
            self._plain(text)
            self._plain("=" * len(text))

    def step(self, number: int, title: str) -> None:
        heading = f"Step {number}/{TOTAL_STEPS} — {title}"
        if self.rich:
            self.console.print()
            self.console.print(Rule(Text(heading, style="bold cyan"), align="left"))
        else:
            self._plain()
            self._plain(heading)

    def say(self, text: str) -> None:
        if self.rich:
            self.console.print(Text(text))
        else:
            self._plain(text)

    def command(self, shown: str) -> None:
        if self.rich:
            self.console.print(Text(f"$ {shown}", style="bold"))
        else:
            self._plain(f"$ {shown}")

    def output(self, text: str, exit_code: int) -> None:
        text = text or "(no output)"
        fits = all(len(line) <= self.console.width - 4 for line in text.splitlines())
        if self.rich and fits:
            panel = Panel(Text(text), title=f"exit {exit_code}", title_align="right", expand=False)
            self.console.print(panel)
        elif self.rich:
            # A panel would wrap wide tables into a mess; the terminal's own wrapping keeps them legible.
            for line in text.splitlines():
                self.console.print(Text(f"  {line}", style="dim" if not line.strip() else ""), soft_wrap=True)
            self.console.print(Text(f"  [exit {exit_code}]", style="bold"))
        else:
            for line in (text or "(no output)").splitlines():
                self._plain(f"    {line}")
            self._plain(f"    [exit {exit_code}]")

    def verdict(self, ok: bool, text: str) -> None:
        mark = "✔" if ok else "✘"
        if self.rich:
            self.console.print(Text(f"{mark} {text}", style="bold green" if ok else "bold red"))
        else:
            self._plain(f"{mark} {text}")

    def summary(self, rows: Sequence[tuple[int, str, bool, str]]) -> None:
        if self.rich:
            table = Table(title="Summary", title_justify="left", box=box.SIMPLE_HEAD)
            for column in ("step", "what", "verdict"):
                table.add_column(column)
            for number, title, ok, verdict in rows:
                table.add_row(f"{number}/{TOTAL_STEPS}", title, Text(verdict, style="green" if ok else "red"))
            self.console.print()
            self.console.print(table)
        else:
            self._plain()
            self._plain("Summary")
            for number, title, ok, verdict in rows:
                self._plain(f"  {number}/{TOTAL_STEPS}  {'ok  ' if ok else 'FAIL'}  {title}: {verdict}")


# --------------------------------------------------------------------------- the demo


class Demo:
    """The six steps, sharing one dev server and the generated keys."""

    def __init__(self, screen: Screen, *, root: Path = ROOT, spec: str = EXAMPLE_SPEC) -> None:
        self.screen = screen
        self.root = root
        self.spec_arg = spec
        self.fleet: FleetSpec = load_spec(root / spec)
        self.check_spec_arg = OPERATORS_SPEC if spec == EXAMPLE_SPEC else spec
        self.check_fleet: FleetSpec = load_spec(root / self.check_spec_arg)
        self.materials: dict[str, KeyMaterial] = {}
        self.vault: DevVault | None = None
        self.results: list[tuple[int, str, bool, str]] = []
        self._workdir = Path(tempfile.mkdtemp(prefix="keyfence-demo-"))

    # ----------------------------------------------------------------- running keyfence

    def _env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_", "KEYFENCE_VAULT_"))}
        env.update(self._running().env())
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(self.root), env.get("PYTHONPATH")]))
        env.pop("KEYFENCE_DEBUG", None)
        return env

    def _running(self) -> DevVault:
        if self.vault is None or not self.vault.running:
            raise Deviation("the OpenBao dev server is not running (it stopped or never started)")
        return self.vault

    def keyfence(self, *args: str, stdin: KeyMaterial | None = None, show: bool = True) -> CliRun:
        """Run ``keyfence ARGS`` as a subprocess; the key, if any, goes in on stdin only."""
        shown = "keyfence " + " ".join(args)
        if stdin is not None:
            shown = 'printf \'%s\\n%s\\n\' "$API_KEY" "$API_SECRET" | ' + shown
        try:
            proc = subprocess.run(
                [sys.executable, "-c", CLI_ENTRY, *args],
                input=f"{stdin.api_key}\n{stdin.api_secret}\n" if stdin is not None else "",
                capture_output=True,
                text=True,
                env=self._env(),
                cwd=self.root,
                timeout=COMMAND_TIMEOUT,
            )
        except subprocess.TimeoutExpired:
            raise Deviation(f"'{shown}' did not finish within {COMMAND_TIMEOUT:g}s") from None
        run = CliRun(shown, proc.returncode, proc.stdout, proc.stderr)
        self._refuse_leaks(run)
        if show:
            self.screen.command(shown)
            self.screen.output(run.output, run.returncode)
        return run

    def _refuse_leaks(self, run: CliRun) -> None:
        """Stop before showing an output that carries any generated key material."""
        for ref, material in self.materials.items():
            if material.api_key in run.output or material.api_secret in run.output:
                raise Deviation(f"'{run.shown}' printed key material of {ref}; its output was not shown")

    @staticmethod
    def expect(run: CliRun, code: int, *fragments: str) -> None:
        if run.returncode != code:
            last = run.output.splitlines()[-1] if run.output else "no output"
            raise Deviation(f"'{run.shown}' exited {run.returncode}, expected {code}: {last}")
        missing = [f for f in fragments if f not in run.output]
        if missing:
            raise Deviation(f"'{run.shown}' did not say {', '.join(repr(m) for m in missing)}")

    # ----------------------------------------------------------------- steps

    def step_start(self) -> str:
        self.screen.say("An in-memory OpenBao dev server: KV version 2 at secret/, on loopback only.")
        self.vault = DevVault()
        self.vault.start()
        return f"OpenBao running at {self.vault.addr}"

    def step_register(self) -> str:
        entries = self.fleet.entries()
        self.screen.say(
            f"One generated key per process of {self.spec_arg} ({len(entries)} processes), registered with "
            "'keyfence keys register': api key and secret on stdin, never in arguments or the environment."
        )
        for entry in entries:
            self.materials[entry.ref] = generate_material()
        # One after the other, as an operator would: a registration running while another is
        # between writing its key and its metadata would see a key without a fingerprint and warn.
        runs = [
            self.keyfence(
                "keys",
                "register",
                entry.ref,
                "--spec",
                self.spec_arg,
                "--venue",
                entry.subaccount.venue,
                "--permissions",
                ",".join(demo_permissions(entry)),
                stdin=self.materials[entry.ref],
                show=False,
            )
            for entry in entries
        ]
        self.screen.command(runs[0].shown)
        self.screen.say(f"... and likewise for the other {len(runs) - 1} processes:")
        self.screen.output("\n".join(run.output for run in runs), max(run.returncode for run in runs))
        for run in runs:
            self.expect(run, EXIT_OK, "registered ")
        return f"{len(runs)} keys registered, one per process"

    def step_list(self) -> str:
        self.screen.say("The inventory, read from Vault metadata only, cross-checked with the spec.")
        run = self.keyfence("keys", "list", "--spec", self.spec_arg)
        self.expect(run, EXIT_OK, "clean")
        return "clean: no key missing, none stored twice"

    def step_check(self) -> str:
        self.screen.say(
            "The Pulumi program in its own process and the CrossGuard policy pack, as a PR runs them."
        )
        run = self.keyfence("check", "--spec", self.check_spec_arg)
        self.expect(run, EXIT_OK, "PASSED", *(f"subaccount {s.name}" for s in self.check_fleet.subaccounts))
        operator_fed = [e for e in self.check_fleet.entries() if e.operator_delivered]
        for entry in operator_fed:
            self.screen.say(
                f"{entry.ref} is delivered by {entry.delivery} as a {entry.workload}: its key never enters "
                "Pulumi state; the operator reads it in the cluster with this least-privilege Vault access:"
            )
        if operator_fed:
            policies = self.keyfence("vault-policies", "--spec", self.check_spec_arg)
            self.expect(policies, EXIT_OK, *(e.vault_role for e in operator_fed))
        return (
            "passed: one key per process, one subaccount per strategy "
            f"({len(operator_fed)} process(es) delivered by an operator)"
        )

    def step_refuse(self) -> str:
        subaccount, process = SHARED_SOURCE
        source = f"{subaccount}/{process}"
        self.screen.say(
            f"An operator starts a second executor, {subaccount}/{SHARED_COPY}, and tries to give it "
            f"{source}'s key."
        )
        run = self.keyfence(
            "keys",
            "register",
            f"{subaccount}/{SHARED_COPY}",
            "--venue",
            "futures",
            "--permissions",
            "general-full",
            stdin=self.materials[source],
        )
        holder = f"{self.fleet.vault.mount}/{self._entry(source).key_path}"
        self.expect(run, EXIT_VIOLATION, "refused", holder)
        return f"refused (exit 1): the key is already registered at {holder}"

    def step_blocked(self) -> str:
        subaccount, process = SHARED_SOURCE
        source = self._entry(f"{subaccount}/{process}")
        target_path = f"{self.fleet.vault.prefix}/{subaccount}/{SHARED_COPY}"
        mount = self.fleet.vault.mount
        self.screen.say(
            f"The operator bypasses keyfence: copies {mount}/{source.key_path} to {mount}/{target_path} "
            "by hand (data and custom_metadata, as 'bao kv get' + 'bao kv put' would), and adds the "
            "process to a copy of the spec."
        )
        self._copy_by_hand(mount, source.key_path, target_path)
        spec_path = shared_key_spec(self.root / self.spec_arg, self._workdir / SHARED_SPEC_NAME)
        self.screen.say(f"wrote {spec_path} ({EXAMPLE_SPEC} plus {subaccount}/{SHARED_COPY})")
        run = self.keyfence("check", "--spec", str(spec_path))
        copy = f"{subaccount}/{SHARED_COPY}"
        self.expect(run, EXIT_VIOLATION, "FAILED", "no-duplicate-key-assignment", source.ref, copy)
        return f"blocked (exit 1): no-duplicate-key-assignment names both {source.ref} and {copy}"

    def _entry(self, ref: str) -> ProcessEntry:
        return next(e for e in self.fleet.entries() if e.ref == ref)

    def _copy_by_hand(self, mount: str, source: str, target: str) -> None:
        """What a careless operator does: read the secret and its metadata, write both elsewhere."""
        vault = self._running()
        client = hvac.Client(url=vault.addr, token=vault.root_token, timeout=10)
        try:
            kv = client.secrets.kv.v2
            data = kv.read_secret_version(path=source, mount_point=mount, raise_on_deleted_version=True)
            meta = kv.read_secret_metadata(path=source, mount_point=mount)
            kv.create_or_update_secret(path=target, secret=data["data"]["data"], mount_point=mount)
            kv.update_metadata(
                path=target,
                custom_metadata=meta["data"]["custom_metadata"],
                delete_version_after=None,
                mount_point=mount,
            )
        finally:
            client.adapter.close()

    # ----------------------------------------------------------------- driver

    def run(self) -> int:
        steps: list[tuple[str, Callable[[], str]]] = [
            ("Start an embedded OpenBao dev server on 127.0.0.1", self.step_start),
            ("Register one key per process with 'keyfence keys register'", self.step_register),
            ("List the keys and cross-check them with the spec", self.step_list),
            ("Check the fleet: one key per process, one subaccount per strategy", self.step_check),
            ("Register an already-registered key under another path", self.step_refuse),
            ("Copy a key by hand and check a spec that uses the copy", self.step_blocked),
        ]
        started = time.monotonic()
        self.screen.title("keyfence demo: one exchange API key per process, one subaccount per strategy")
        try:
            for number, (title, action) in enumerate(steps, start=1):
                self.screen.step(number, title)
                try:
                    verdict = action()
                except (Deviation, KeyfenceError, OSError, hvac.exceptions.VaultError) as exc:
                    reason = " ".join(str(exc).split()) or type(exc).__name__
                    self.screen.verdict(False, f"step {number}/{TOTAL_STEPS} deviated: {reason}")
                    self.results.append((number, title, False, reason))
                    self.screen.summary(self.results)
                    self.screen.verdict(False, f"demo FAILED at step {number}/{TOTAL_STEPS}: {title}")
                    return EXIT_VIOLATION
                self.screen.verdict(True, f"as expected: {verdict}")
                self.results.append((number, title, True, verdict))
        finally:
            self.close()
        self.screen.summary(self.results)
        self.screen.verdict(
            True,
            f"demo passed: all {TOTAL_STEPS} steps behaved as expected "
            f"({time.monotonic() - started:.1f}s; the dev server is stopped and its data gone)",
        )
        return EXIT_OK

    def close(self) -> None:
        if self.vault is not None:
            self.vault.stop()
        shutil.rmtree(self._workdir, ignore_errors=True)


def main() -> int:
    """Run the demo; 0 only if every step behaved as expected."""
    screen = Screen(Console(highlight=False))
    try:
        demo = Demo(screen)
    except KeyfenceError as exc:
        screen.verdict(False, f"demo FAILED before step 1: {exc}")
        return EXIT_VIOLATION
    return demo.run()


if __name__ == "__main__":
    sys.exit(main())
