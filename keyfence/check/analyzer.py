"""Run any Python policy pack the way the Pulumi CLI does, and collect its verdicts.

``keyfence check`` must report exactly what ``pulumi preview --policy-pack`` would, without
the Pulumi CLI, a backend or a cluster. So the pack runs as its own process, started as the
CLI starts it (``python -u -m pulumi.policy <engine> <pack>``), and is spoken to over the real
analyzer gRPC protocol: GetAnalyzerInfo, Configure (with the config reconciled as the CLI
reconciles it), ConfigureStack, one Analyze per resource, then AnalyzeStack. Nothing in the
pack is imported into this process, so any pack works, and a pack that hangs or crashes cannot
take keyfence down with it.
"""

from __future__ import annotations

import os
import queue
import subprocess
import threading
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from concurrent import futures
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Literal, cast

import grpc
from google.protobuf import empty_pb2, json_format
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc, engine_pb2, engine_pb2_grpc

from ..errors import PolicyPackError
from .harness import RegisteredResource
from .packconfig import ConfigEntry, ConfigLayer, read_pack_project, reconcile_config, venv_python
from .packrequests import StackRequest, analyze_request, provider_of
from .verdict import LEVELS, Analysis, Level, LogLine, PolicyConfig, PolicyMeta, ReportedLevel, Violation

_TO_PROTO: Final[dict[Level, int]] = {
    "advisory": analyzer_pb2.ADVISORY,
    "mandatory": analyzer_pb2.MANDATORY,
    "remediate": analyzer_pb2.REMEDIATE,
    "disabled": analyzer_pb2.DISABLED,
}
_FROM_PROTO: Final[dict[int, Level]] = {v: k for k, v in _TO_PROTO.items()}

MAX_MESSAGE_BYTES: Final = 400 * 1024 * 1024
"""The Pulumi SDKs raise gRPC's 4 MiB limit to 400 MiB; a big stack needs the same headroom."""
GRPC_OPTIONS: Final = [
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
]
ANALYZE_WINDOW: Final = 16
"""Analyze calls in flight at once (the pack's gRPC server runs four handlers)."""
STDERR_TAIL_LINES: Final = 40
MAX_LOG_LINES: Final = 1000
MAX_LINE_CHARS: Final = 500
SCRUBBED_ENV_PREFIXES: Final = ("VAULT_", "BAO_", "KEYFENCE_VAULT_")
"""A policy pack judges declarations; it never needs a Vault credential, so it never gets one."""


# --------------------------------------------------------------------------- engine service


_SEVERITIES: Final = {
    engine_pb2.DEBUG: "debug",
    engine_pb2.INFO: "info",
    engine_pb2.WARNING: "warning",
    engine_pb2.ERROR: "error",
}


class _Engine(engine_pb2_grpc.EngineServicer):
    """The part of the Pulumi engine a pack may call back into: logging and the root resource."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.logs: list[LogLine] = []
        self.root_urn = ""

    def Log(self, request: engine_pb2.LogRequest, context: Any) -> empty_pb2.Empty:
        severity = _SEVERITIES.get(request.severity, "info")
        with self._lock:
            if len(self.logs) < MAX_LOG_LINES:
                self.logs.append(LogLine("engine", severity, request.message[:MAX_LINE_CHARS], request.urn))
        return empty_pb2.Empty()

    def GetRootResource(
        self, request: engine_pb2.GetRootResourceRequest, context: Any
    ) -> engine_pb2.GetRootResourceResponse:
        return engine_pb2.GetRootResourceResponse(urn=self.root_urn)

    def SetRootResource(
        self, request: engine_pb2.SetRootResourceRequest, context: Any
    ) -> engine_pb2.SetRootResourceResponse:
        self.root_urn = request.urn
        return engine_pb2.SetRootResourceResponse()


# --------------------------------------------------------------------------- the pack process


class _Output:
    """Drains one pipe of the pack on a thread, so the pack can never block on a full pipe."""

    def __init__(
        self, stream: Any, *, keep: int | None, lines: queue.Queue[str | None] | None = None
    ) -> None:
        self.tail: deque[str] = deque(maxlen=keep)
        self._lines = lines
        self._thread = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._thread.start()

    def _pump(self, stream: Any) -> None:
        try:
            for raw in iter(stream.readline, b""):
                line = raw.decode("utf-8", "replace").rstrip("\r\n")
                if self._lines is not None:
                    self._lines.put(line)
                else:
                    self.tail.append(line[:MAX_LINE_CHARS])
        finally:
            if self._lines is not None:
                self._lines.put(None)
            stream.close()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)


class PolicyPackSession:
    """A running policy pack: started on ``__enter__``, always stopped on ``__exit__``."""

    def __init__(
        self,
        pack_dir: str | Path,
        *,
        project: str,
        stack: str,
        organization: str = "organization",
        startup_timeout: float = 60.0,
        call_timeout: float = 300.0,
    ) -> None:
        self.project_file = read_pack_project(pack_dir)
        self.project = project
        self.stack = stack
        self.organization = organization
        self.startup_timeout = startup_timeout
        self.call_timeout = call_timeout
        self.process: subprocess.Popen[bytes] | None = None
        self._engine = _Engine()
        self._engine_server: Any = None
        self._executor: futures.ThreadPoolExecutor | None = None
        self._channel: Any = None
        self._stub: analyzer_pb2_grpc.AnalyzerStub | None = None
        self._analyze_stack_bytes: Any = None
        self._stack_request = StackRequest()
        self._stdout_lines: queue.Queue[str | None] = queue.Queue()
        self._stdout: _Output | None = None
        self._stderr: _Output | None = None
        self.stdout_log: deque[str] = deque(maxlen=MAX_LOG_LINES)
        self._stdout_collector: threading.Thread | None = None

    @property
    def name(self) -> str:
        return self.project_file.directory.name

    # -- lifecycle

    def __enter__(self) -> PolicyPackSession:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def spawn_and_close_on_error(self) -> None:
        """``spawn``, stopping whatever started if it fails."""
        try:
            self.spawn()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        self.spawn()
        self.connect()

    def spawn(self) -> None:
        """Start the engine service and the pack process; return without waiting for the pack.

        The pack's interpreter start and imports take most of a second: a caller that has other
        work (running the program) does it between ``spawn`` and ``connect``. Call ``close``
        whatever happens.
        """
        self._executor = futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="keyfence-engine")
        server = grpc.server(self._executor, options=GRPC_OPTIONS)
        engine_pb2_grpc.add_EngineServicer_to_server(self._engine, server)
        engine_port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._engine_server = server
        engine_address = f"127.0.0.1:{engine_port}"

        pack = self.project_file
        args = [pack.python, "-u", "-m", "pulumi.policy", engine_address, str(pack.directory)]
        try:
            self.process = subprocess.Popen(
                args,
                cwd=pack.directory,
                env=self._environment(),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                start_new_session=True,
            )
        except OSError as exc:
            raise PolicyPackError(
                f"policy pack {self.name!r} could not be started with {pack.python}: {exc}"
            ) from None
        self._stderr = _Output(self.process.stderr, keep=STDERR_TAIL_LINES)
        self._stdout = _Output(self.process.stdout, keep=None, lines=self._stdout_lines)

    def connect(self) -> None:
        """Wait for the spawned pack to print its port, and connect to it."""
        port = self._read_port()
        self._channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=GRPC_OPTIONS)
        try:
            grpc.channel_ready_future(self._channel).result(timeout=self.startup_timeout)
        except grpc.FutureTimeoutError:
            raise self._failure(f"printed port {port} but does not answer on it") from None
        self._stub = analyzer_pb2_grpc.AnalyzerStub(self._channel)
        # AnalyzeStack as the stub's, but sending a request already serialized (packrequests.StackRequest).
        self._analyze_stack_bytes = self._channel.unary_unary(
            "/pulumirpc.Analyzer/AnalyzeStack",
            request_serializer=None,
            response_deserializer=analyzer_pb2.AnalyzeResponse.FromString,
        )

    def _environment(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUBBED_ENV_PREFIXES)}
        env.update(
            PULUMI_CONFIG="{}",
            PULUMI_PROJECT=self.project,
            PULUMI_STACK=self.stack,
            PULUMI_DRY_RUN="true",
            PULUMI_ORGANIZATION=self.organization,
        )
        venv = self.project_file.virtualenv
        if venv is not None:
            env["VIRTUAL_ENV"] = str(venv)
            env["PATH"] = os.pathsep.join([str(venv_python(venv).parent), env.get("PATH", "")])
            env.pop("PYTHONHOME", None)
        return env

    def _read_port(self) -> int:
        try:
            first = self._stdout_lines.get(timeout=self.startup_timeout)
        except queue.Empty:
            raise self._failure(f"did not print its port within {self.startup_timeout:g} s") from None
        if first is None:
            raise self._failure("exited before it started serving")
        try:
            port = int(first.strip())
        except ValueError:
            raise self._failure(
                f"wrote {first[:80]!r} to stdout where the Pulumi CLI expects its port number "
                "(a pack must not print to stdout before PolicyPack(...) starts)"
            ) from None
        self._stdout_collector = threading.Thread(target=self._collect_stdout, daemon=True)
        self._stdout_collector.start()
        return port

    def _collect_stdout(self) -> None:
        while (line := self._stdout_lines.get()) is not None:
            self.stdout_log.append(line[:MAX_LINE_CHARS])

    def close(self) -> None:
        """Stop the pack (terminate, wait, kill) and the engine service; safe to call twice."""
        if self._channel is not None:
            self._channel.close()
            self._channel = None
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for output in (self._stdout, self._stderr):
            if output is not None:
                output.join(timeout=5)
        if self._stdout_collector is not None:
            self._stdout_collector.join(timeout=5)
        if self._engine_server is not None:
            self._engine_server.stop(grace=None)
            self._engine_server = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None

    # -- failures

    def stderr_tail(self) -> list[str]:
        return list(self._stderr.tail) if self._stderr is not None else []

    def _failure(self, what: str) -> PolicyPackError:
        """Stop the pack, then describe the failure with the end of what it wrote to stderr."""
        self.close()
        process = self.process
        status = ""
        if process is not None and process.returncode is not None and process.returncode > 0:
            status = f" (exit status {process.returncode})"
        tail = [line for line in self.stderr_tail() if line.strip()]
        detail = (
            ["the pack's stderr ends with:", *[f"    {line}" for line in tail]]
            if tail
            else ["the pack wrote nothing to stderr"]
        )
        return PolicyPackError(f"policy pack {self.name!r} {what}{status}", problems=detail)

    @contextmanager
    def _call(self, method: str) -> Iterator[None]:
        try:
            yield
        except grpc.RpcError as exc:
            raise self._rpc_failure(method, exc) from None

    def _rpc_failure(self, method: str, exc: grpc.RpcError) -> PolicyPackError:
        code = exc.code() if hasattr(exc, "code") else None
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return self._failure(f"failed in {method}: {code.name if code is not None else 'error'}: {details}")

    @property
    def stub(self) -> analyzer_pb2_grpc.AnalyzerStub:
        if self._stub is None:
            raise PolicyPackError("the policy pack is not running")
        return self._stub

    # -- protocol

    def get_info(self) -> tuple[analyzer_pb2.AnalyzerInfo, list[PolicyMeta], ConfigLayer]:
        """GetAnalyzerInfo, converted the way the CLI converts it (policies sorted by name)."""
        with self._call("GetAnalyzerInfo"):
            info = self.stub.GetAnalyzerInfo(empty_pb2.Empty(), timeout=self.call_timeout)
        policies: list[PolicyMeta] = []
        for p in info.policies:
            schema: dict[str, Any] | None = None
            if info.supportsConfig:
                properties = json_format.MessageToDict(p.configSchema.properties)
                # The CLI lets every policy's config carry an enforcementLevel.
                properties["enforcementLevel"] = {"type": "string", "enum": list(LEVELS)}
                schema = {"properties": properties}
                if p.configSchema.required:
                    schema["required"] = list(p.configSchema.required)
            policies.append(
                PolicyMeta(p.name, p.description, self._level(p.enforcementLevel), _kind(p), schema)
            )
        policies.sort(key=lambda m: m.name)
        # As in the CLI, an initialConfig entry always carries a level: proto3 cannot tell an unset
        # level from ADVISORY, so a properties-only entry resets its policy to advisory.
        initial = {
            k: ConfigEntry(self._level(v.enforcementLevel), json_format.MessageToDict(v.properties))
            for k, v in info.initialConfig.items()
        }
        return info, policies, initial

    def _level(self, value: int) -> Level:
        level = _FROM_PROTO.get(value)
        if level is None:
            raise self._failure(f"answered with an unknown enforcement level {value}")
        return level

    def configure(self, config: Mapping[str, PolicyConfig]) -> None:
        request = analyzer_pb2.ConfigureAnalyzerRequest()
        for name, entry in config.items():
            value = request.policyConfig[name]
            value.enforcementLevel = cast(Any, _TO_PROTO[entry.level])
            value.properties.update(entry.properties)
        with self._call("Configure"):
            self.stub.Configure(request, timeout=self.call_timeout)
        stack_request = analyzer_pb2.AnalyzerStackConfigureRequest(
            stack=self.stack, project=self.project, organization=self.organization, dry_run=True
        )
        try:
            self.stub.ConfigureStack(stack_request, timeout=self.call_timeout)
        except grpc.RpcError as exc:
            # Packs built with an SDK older than ConfigureStack answer UNIMPLEMENTED; the CLI carries on.
            if not (hasattr(exc, "code") and exc.code() == grpc.StatusCode.UNIMPLEMENTED):
                raise self._rpc_failure("ConfigureStack", exc) from None

    def analyze(self, resources: Iterable[RegisteredResource], pack_name: str) -> list[Violation]:
        """Analyze each resource's inputs, then the whole stack; diagnostics from both, in order.

        Up to ``ANALYZE_WINDOW`` Analyze calls are in flight at once, as the engine also sends
        them concurrently: the pack works on one while the next crosses the wire, instead of
        each side waiting for the other. Answers are still read, and reported, in stack order.
        ``resources`` may be a stream that yields registrations while the program still runs,
        as the engine analyses them; the stack is analysed once the stream ends.
        """
        seen = list(resources)
        return [
            *self.analyze_resources(seen, pack_name),
            *self.analyze_stack(seen, pack_name),
        ]

    def analyze_resources(self, resources: Iterable[RegisteredResource], pack_name: str) -> list[Violation]:
        """One Analyze call per resource: the CLI makes them whether or not the pack has resource policies."""
        violations: list[Violation] = []
        in_flight: deque[tuple[RegisteredResource, Any]] = deque()
        seen: list[RegisteredResource] = []
        by_urn: dict[str, RegisteredResource] = {}

        def settle_oldest() -> None:
            resource, call = in_flight.popleft()
            with self._call(f"Analyze({resource.urn})"):
                response = call.result()
            violations.extend(self._violations(response.diagnostics, pack_name, default_urn=resource.urn))

        for resource in resources:
            seen.append(resource)
            by_urn[resource.urn] = resource
            provider = provider_of(resource, by_urn)
            request = analyze_request(resource, provider)
            # Its AnalyzeStack entry too, while the program still registers (packrequests.py).
            self._stack_request.add(resource, provider)
            with self._call(f"Analyze({resource.urn})"):
                in_flight.append((resource, self.stub.Analyze.future(request, timeout=self.call_timeout)))
            if len(in_flight) >= ANALYZE_WINDOW:
                settle_oldest()
        while in_flight:
            settle_oldest()
        return violations

    def analyze_stack(self, resources: Sequence[RegisteredResource], pack_name: str) -> list[Violation]:
        """One AnalyzeStack call with every resource (entries already built by Analyze are reused)."""
        request = self._stack_request.serialize(resources)
        if self._analyze_stack_bytes is None:
            raise PolicyPackError("the policy pack is not running")
        with self._call("AnalyzeStack"):
            response = self._analyze_stack_bytes(request, timeout=self.call_timeout)
        return self._violations(response.diagnostics, pack_name, default_urn="")

    def _violations(
        self, diagnostics: Iterable[analyzer_pb2.AnalyzeDiagnostic], pack_name: str, *, default_urn: str
    ) -> list[Violation]:
        out = []
        for d in diagnostics:
            level = self._level(d.enforcementLevel)
            if level == "disabled":
                continue
            reported: ReportedLevel = "advisory" if level == "advisory" else "mandatory"
            out.append(
                Violation(
                    policy=d.policyName,
                    level=reported,
                    urn=d.urn or default_urn,
                    message=d.message,
                    pack=d.policyPackName or pack_name,
                    description=d.description,
                )
            )
        return out

    @property
    def logs(self) -> list[LogLine]:
        """What the pack logged; complete once the session is closed."""
        return [*self._engine.logs, *(LogLine("stdout", "info", line) for line in self.stdout_log)]


def _kind(policy: analyzer_pb2.PolicyInfo) -> Literal["resource", "stack", "unspecified"]:
    if policy.policy_type == analyzer_pb2.POLICY_TYPE_RESOURCE:
        return "resource"
    if policy.policy_type == analyzer_pb2.POLICY_TYPE_STACK:
        return "stack"
    return "unspecified"


# --------------------------------------------------------------------------- one-call entry point


def run_policy_pack(
    pack_dir: str | Path,
    resources: Iterable[RegisteredResource],
    *,
    project: str,
    stack: str,
    config: ConfigLayer | None = None,
    base_config: ConfigLayer | None = None,
    config_source: str = "policy pack config",
    startup_timeout: float = 60.0,
    call_timeout: float = 300.0,
) -> Analysis:
    """Start the pack, configure it, analyze ``resources`` and stop it again.

    ``config`` is the user's ``--policy-pack-config`` (naming an unknown policy is an error);
    ``base_config`` sits under it and quietly skips policies this pack does not have, so
    keyfence's own settings (e.g. offline mode) work with any pack.
    """
    session = PolicyPackSession(
        pack_dir, project=project, stack=stack, startup_timeout=startup_timeout, call_timeout=call_timeout
    )
    session.spawn_and_close_on_error()
    return analyze_in(
        session, resources, config=config, base_config=base_config, config_source=config_source
    )


def analyze_in(
    session: PolicyPackSession,
    resources: Iterable[RegisteredResource],
    *,
    config: ConfigLayer | None = None,
    base_config: ConfigLayer | None = None,
    config_source: str = "policy pack config",
) -> Analysis:
    """Connect to a spawned pack, configure it, analyze ``resources``; the session is closed after."""
    try:
        configured = configure_session(
            session, config=config, base_config=base_config, config_source=config_source
        )
        violations = session.analyze(resources, configured.pack_name)
    finally:
        session.close()
    return configured.analysis(session, violations)


@dataclass(frozen=True)
class Configured:
    """A connected pack, configured as the CLI configures it: what an Analysis is built from."""

    pack_name: str
    version: str
    policies: list[PolicyMeta]
    effective: dict[str, PolicyConfig]

    def analysis(self, session: PolicyPackSession, violations: list[Violation]) -> Analysis:
        """The run's result; call after ``session.close()``, when every line the pack wrote is in."""
        return Analysis(self.pack_name, self.version, self.policies, self.effective, violations, session.logs)


def configure_session(
    session: PolicyPackSession,
    *,
    config: ConfigLayer | None = None,
    base_config: ConfigLayer | None = None,
    config_source: str = "policy pack config",
) -> Configured:
    """Connect to a spawned pack, read its policies and send it the reconciled config.

    ``config`` is the user's (naming an unknown policy is an error); ``base_config`` sits under
    it and quietly skips policies this pack does not have. Raises PolicyPackError or KeyfenceError.
    """
    session.connect()
    info, policies, initial = session.get_info()
    effective = reconcile_config(
        policies, initial, [(base_config or {}, False), (config or {}, True)], source=config_source
    )
    session.configure(effective)
    version = session.project_file.version or info.version
    return Configured(info.name or session.name, version, policies, effective)
