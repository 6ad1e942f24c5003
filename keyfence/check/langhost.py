"""The child process of ``keyfence check``: a Pulumi program started as the language host starts it.

``python -m keyfence.check.langhost --monitor ADDR --engine ADDR --project P --stack S --pwd DIR PROGRAM``
does what Pulumi's ``pulumi-language-python-exec`` does: stack config from ``PULUMI_CONFIG``
and ``PULUMI_CONFIG_SECRET_KEYS``, the SDK's settings pointed at the given monitor and
engine, the working directory changed, and the program run with ``runpy`` inside the root
stack on a fresh event loop. Its only extra is keyfence's own: when ``--harness`` is given,
the run options of ``keyfence check`` (spec, check or offline mode, Vault settings) are read
as JSON from standard input and installed with ``harness_options`` before the program runs,
so no stack config or environment variable can ever select a check mode for ``pulumi up``.

Nothing here is trusted by the parent: the verdict comes from the monitor's record of the
run, never from this process's exit status or output.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import logging
import os
import runpy
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from ..collector import RUN_GC_THRESHOLD

KEYFENCE_LOGS: Final = "keyfence"
FORWARDED: Final = "\x1fkeyfence-log\x1f"
"""Marks a keyfence log record sent to the engine, for the parent to log it as its own."""
EXIT_PROGRAM_ERROR: Final = 32
"""What the Python language host exits with after reporting a program's error to the engine."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m keyfence.check.langhost", description=__doc__)
    p.add_argument("--monitor", required=True)
    p.add_argument("--engine", required=True)
    p.add_argument("--project", required=True)
    p.add_argument("--stack", required=True)
    p.add_argument("--organization", default="organization")
    p.add_argument("--pwd", required=True)
    p.add_argument("--parallel", type=int, default=0)
    p.add_argument("--harness", action="store_true", help="read keyfence's run options from stdin")
    p.add_argument("program")
    return p


def _harness_options(raw: str) -> Any:
    """The ProgramOptions the parent sent (Vault credentials included, never printed)."""
    from ..program import ProgramOptions
    from ..vault import VaultSettings

    data = json.loads(raw)
    vault = data.get("vault")
    return ProgramOptions(
        spec_path=data["spec_path"],
        mode=data["mode"],
        vault=VaultSettings(**vault) if isinstance(vault, dict) else None,
        stack=data.get("stack"),
    )


class _ToEngine(logging.Handler):
    """keyfence's own log records (Vault notices), handed to ``keyfence check`` to show as it would."""

    def emit(self, record: logging.LogRecord) -> None:
        import pulumi

        args = record.args if isinstance(record.args, tuple) else ()
        if isinstance(record.msg, str) and all(isinstance(a, (str, int, float)) for a in args):
            fields = {"msg": record.msg, "args": list(args)}
        else:
            fields = {"msg": "%s", "args": [record.getMessage()]}
        try:
            pulumi.log.info(f"{FORWARDED}{record.name}\t{record.levelno}\t{json.dumps(fields)}")
        except Exception:
            self.handleError(record)


class _EngineWithoutDebug:
    """The engine stub, less the SDK's debug records.

    The SDK sends several debug lines per resource, each a round trip; the engine shows them
    only with ``-v`` and keyfence never reads them, so they stay in this process.
    """

    def __init__(self, stub: Any) -> None:
        self._stub = stub

    def Log(self, request: Any, *args: Any, **kwargs: Any) -> Any:
        from google.protobuf import empty_pb2
        from pulumi.runtime.proto import engine_pb2

        if request.severity == engine_pb2.DEBUG:
            return empty_pb2.Empty()
        return self._stub.Log(request, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._stub, name)


@contextlib.contextmanager
def _installed(options: Any) -> Iterator[None]:
    if options is None:
        yield
        return
    from ..program import harness_options

    logger = logging.getLogger(KEYFENCE_LOGS)
    logger.addHandler(_ToEngine())
    logger.propagate = False
    with harness_options(options):
        yield


def _where(exc: BaseException, program: Path) -> str:
    """``file:line`` of the innermost frame in the program's folder (else the innermost frame)."""
    frames = list(traceback.extract_tb(exc.__traceback__))
    folder = str(program.resolve() if program.is_dir() else program.resolve().parent)
    mine = [f for f in frames if f.filename.startswith(folder)]
    chosen = mine or frames
    return f"{chosen[-1].filename}:{chosen[-1].lineno}: " if chosen else ""


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    options = _harness_options(sys.stdin.read()) if args.harness else None

    import pulumi
    import pulumi.runtime

    pulumi.runtime.set_all_config(
        pulumi.runtime.get_config_env(), pulumi.runtime.get_config_secret_keys_env()
    )
    pulumi.runtime.configure(
        pulumi.runtime.Settings(
            monitor=args.monitor,
            engine=args.engine,
            project=args.project,
            stack=args.stack,
            parallel=args.parallel,
            dry_run=True,
            organization=args.organization,
            root_directory=args.pwd,
        )
    )
    from pulumi.runtime import settings

    settings.SETTINGS.engine = _EngineWithoutDebug(settings.SETTINGS.engine)
    program = Path(args.program)
    sys.argv = [args.program]
    os.chdir(args.pwd)
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)
    # The program's pace, as batched_gc's, without its final collection: the process exits next.
    gc.set_threshold(RUN_GC_THRESHOLD, *gc.get_threshold()[1:])

    def program_body() -> None:
        runpy.run_path(args.program, run_name="__main__")

    try:
        with _installed(options):
            loop.run_until_complete(pulumi.runtime.run_in_stack(program_body))
        return 0
    except pulumi.RunError as exc:
        pulumi.log.error(str(exc))
        return 1
    except Exception as exc:
        pulumi.log.error(f"{_where(exc, program)}{type(exc).__name__}: {exc}")
        return EXIT_PROGRAM_ERROR
    except BaseException as exc:
        # SystemExit, KeyboardInterrupt or any other BaseException: reported, never re-raised, so
        # that the program's output is not a traceback of this host. The parent decides anyway.
        if isinstance(exc, SystemExit):
            what = f"it called sys.exit({exc.code!r})"
            code = exc.code if isinstance(exc.code, int) else 1
        else:
            what = f"it raised {type(exc).__name__}: {exc}"
            code = EXIT_PROGRAM_ERROR
        with contextlib.suppress(Exception):
            pulumi.log.error(f"{_where(exc, program)}{what}")
        return code
    finally:
        loop.close()
        sys.stdout.flush()
        sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
