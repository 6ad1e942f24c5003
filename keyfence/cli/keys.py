"""``keyfence keys``: register, list, release and revoke exchange keys in Vault.

Key material enters through standard input only (a no-echo prompt on a terminal), never
through arguments or the environment, where shell history, ``ps`` and CI logs would keep
it. Results go to stdout, one line or one report; progress bars and prompts go to stderr
and appear only on a terminal, so piped output stays machine-readable.

Exit codes: 0 done (for ``list``: no duplicate, missing key or identity problem); 1 refused
(the key is registered elsewhere, the path is taken without ``--rotate``, a check-and-set
race was lost, permissions beyond the role, a claim held by another stack, a claimed or
used key to revoke; ``list`` found problems; a revoke was declined); 2 invalid input or a
Vault error. Errors are rendered by the root group.
"""

from __future__ import annotations

import getpass
import json
import sys
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Final, TextIO

import typer
from typer.core import TyperArgument, TyperCommand

from ..errors import EXIT_OK, EXIT_VIOLATION, RefusedError

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress as RichProgress
    from rich.progress import TaskID

    from ..keystore import Inventory, Progress
    from ..spec import FleetSpec
    from ..vault import KV2Client

MAX_STDIN_BYTES: Final = 64 * 1024
"""Two lines of key material are well under this; more is the wrong thing piped in."""

app = typer.Typer(
    help="Register, list, release and revoke exchange keys in Vault: one key per process.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 80},
)


class WordsCommand(TyperCommand):
    """Help shows an argument by its metavar only (``SUBACCOUNT/PROCESS``), never ``<str>`` after it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for param in self.params:
            if isinstance(param, TyperArgument) and param.metavar:
                param.display_type_rich = _no_type  # type: ignore[method-assign]


def _no_type(ctx: Any) -> None:
    return None


class Venue(str, Enum):
    spot = "spot"
    futures = "futures"


class ListFormat(str, Enum):
    text = "text"
    json = "json"


ProcessArgument = Annotated[
    str,
    typer.Argument(metavar="SUBACCOUNT/PROCESS", help="The process the key is for, e.g. momentum/executor."),
]
SpecOption = Annotated[
    Path | None,
    typer.Option(
        "--spec",
        metavar="FILE",
        help="Fleet spec: supplies mount, prefix, key path, venue and permissions, and checks them.",
        dir_okay=False,
    ),
]
PathOption = Annotated[
    str | None,
    typer.Option(
        "--path",
        metavar="PATH",
        help="Key path inside the mount. Default: <prefix>/<subaccount>/<process>."),
]
MountOption = Annotated[
    str | None, typer.Option(
        "--mount",
        metavar="MOUNT",
        help="KV version 2 mount (default: the spec's, else 'secret').")
]
PrefixOption = Annotated[
    str | None, typer.Option(
        "--prefix",
        metavar="PREFIX",
        help="Key path prefix (default: the spec's, else 'kraken').")
]


# --------------------------------------------------------------------------- plumbing


def _load(spec: Path | None) -> FleetSpec | None:
    from ..spec import load_spec

    return load_spec(spec) if spec is not None else None


def _stdin_is_terminal() -> bool:
    """Whether a person can answer a prompt (a seam for tests, as CliRunner's stdin is a pipe)."""
    return sys.stdin.isatty()


def _client() -> KV2Client:
    from ..vault import VaultSettings, connect

    return connect(VaultSettings.from_env())


class _TerminalProgress:
    """A transient rich progress bar on stderr, for work longer than a screenful of keys."""

    def __init__(self, console: Console) -> None:
        self._console = console
        self._bar: RichProgress | None = None
        self._task: TaskID | None = None

    def begin(self, description: str, total: int) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        if total <= max(self._console.height, 1):
            return
        self._bar = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=self._console,
            transient=True,
        )
        self._bar.start()
        self._task = self._bar.add_task(description, total=total)

    def step(self) -> None:
        if self._bar is not None and self._task is not None:
            self._bar.advance(self._task)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
        self._bar = self._task = None


def _progress() -> Progress:
    """Progress on a terminal only: a pipe or a CI log gets nothing but the result."""
    from ..keystore import NoProgress

    if not sys.stderr.isatty():
        return NoProgress()
    from rich.console import Console

    return _TerminalProgress(Console(stderr=True))


def read_material(stream: TextIO) -> tuple[str, str]:
    """The api key and api secret: two lines of ``stream``, or two no-echo prompts on a terminal.

    Only a line terminator is removed; any other whitespace is left for validation to
    reject, because a silently trimmed paste may be a silently wrong key.
    """
    from ..keystore import KeyInputError

    if stream.isatty():
        try:
            return getpass.getpass("API key: "), getpass.getpass("API secret: ")
        except EOFError:
            raise KeyInputError("no key entered (end of input at the prompt); nothing was written") from None
    data = stream.read(MAX_STDIN_BYTES + 1)
    if len(data) > MAX_STDIN_BYTES:
        raise KeyInputError(
            f"standard input is over {MAX_STDIN_BYTES // 1024} KiB; "
            "expected two lines: the api key, then the api secret"
        )
    lines = [line.removesuffix("\r") for line in data.split("\n")]
    while lines and lines[-1] == "":
        lines.pop()
    if len(lines) != 2:
        raise KeyInputError(
            f"expected two lines on standard input, the api key and then the api secret; got {len(lines)}. "
            "Pipe them in (e.g. from your password manager) or run on a terminal to be prompted"
        )
    return lines[0], lines[1]


# --------------------------------------------------------------------------- register


@app.command(cls=WordsCommand)
def register(
    name: ProcessArgument,
    venue: Annotated[
        Venue | None,
        typer.Option(
            "--venue",
            metavar="VENUE",
            help="spot or futures. Default: the venue of the subaccount in --spec.",
            case_sensitive=False,
        ),
    ] = None,
    permissions: Annotated[
        str | None,
        typer.Option(
            "--permissions",
            metavar="ID[,ID...]",
            help="The key's Kraken permission ids, comma-separated. Default: the process's in --spec.",
        ),
    ] = None,
    path: PathOption = None,
    rotate: Annotated[
        bool, typer.Option("--rotate", help="Replace the key already registered here with a new version.")
    ] = False,
    spec: SpecOption = None,
    mount: MountOption = None,
    prefix: PrefixOption = None,
) -> None:
    """Store a key read from standard input (two lines: api key, api secret) for one process.

    Refused (exit 1): the key is registered elsewhere, the path is taken, a race was lost.
    """
    from ..keystore import SHORT_FINGERPRINT, plan_registration, preflight, register_key, validate_material

    fleet = _load(spec)
    registration = plan_registration(
        name,
        venue=venue.value if venue is not None else None,
        permissions=permissions,
        path=path,
        mount=mount,
        prefix=prefix,
        rotate=rotate,
        spec=fleet,
    )
    # Vault settings, login and the target are checked before any secret is asked for.
    with _client() as client:
        preflight(client, registration)
        material = validate_material(*read_material(sys.stdin))
        done = register_key(client, registration, material, progress=_progress())
    for warning in done.warnings:
        typer.echo(f"warning: {warning}", err=True)
    what = (
        f"rotated {done.ref} from version {done.replaced_version} to version {done.version}"
        if done.replaced_version is not None
        else f"registered {done.ref} version {done.version}"
    )
    typer.echo(
        f"{what} for {registration.process_ref} ({registration.venue}: "
        f"{','.join(registration.permissions)}), fingerprint {done.fingerprint[:SHORT_FINGERPRINT]}"
    )


# --------------------------------------------------------------------------- list


def _plain_table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    return [
        "  " + "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        for line in [headers, *rows]
    ]


_HEADERS: Final = [
    "SUBACCOUNT",
    "PROCESS",
    "PATH",
    "FINGERPRINT",
    "VERSION",
    "PERMISSIONS",
    "UPDATED",
    "STATUS",
    "HOLDER",
]


NARROW: Final = 140
"""Below this terminal width the key table drops the columns the path already tells."""
_NARROW_HEADERS: Final = ["PATH", "FINGERPRINT", "VERSION", "PERMISSIONS", "STATUS"]


def _rows(result: Inventory) -> list[list[str]]:
    from ..keystore import SHORT_FINGERPRINT, iso_utc

    return [
        [
            key.subaccount or "-",
            key.process or "-",
            key.path,
            key.fingerprint[:SHORT_FINGERPRINT] if key.fingerprint else "(none)",
            str(key.version),
            ",".join(key.permissions) or "-",
            iso_utc(key.updated_time) if key.updated_time else "-",
            key.status,
            key.holder or "(no ledger record)",
        ]
        for key in result.keys
    ]


def _empty_note(result: Inventory, origin: str) -> str | None:
    """Nothing found: say where keyfence looked and why there, so an empty list is never a puzzle."""
    if result.keys:
        return None
    return (
        f"no keys found under {result.mount}/{result.prefix}/ ({origin}); "
        "pass --spec FILE, or --mount/--prefix, to list where your keys are"
    )


def _verdict(result: Inventory) -> str:
    n = len(result.keys)
    count = f"{n} key{'' if n == 1 else 's'} under {result.mount}/{result.prefix}"
    problems = []
    if result.duplicates:
        problems.append(f"{len(result.duplicates)} key(s) stored under several paths")
    if result.missing:
        problems.append(f"{len(result.missing)} process(es) without a key")
    if result.problems:
        problems.append(f"{len(result.problems)} identity or ledger problem(s)")
    if problems:
        return f"NOT CLEAN: {count}; {'; '.join(problems)}"
    if result.spec is None:
        return f"clean: {count}, no key stored twice"
    unused = f"; {len(result.unused)} unused" if result.unused else ""
    return f"clean: {count}; every process of {result.spec} has its own key{unused}"


def _findings(result: Inventory) -> list[str]:
    lines = []
    if result.spec is not None:
        lines.append(f"unused (stored, used by no process of {result.spec}): {len(result.unused)}")
        lines.extend(f"  {result.mount}/{path}" for path in result.unused)
        lines.append(f"missing (process without a usable key): {len(result.missing)}")
        lines.extend(f"  {m.process}: {result.mount}/{m.path}: {m.reason}" for m in result.missing)
    lines.append(f"duplicates (one API key under several paths): {len(result.duplicates)}")
    lines.extend(
        f"  fingerprint {d.fingerprint[:12]}: " + ", ".join(f"{result.mount}/{p}" for p in d.paths)
        for d in result.duplicates
    )
    lines.append(
        f"problems (identity and key ledger at {result.mount}/{result.ledger}): {len(result.problems)}"
    )
    lines.extend(f"  {result.mount}/{p.path}: {p.problem}" for p in result.problems)
    if result.repaired:
        lines.append(f"repaired: {len(result.repaired)}")
        lines.extend(f"  {line}" for line in result.repaired)
    return lines


def render_list_text(result: Inventory) -> str:
    """The inventory as plain aligned text, for pipes and logs."""
    lines = [f"keys under {result.mount}/{result.prefix}:"]
    lines.extend(_plain_table(_HEADERS, _rows(result)) if result.keys else ["  (none)"])
    lines.extend(_findings(result))
    lines.append(_verdict(result))
    return "\n".join(lines) + "\n"


def _print_rich(result: Inventory) -> None:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    console = Console()
    narrow = console.width < NARROW
    headers = _NARROW_HEADERS if narrow else _HEADERS
    table = Table(title=f"keys under {result.mount}/{result.prefix}", title_justify="left")
    for header in headers:
        # min_width: a header is never split mid-word.
        table.add_column(header.lower(), overflow="fold", min_width=len(header))
    for row in _rows(result):
        cells = dict(zip(_HEADERS, row, strict=True))
        shown = [cells[h].replace(",", ", ") if h == "PERMISSIONS" else cells[h] for h in headers]
        # Cells as Text, never markup: whatever Vault holds prints as itself.
        table.add_row(*(Text(cell) for cell in shown), style=None if row[-1] == "ok" else "yellow")
    console.print(table)
    if narrow and result.keys:
        console.print(
            "subaccount, process and updated columns left out at this width; --format json shows them",
            style="dim",
            highlight=False,
        )
    for line in _findings(result):
        console.print(line, highlight=False, markup=False)
    console.print(_verdict(result), style="bold green" if result.clean else "bold red", highlight=False)


@app.command("list")
def list_keys(
    spec: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            metavar="FILE",
            help="Fleet spec: supplies mount and prefix, and reports keys no process uses, "
            "processes without a key and keys stored twice.",
            dir_okay=False,
        ),
    ] = None,
    mount: MountOption = None,
    prefix: PrefixOption = None,
    fmt: Annotated[
        ListFormat,
        typer.Option("--format", "-f", metavar="FORMAT", help="text or json.", case_sensitive=False),
    ] = ListFormat.text,
    repair: Annotated[
        bool,
        typer.Option(
            "--repair",
            help="Create the missing ledger records (create-only) and remove unclaimed stale ones.",
        ),
    ] = False,
) -> None:
    """Show every key under the prefix (metadata only) and its holder; with --spec, cross-check it.

    Exit 1 when one key is stored under several paths (anywhere in the mount), a process of
    --spec has no key, a fingerprint is missing or not tied to the current version, or a
    ledger record names a path that no longer holds its key.
    """
    from ..keystore import inventory, resolve_placement

    fleet = _load(spec)
    placement = resolve_placement(fleet, mount, prefix)
    with _client() as client:
        result = inventory(client, placement, spec=fleet, progress=_progress(), repair=repair)
    if fleet is not None:
        origin = f"the vault section of {spec}"
    elif mount is None and prefix is None:
        origin = "the default mount and prefix: no --spec, --mount or --prefix given"
    else:
        origin = "from --mount/--prefix" + ("" if mount and prefix else ", defaults for the rest")
    note = _empty_note(result, origin)
    if note is not None:
        typer.echo(f"note: {note}", err=True)
    if fmt is ListFormat.json:
        typer.echo(json.dumps(result.to_json(), indent=2))
    elif sys.stdout.isatty():
        _print_rich(result)
    else:
        typer.echo(render_list_text(result), nl=False)
    raise typer.Exit(EXIT_OK if result.clean else EXIT_VIOLATION)


# --------------------------------------------------------------------------- revoke


@app.command(cls=WordsCommand)
def revoke(
    name: ProcessArgument,
    path: PathOption = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    spec: Annotated[
        Path | None,
        typer.Option(
            "--spec",
            metavar="FILE",
            help="Fleet spec: finds the process's key path (its key: field, else the spec's mount "
            "and prefix); nothing else in it is checked.",
            dir_okay=False,
        ),
    ] = None,
    mount: MountOption = None,
    prefix: PrefixOption = None,
    force: Annotated[
        bool, typer.Option("--force", help="Revoke even a key a stack claims or that --spec uses.")
    ] = False,
) -> None:
    """Destroy every version and the metadata of a process's key in Vault (not on Kraken).

    Refused (exit 1) while a stack holds the key in the ledger, or while --spec uses it,
    unless --force.
    """
    from ..keystore import (
        SHORT_FINGERPRINT,
        KeyInputError,
        describe_key,
        find_entry,
        key_path_for,
        metadata_fingerprint,
        parse_process_ref,
        resolve_placement,
        revoke_key,
        revoke_refusal,
        summarize_metadata,
    )
    from ..vault import Ledger

    subaccount, process = parse_process_ref(name)
    fleet = _load(spec)
    placement = resolve_placement(fleet, mount, prefix)
    entry = find_entry(fleet, subaccount, process) if fleet is not None else None
    key_path = key_path_for(subaccount, process, placement, path, entry)
    if not yes and not _stdin_is_terminal():
        raise KeyInputError(
            f"revoking {placement.mount}/{key_path} destroys the key for good and needs confirmation, "
            "but standard input is not a terminal; pass --yes to confirm"
        )
    with _client() as client:
        metadata = describe_key(client, placement.mount, key_path)
        ledger = Ledger(client, placement.mount, placement.ledger)
        refusal = revoke_refusal(ledger, metadata, fleet)
        if refusal is not None and not force:
            raise RefusedError(f"refused: {refusal}; nothing was destroyed (--force revokes it anyway)")
        if not yes:
            fingerprint = metadata_fingerprint(metadata)
            about = ", ".join(
                x
                for x in (
                    f"version {metadata.current_version}",
                    f"fingerprint {fingerprint[:SHORT_FINGERPRINT]}" if fingerprint else "",
                    summarize_metadata(metadata.custom_metadata),
                )
                if x
            )
            if not typer.confirm(
                f"Destroy every version of {metadata.ref} ({about})? It cannot be undone",
                default=False,
                err=True,
            ):
                typer.echo("not revoked: nothing was destroyed", err=True)
                raise typer.Exit(EXIT_VIOLATION)
        done = revoke_key(client, metadata, ledger)
    shown = f", fingerprint {done.fingerprint[:SHORT_FINGERPRINT]}" if done.fingerprint else ""
    typer.echo(
        f"revoked {done.ref}: destroyed {done.versions} version(s) and the metadata{shown}; "
        "the key still works on Kraken until you delete it there"
    )


# --------------------------------------------------------------------------- release


@app.command()
def release(
    name: ProcessArgument,
    stack: Annotated[
        str,
        typer.Option(
            "--stack",
            help="The stack whose claim to free: STACK or ORG/PROJECT/STACK (project from Pulumi.yaml).",
        ),
    ],
    force: Annotated[
        bool, typer.Option("--force", help="Free the key's claim even if another stack holds it.")
    ] = False,
    path: PathOption = None,
    spec: SpecOption = None,
    mount: MountOption = None,
    prefix: PrefixOption = None,
) -> None:
    """Free a ledger claim left by a stack removed without 'pulumi destroy'.

    Refused (exit 1) when another stack holds the key, unless --force.
    """
    from ..check.target import qualified_stack
    from ..keystore import find_entry, key_path_for, parse_process_ref, resolve_placement
    from ..keystore.claims import release_process
    from ..vault import Ledger

    subaccount, process = parse_process_ref(name)
    fleet = _load(spec)
    placement = resolve_placement(fleet, mount, prefix)
    entry = find_entry(fleet, subaccount, process) if fleet is not None else None
    key_path = key_path_for(subaccount, process, placement, path, entry)
    holder = qualified_stack(stack)
    with _client() as client:
        ledger = Ledger(client, placement.mount, placement.ledger)
        freed = release_process(client, ledger, f"{subaccount}/{process}", key_path, holder, force=force)
    if not freed:
        typer.echo(f"nothing to release: no claim on the key of {name} ({placement.mount}/{key_path})")
        return
    for done in freed:
        typer.echo(
            f"released {placement.mount}/{done.path} (fingerprint {done.fingerprint[:12]}): it was claimed "
            f"by stack {done.stack} for {done.process} since {done.claimed_at or 'an unknown time'}"
        )
