"""The ``keyfence`` command line: ``check`` and ``plan`` (``keys`` is added by its own module).

Errors are for people: a KeyfenceError prints its message on stderr and exits with its
code, never with a traceback. Anything unexpected is one line and exit 2, with the
traceback only under ``--debug`` or ``KEYFENCE_DEBUG=1``. Every command and sub-app
inherits this through the root group, so wiring a sub-app is one ``app.add_typer`` call.
"""

from __future__ import annotations

import logging
import os
import sys
import traceback
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Final

import typer
from rich.console import Console
from typer.core import TyperArgument, TyperGroup, TyperOption

from ..errors import EXIT_INVALID, KeyfenceError
from .keys import app as keys_app

DEBUG_ENV: Final = "KEYFENCE_DEBUG"
SPEC_CONFIG_KEY: Final = "keyfence:spec"
DEFAULT_PROGRAM_TIMEOUT: Final = 600.0
"""Seconds (``--timeout``); the same default as ``keyfence.check.programrun.DEFAULT_TIMEOUT``, kept here so
that ``--help`` does not import Pulumi."""
_DEBUG_KEY: Final = "keyfence.debug"
_VAULT_LOGGER: Final = "keyfence.vault"
_RETRY_LOGGER: Final = "keyfence.vault.retry"


def _debug_requested(ctx: typer.Context | None) -> bool:
    if os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on"):
        return True
    return bool(ctx is not None and ctx.meta.get(_DEBUG_KEY))


def _framework_exception(exc: BaseException) -> bool:
    """Exit, Abort and usage errors belong to typer/click, which render them; let them through."""
    return isinstance(exc, (typer.Exit, typer.Abort)) or type(exc).__module__.split(".")[0] in (
        "click",
        "typer",
    )


class _VaultNotices(logging.Handler):
    """Vault warnings as ``warning: ...`` lines on stderr; retry notices only when debugging.

    Without a handler Python's last-resort one prints every retry raw, before the error
    that already counts the attempts; a failed command must read as one message.
    """

    def __init__(self, ctx: Any) -> None:
        super().__init__(logging.WARNING)
        self._ctx = ctx

    def emit(self, record: logging.LogRecord) -> None:
        if record.name == _RETRY_LOGGER and not _debug_requested(self._ctx):
            return
        try:
            message = record.getMessage()
        except Exception:
            self.handleError(record)
            return
        typer.echo(f"{record.levelname.lower()}: {message}", err=True)


def _words_as_metavars(command: Any) -> None:
    """Every value shown as a word (``--timeout SECONDS``), never as Typer's ``<float range>``/``<str>``.

    An option without a metavar takes its own name; an argument already shows its metavar, so the
    type Typer appends after it is dropped. Applied to the whole tree, so a new option cannot miss it.
    """
    for param in command.params:
        if isinstance(param, TyperOption) and not param.is_flag and not param.count and param.metavar is None:
            param.metavar = (param.opts[-1] if param.opts else param.name or "value").lstrip("-").upper()
        elif isinstance(param, TyperArgument):
            setattr(param, "display_type_rich", lambda ctx: None)  # noqa: B010 (Typer's hook, per instance)
    if isinstance(command, TyperGroup):
        for child in command.commands.values():
            _words_as_metavars(child)


class KeyfenceGroup(TyperGroup):
    """The root group: turns every error raised below it into a message and an exit code."""

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        command = super().get_command(ctx, cmd_name)
        if command is not None:
            _words_as_metavars(command)
        return command

    def invoke(self, ctx: Any) -> Any:
        notices = _VaultNotices(ctx)
        logger = logging.getLogger(_VAULT_LOGGER)
        logger.addHandler(notices)
        try:
            return self._invoke(ctx)
        finally:
            logger.removeHandler(notices)

    def _invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except KeyfenceError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted", err=True)
            raise typer.Exit(130) from None
        except Exception as exc:
            if _framework_exception(exc):
                raise
            if _debug_requested(ctx):
                typer.echo(traceback.format_exc(), err=True, nl=False)
            summary = " ".join(str(exc).split())[:300]
            typer.echo(
                f"internal error: {type(exc).__name__}: {summary} "
                f"(rerun with --debug or {DEBUG_ENV}=1 for the traceback)",
                err=True,
            )
            raise typer.Exit(EXIT_INVALID) from None


CONTEXT: Final[dict[str, Any]] = {"help_option_names": ["-h", "--help"], "max_content_width": 80}
"""``-h`` as people expect, and help that fits an 80-column terminal."""

app = typer.Typer(
    name="keyfence",
    cls=KeyfenceGroup,
    help="One exchange API key per trading process, one subaccount per strategy.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # Plain click help: flags shown as flags, metavars as words, wrapped to the terminal.
    rich_markup_mode=None,
    context_settings=CONTEXT,
)
app.add_typer(
    keys_app, name="keys", help="Register, list and revoke exchange keys in Vault: one key per process."
)


def _set_debug(ctx: typer.Context, value: bool) -> bool:
    if value:
        ctx.meta[_DEBUG_KEY] = True
    return value


DebugOption = Annotated[
    bool,
    typer.Option(
        "--debug",
        help=f"Show the traceback of internal errors (also {DEBUG_ENV}=1).",
        callback=_set_debug,
        is_eager=True,
    ),
]


def _show_version(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            number = version("keyfence")
        except PackageNotFoundError:
            number = "unknown (not installed)"
        typer.echo(f"keyfence {number}")
        raise typer.Exit(0)


@app.callback()
def _root(
    debug: DebugOption = False,
    show_version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print keyfence's version and exit.", callback=_show_version, is_eager=True
        ),
    ] = False,
) -> None:
    """One exchange API key per trading process, one subaccount per strategy."""


class CheckFormatOption(str, Enum):
    text = "text"
    json = "json"
    markdown = "markdown"
    sarif = "sarif"


class PlanFormatOption(str, Enum):
    text = "text"
    json = "json"


SpecOption = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        metavar="FILE",
        help="Fleet spec to check. Default: keyfence:spec from Pulumi.<stack>.yaml next to Pulumi.yaml.",
        dir_okay=False,
    ),
]
StackOption = Annotated[
    str | None,
    typer.Option(
        "--stack",
        metavar="NAME",
        help="Stack: STACK or ORG/PROJECT/STACK (default dev; project from Pulumi.yaml, organization "
        "'organization'); used for URNs, to find the spec and as the holder in the key ledger.",
    ),
]
ProgramOption = Annotated[
    Path | None,
    typer.Option(
        "--program",
        metavar="DIR",
        help="A Pulumi program (folder with __main__.py) that calls keyfence.program.run_from_config() "
        "and may declare more resources; default: keyfence's own program.",
    ),
]
ConfigOption = Annotated[
    list[str] | None,
    typer.Option(
        "--config",
        "-c",
        metavar="KEY=VALUE",
        help="Stack config for the program, as 'pulumi config set' gives it (repeatable).",
    ),
]


def _parse_config(pairs: list[str] | None) -> dict[str, str]:
    config: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise KeyfenceError(f"--config {pair!r}: expected KEY=VALUE")
        config[key.strip()] = value
    return config


TimeoutOption = Annotated[
    float,
    typer.Option(
        "--timeout",
        metavar="SECONDS",
        help="Seconds the program may run before it is stopped and the check fails (exit 2).",
        min=1.0,
    ),
]


def _show_program_output(lines: list[str]) -> None:
    """The program's own output, on stderr and marked as such: never part of a report."""
    for line in lines:
        typer.echo(f"program | {line}", err=True)


OfflineOption = Annotated[
    bool,
    typer.Option(
        "--offline",
        help="Do not contact Vault: key identities by Vault path only, fingerprints not verified.",
    ),
]


def _stdout_is_terminal() -> bool:
    return sys.stdout.isatty()


def _emit(body: str, output: Path | None, summary: str) -> None:
    """Print the report, or write it to ``output`` and print only the one-line summary."""
    if output is None:
        typer.echo(body, nl=False)
        return
    _write(output, body)
    typer.echo(summary)


def _inputs(
    spec: Path | str | None, stack: str | None, pack_config: str | None = None
) -> dict[str, Path | None]:
    """The files a command reads, which no output of it may replace."""
    from ..check.packconfig import is_inline
    from ..check.target import resolve_target

    try:
        spec_path: Path | None = Path(resolve_target(spec, stack).spec_path)
    except KeyfenceError:
        spec_path = Path(spec) if spec is not None else None  # reported by the command itself
    config = None if pack_config is None or is_inline(pack_config) else Path(pack_config)
    return {"fleet spec": spec_path, "policy pack config": config}


def _write(output: Path, body: str) -> None:
    try:
        output.write_text(body, encoding="utf-8")
    except OSError as exc:
        raise KeyfenceError(f"{output}: cannot write the report: {exc.strerror or exc}") from None


@app.command()
def check(
    ctx: typer.Context,
    spec: SpecOption = None,
    stack: StackOption = None,
    offline: OfflineOption = False,
    policy_pack: Annotated[
        Path | None,
        typer.Option(
            "--policy-pack",
            metavar="DIR",
            help="Policy pack directory (default: the keyfence pack).",
            file_okay=False,
        ),
    ] = None,
    policy_pack_config: Annotated[
        str | None,
        typer.Option(
            "--policy-pack-config",
            metavar="FILE|JSON",
            help="Pulumi policy pack config (levels and properties per policy, or 'all'): a JSON file, "
            'or the JSON object itself, e.g. \'{"all":"mandatory"}\'.',
        ),
    ] = None,
    fmt: Annotated[
        CheckFormatOption,
        typer.Option(
            "--format", "-f", metavar="FORMAT", help="text, json, markdown or sarif.", case_sensitive=False
        ),
    ] = CheckFormatOption.text,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            help="Write the report to this file and print only the verdict.",
            dir_okay=False,
        ),
    ] = None,
    reports: Annotated[
        list[str] | None,
        typer.Option(
            "--report",
            "-r",
            metavar="FORMAT=FILE",
            help="Also write a report in FORMAT (text, json, markdown, sarif) to FILE "
            "(repeatable); one run writes them all, whatever the exit code.",
        ),
    ] = None,
    details_url: Annotated[
        str | None,
        typer.Option(
            "--details-url",
            metavar="URL",
            help="Where the full reports are kept (e.g. the CI run); the markdown report links "
            "to it wherever it summarises or leaves something out.",
        ),
    ] = None,
    program: ProgramOption = None,
    config: ConfigOption = None,
    timeout: TimeoutOption = DEFAULT_PROGRAM_TIMEOUT,
    debug: DebugOption = False,
) -> None:
    """Run the policy pack on what the program would declare; exit 1 on a mandatory violation.

    Exit 2 (invalid spec or config, Vault error, pack failure) still writes every report asked
    for, listing the problems at their spec lines, so a pull request sees them.
    """
    # Imported here so that --help and other commands never pay for loading Pulumi and gRPC.
    from ..check.failure import CheckFailure
    from ..check.output import details_url as checked_url
    from ..check.output import render_check, render_failure, report_files, write_reports
    from ..check.report import check_rich, verdict

    stack_config = _parse_config(config)
    spec = _spec_from_config(spec, stack_config)
    files = report_files(
        reports or [], output=output, output_format=fmt.value, inputs=_inputs(spec, stack, policy_pack_config)
    )
    url = checked_url(details_url) if details_url is not None else None
    wants_report = bool(files) or fmt is not CheckFormatOption.text
    target_stack = stack or "dev"
    try:
        from ..check.runner import run_check
        from ..check.target import resolve_target

        target = resolve_target(spec, stack)
        target_stack = target.stack
        spec = Path(target.spec_path)
        result = run_check(
            target.spec_path,
            stack=target.stack,
            offline=offline,
            policy_pack_dir=policy_pack,
            policy_pack_config=policy_pack_config,
            project=target.project,
            program=program,
            config=stack_config,
            organization=target.organization,
            timeout=timeout,
        )
    except KeyfenceError as exc:
        if wants_report:
            failure = CheckFailure.from_error(
                exc, stack=target_stack, spec_path=str(spec) if spec else None, offline=offline
            )
            if output is None and fmt is not CheckFormatOption.text:
                typer.echo(render_failure(failure, fmt.value, details_url=url), nl=False)
            try:
                write_reports(files, lambda f: render_failure(failure, f, details_url=url))
            except KeyfenceError as unwritten:
                typer.echo(f"error: {unwritten}", err=True)
        raise
    _show_program_output(result.program_output)
    if _debug_requested(ctx):
        for line in result.pack_logs:
            typer.echo(f"policy pack: {line}", err=True)
    if output is None and fmt is CheckFormatOption.text and _stdout_is_terminal():
        console = Console()
        console.print(check_rich(result, console.width))
    elif output is None:
        typer.echo(render_check(result, fmt.value, details_url=url), nl=False)
    write_reports(files, lambda f: render_check(result, f, details_url=url))
    if output is not None:
        typer.echo(verdict(result))
    raise typer.Exit(result.exit_code)


def _spec_from_config(spec: Path | None, config: dict[str, str]) -> Path | None:
    """``--config keyfence:spec=PATH`` names the spec, as ``pulumi config set keyfence:spec`` would."""
    named = config.get(SPEC_CONFIG_KEY)
    if named is None or not named.strip():
        return spec
    if spec is not None and Path(named) != spec:
        raise KeyfenceError(
            f"--spec {spec} and --config {SPEC_CONFIG_KEY}={named} name two different specs; give one"
        )
    return Path(named)


@app.command()
def plan(
    spec: SpecOption = None,
    stack: StackOption = None,
    offline: OfflineOption = False,
    fmt: Annotated[
        PlanFormatOption,
        typer.Option("--format", "-f", metavar="FORMAT", help="text or json.", case_sensitive=False),
    ] = PlanFormatOption.text,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="Write the plan to this file.", dir_okay=False),
    ] = None,
    program: ProgramOption = None,
    config: ConfigOption = None,
    timeout: TimeoutOption = DEFAULT_PROGRAM_TIMEOUT,
    debug: DebugOption = False,
) -> None:
    """Show what the program would declare, with every secret value redacted."""
    from ..check.output import refuse_overwriting
    from ..check.report import plan_rich, render_plan
    from ..check.runner import run_plan
    from ..check.target import resolve_target

    stack_config = _parse_config(config)
    target = resolve_target(_spec_from_config(spec, stack_config), stack)
    if output is not None:
        refuse_overwriting(f"--output {output}", output, _inputs(target.spec_path, None))
    result = run_plan(
        target.spec_path,
        stack=target.stack,
        offline=offline,
        project=target.project,
        program=program,
        config=stack_config,
        timeout=timeout,
    )
    _show_program_output(result.program_output)
    if fmt is PlanFormatOption.text and output is None and _stdout_is_terminal():
        Console().print(plan_rich(result))
    else:
        _emit(
            render_plan(result, fmt.value),
            output,
            f"{len(result.resources)} resources written to {output}",
        )


@app.command("vault-policies")
def vault_policies(
    spec: SpecOption = None,
    stack: StackOption = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output", "-o", metavar="FILE", help="Write the policies to this file.", dir_okay=False
        ),
    ] = None,
    debug: DebugOption = False,
) -> None:
    """Print the least-privilege Vault policy (HCL) and Kubernetes-auth role of each operator-fed process."""
    from ..check.output import refuse_overwriting
    from ..check.target import resolve_target
    from ..delivery.vaultpolicy import process_access, render
    from ..spec import load_spec

    target = resolve_target(spec, stack)
    if output is not None:
        refuse_overwriting(f"--output {output}", output, _inputs(target.spec_path, None))
    fleet = load_spec(target.spec_path)
    _emit(render(fleet), output, f"{len(process_access(fleet))} policies written to {output}")


def main() -> None:
    """Console-script entry point (``keyfence = keyfence.cli:main``)."""
    app(prog_name="keyfence")
