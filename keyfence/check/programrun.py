"""Run a Pulumi program in a child process against the served engine, and judge whether it completed.

The program is the untrusted part of ``keyfence check``: it runs in its own process
(:mod:`keyfence.check.langhost`), talks to this one only over the engine's gRPC protocol
(:mod:`keyfence.check.engine`), and its standard output and error are captured as *program output*,
never written to keyfence's own streams. This process alone decides what happened. A run
counts as complete only when the protocol says so: the SDK signalled
``SignalAndWaitForShutdown`` (sent only after every registration was answered and only
when the program raised nothing), the root stack's outputs were registered, nothing
arrived after that, nothing was refused, no error was logged, and the process then exited
with status 0. Anything else (an early ``sys.exit(0)``, an ``atexit`` that ends the
process, a ``BaseException``, a kill, a timeout) is one message and exit 2.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Final

import grpc
from pulumi.runtime.proto import engine_pb2_grpc, resource_pb2_grpc

from ..collector import batched_gc
from ..errors import KeyfenceError
from ..program import ProgramOptions
from .engine import Engine, EngineLog, EngineSettings, RunRecord
from .harness import Collected, RegisteredResource

DEFAULT_TIMEOUT: Final = 600.0
"""Seconds a program may run before it is stopped (``keyfence check --timeout``)."""
OUTPUT_LINES: Final = 200
"""Lines of the program's output kept (the last ones) to show with the result."""
MAX_LINE_CHARS: Final = 500
GRPC_OPTIONS: Final = [
    ("grpc.max_receive_message_length", 400 * 1024 * 1024),
    ("grpc.max_send_message_length", 400 * 1024 * 1024),
]
SERVER_THREADS: Final = 8
KEPT_ENV_PREFIXES: Final = ("PULUMI_CONFIG",)


class ProgramFailed(KeyfenceError):
    """The program did not complete a run the engine could vouch for: exit 2."""

    def __init__(self, message: str, *, problems: Sequence[str] = (), output: Sequence[str] = ()) -> None:
        self.output = list(output)
        super().__init__(message, problems=problems)

    def render(self) -> str:
        text = super().render()
        if not getattr(self, "output", None):
            return text
        lines = [f"program output (its last {len(self.output)} lines):", *[f"  | {o}" for o in self.output]]
        return "\n".join([text, *lines])


@dataclass(frozen=True)
class ProgramRun:
    """One program to run, and the deployment it runs in."""

    program: Path
    """A folder with ``__main__.py`` or a ``.py`` file, handed to ``runpy`` as the language host does."""
    pwd: Path
    project: str
    stack: str
    config: Mapping[str, str]
    secret_keys: Sequence[str] = ()
    options: ProgramOptions | None = None
    """keyfence's own run options, installed in the child with ``harness_options``."""
    organization: str = "organization"
    timeout: float = DEFAULT_TIMEOUT


class _Tail:
    """Drains one pipe on a thread, keeping its last lines."""

    def __init__(self, stream: IO[bytes], name: str, lines: deque[str]) -> None:
        self._lines = lines
        self._name = name
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: IO[bytes]) -> None:
        try:
            for raw in iter(stream.readline, b""):
                text = raw.decode("utf-8", "replace").rstrip("\r\n")
                self._lines.append(f"{self._name}: {text[:MAX_LINE_CHARS]}")
        finally:
            stream.close()

    def join(self) -> None:
        self._thread.join(timeout=5)


def _import_roots() -> list[str]:
    """Folders the child needs on its path to import ``keyfence`` and ``keyfence_policies``."""
    import keyfence_policies

    roots = [
        str(Path(__file__).resolve().parents[2]),
        str(Path(keyfence_policies.__file__).resolve().parent.parent),
    ]
    return list(dict.fromkeys(roots))


def _environment(run: ProgramRun) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(KEPT_ENV_PREFIXES)}
    env["PULUMI_CONFIG"] = json.dumps(dict(run.config))
    env["PULUMI_CONFIG_SECRET_KEYS"] = json.dumps(list(run.secret_keys))
    env["PULUMI_PROJECT"] = run.project
    env["PULUMI_STACK"] = run.stack
    env["PULUMI_DRY_RUN"] = "true"
    env["PULUMI_ORGANIZATION"] = run.organization
    env["PYTHONPATH"] = os.pathsep.join([*_import_roots(), *filter(None, [env.get("PYTHONPATH")])])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def _options_json(options: ProgramOptions) -> str:
    return json.dumps(
        {
            "spec_path": options.spec_path,
            "mode": options.mode,
            "stack": options.stack,
            "vault": dataclasses.asdict(options.vault) if options.vault is not None else None,
        }
    )


def run_program(
    run: ProgramRun, on_resource: Callable[[RegisteredResource], None] | None = None
) -> Collected:
    """Run the program to completion under the served engine; raises ProgramFailed otherwise.

    ``on_resource`` receives every registration as the engine records it.
    """
    engine = Engine(
        EngineSettings(run.project, run.stack, run.organization, dict(run.config), run.pwd.resolve()),
        on_resource,
    )
    executor = futures.ThreadPoolExecutor(max_workers=SERVER_THREADS, thread_name_prefix="keyfence-monitor")
    server = grpc.server(executor, options=GRPC_OPTIONS)
    resource_pb2_grpc.add_ResourceMonitorServicer_to_server(engine, server)
    engine_pb2_grpc.add_EngineServicer_to_server(EngineLog(engine.record), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    address = f"127.0.0.1:{port}"
    output: deque[str] = deque(maxlen=OUTPUT_LINES)
    args = [
        sys.executable,
        "-m",
        "keyfence.check.langhost",
        f"--monitor={address}",
        f"--engine={address}",
        f"--project={run.project}",
        f"--stack={run.stack}",
        f"--organization={run.organization}",
        f"--pwd={run.pwd}",
        *(["--harness"] if run.options is not None else []),
        str(run.program),
    ]
    try:
        with batched_gc():
            returncode, timed_out = _run_child(args, run, output)
    finally:
        server.stop(grace=None)
        executor.shutdown(wait=False)
        engine.close()
    lines = list(output)
    problem = _incomplete(engine.record, returncode, timed_out=timed_out, timeout=run.timeout)
    if problem is not None:
        headline, details = problem
        raise ProgramFailed(headline, problems=details, output=lines)
    record = engine.record
    return Collected(record.resources, record.stack_outputs, record.stack_urn, lines)


def _run_child(args: list[str], run: ProgramRun, output: deque[str]) -> tuple[int, bool]:
    """Start the program, wait for it (at most ``run.timeout``), and stop all it left behind."""
    try:
        process = subprocess.Popen(
            args,
            cwd=run.pwd,
            env=_environment(run),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
    except OSError as exc:
        raise ProgramFailed(f"the program could not be started with {sys.executable}: {exc}") from None
    assert process.stdout is not None and process.stderr is not None
    drains = [_Tail(process.stdout, "stdout", output), _Tail(process.stderr, "stderr", output)]
    _send_options(process, run.options)
    timed_out = False
    try:
        returncode = process.wait(timeout=run.timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(process)
        returncode = process.wait()
    _kill_group(process)  # anything the program left running in its session
    for drain in drains:
        drain.join()
    return returncode, timed_out


def _send_options(process: subprocess.Popen[bytes], options: ProgramOptions | None) -> None:
    stdin = process.stdin
    if stdin is None:
        return
    # A program already gone raises OSError here; its exit is judged afterwards.
    with contextlib.suppress(OSError):
        if options is not None:
            stdin.write(_options_json(options).encode())
    with contextlib.suppress(OSError):
        stdin.close()


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


def _status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def _incomplete(
    record: RunRecord, returncode: int, *, timed_out: bool, timeout: float
) -> tuple[str, list[str]] | None:
    """Why the run cannot be vouched for, as (headline, details); ``None`` when it completed."""
    errors = record.errors
    if timed_out:
        return f"the program did not complete within {timeout:g} s (--timeout) and was stopped", errors
    if record.refusals:
        if len(record.refusals) == 1:
            return record.refusals[0], []
        return "the program asked for what the hermetic check cannot do", list(record.refusals)
    if returncode < 0:
        return f"the program {_status(returncode)} before it completed", errors
    if returncode != 0:
        if returncode == 1 and len(errors) == 1:
            return errors[0], []  # a RunError: its message is meant for people, as Pulumi shows it
        if errors:
            return f"the program failed: {errors[0]}", errors[1:]
        return f"the program {_status(returncode)} before it completed", []
    if not record.shutdown_signalled:
        detail = errors[0] if errors else "it never signalled the end of its run to the engine"
        return f"the program exited with status 0 before it completed: {detail}", errors[1:]
    if record.pending_at_shutdown:
        return (
            f"the program signalled completion with {record.pending_at_shutdown} engine call(s) unanswered",
            errors,
        )
    if not record.stack_outputs_registered:
        return "the program never registered its stack outputs, so its run is not complete", errors
    if record.late_calls:
        return (
            "the program kept calling the engine after it signalled completion "
            f"({', '.join(sorted(set(record.late_calls)))})",
            errors,
        )
    if errors:
        return f"the program logged an error, which fails a Pulumi preview: {errors[0]}", errors[1:]
    return None
