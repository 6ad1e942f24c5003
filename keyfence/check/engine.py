"""The Pulumi engine's side of a program run: the resource monitor the program registers with.

``keyfence check`` starts the program in a child process as the Python language host does
and serves it the engine's ``ResourceMonitor`` and ``Engine`` gRPC services (the stubs ship
in the Pulumi SDK). Every registration then goes through what the engine does to it before
a policy pack sees it (pulumi ``pkg/resource/deploy/source_eval.go``, ``RegisterResource``,
and ``step_generator.go``):

1. transforms, through the program's own Callbacks service: the resource's own, then each
   ancestor's, then the stack's (legacy ``transformations`` already ran in the SDK);
2. the provider: explicit, from the ``providers`` map, from a component parent, else the
   package's default provider, configured from stack config (``kubernetes:namespace`` ...);
3. the URN, with the parent's type chain (the root stack left out);
4. the provider's ``Check`` (:mod:`keyfence.check.kubeprovider`) and, for provider-side components,
   their expansion into children (:mod:`keyfence.check.kubeyaml`).

Whatever the engine would do that is not modelled here (reading live resources, method
calls, functions other than the Kubernetes provider's YAML and Helm ones, remote
components other than ``yaml/v2`` and Helm v4 charts, parameterised packages) is refused:
the call fails in the program and the refusal stays on record, so the check exits 2 even
if the program catches the error. The program's completion is known from the protocol, not
from its exit status: the SDK signals ``SignalAndWaitForShutdown`` only after everything
it registered has been answered and only when the program raised nothing.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import grpc
from google.protobuf import empty_pb2, struct_pb2
from pulumi.runtime.proto import (
    alias_pb2,
    callback_pb2,
    callback_pb2_grpc,
    engine_pb2,
    engine_pb2_grpc,
    resource_pb2,
    resource_pb2_grpc,
)

from . import components, kubeyaml, outputvalues
from .callsite import CallSite, call_site
from .harness import STACK_TYPE, RegisteredResource
from .kubeprovider import (
    KUBERNETES,
    UNKNOWN,
    KubeProviderConfig,
    ProviderRefusal,
    check,
    crd_scope,
    plain,
    python_to_struct,
    split_type,
    struct_to_python,
)
from .langhost import FORWARDED

PROVIDER_PREFIX: Final = "pulumi:providers:"
UNKNOWN_ID: Final = UNKNOWN
"""A provider's ID during a preview of its creation: references read ``<urn>::<unknown>``."""
MAX_LOG_LINES: Final = 2000
MAX_LINE_CHARS: Final = 2000
F = resource_pb2
FEATURES: Final = (
    F.RESOURCE_MONITOR_FEATURE_SECRETS,
    F.RESOURCE_MONITOR_FEATURE_RESOURCE_REFERENCES,
    F.RESOURCE_MONITOR_FEATURE_OUTPUT_VALUES,
    F.RESOURCE_MONITOR_FEATURE_ALIAS_SPECS,
    F.RESOURCE_MONITOR_FEATURE_REPLACEMENT_TRIGGER,
    F.RESOURCE_MONITOR_FEATURE_DELETED_WITH,
    F.RESOURCE_MONITOR_FEATURE_REPLACE_WITH,
    F.RESOURCE_MONITOR_FEATURE_TRANSFORMS,
    F.RESOURCE_MONITOR_FEATURE_INVOKE_TRANSFORMS,
    F.RESOURCE_MONITOR_FEATURE_RESOURCE_HOOKS,
    F.RESOURCE_MONITOR_FEATURE_ERROR_HOOKS,
)
"""What the monitor claims; parameterisation and state migrations are not claimed, so the SDK
refuses them itself."""
LEGACY_FEATURES: Final = {
    "secrets": F.RESOURCE_MONITOR_FEATURE_SECRETS,
    "resourceReferences": F.RESOURCE_MONITOR_FEATURE_RESOURCE_REFERENCES,
    "outputValues": F.RESOURCE_MONITOR_FEATURE_OUTPUT_VALUES,
    "deletedWith": F.RESOURCE_MONITOR_FEATURE_DELETED_WITH,
    "replaceWith": F.RESOURCE_MONITOR_FEATURE_REPLACE_WITH,
    "aliasSpecs": F.RESOURCE_MONITOR_FEATURE_ALIAS_SPECS,
    "transforms": F.RESOURCE_MONITOR_FEATURE_TRANSFORMS,
    "invokeTransforms": F.RESOURCE_MONITOR_FEATURE_INVOKE_TRANSFORMS,
    "resourceHooks": F.RESOURCE_MONITOR_FEATURE_RESOURCE_HOOKS,
    "errorHooks": F.RESOURCE_MONITOR_FEATURE_ERROR_HOOKS,
}


class Refused(Exception):
    """The program asked for something the hermetic check cannot do the way the engine would."""


@dataclass(frozen=True)
class EngineSettings:
    """The deployment the program runs in."""

    project: str
    stack: str
    organization: str
    config: Mapping[str, str]
    """Stack config as ``<namespace>:<key>``; ``kubernetes:*`` configures the default provider."""
    cwd: Path
    """The program's folder: relative manifest paths are read from there, as the provider does."""


@dataclass
class _Goal:
    """One registration on its way through the engine."""

    type: str
    name: str
    parent: str
    custom: bool
    remote: bool
    props: struct_pb2.Struct
    opts: resource_pb2.TransformResourceOptions
    transforms: list[callback_pb2.Callback]
    property_dependencies: dict[str, list[str]]
    site: CallSite | None = None
    """Where the program's code declared it (the request's ``sourcePosition``)."""


@dataclass(frozen=True)
class LogLine:
    severity: str
    message: str
    urn: str = ""


_SEVERITIES: Final = {
    engine_pb2.DEBUG: "debug",
    engine_pb2.INFO: "info",
    engine_pb2.WARNING: "warning",
    engine_pb2.ERROR: "error",
}


@dataclass
class RunRecord:
    """What the engine saw of one program run; the harness decides from it whether it completed."""

    resources: list[RegisteredResource] = field(default_factory=list)
    stack_urn: str = ""
    stack_outputs: dict[str, Any] = field(default_factory=dict)
    stack_outputs_registered: bool = False
    refusals: list[str] = field(default_factory=list)
    logs: list[LogLine] = field(default_factory=list)
    shutdown_signalled: bool = False
    pending_at_shutdown: int = 0
    late_calls: list[str] = field(default_factory=list)

    @property
    def errors(self) -> list[str]:
        return [line.message for line in self.logs if line.severity == "error"]


class Engine(resource_pb2_grpc.ResourceMonitorServicer):
    """The resource monitor of one program run (thread-safe: gRPC calls arrive concurrently)."""

    def __init__(
        self, settings: EngineSettings, on_resource: Callable[[RegisteredResource], None] | None = None
    ) -> None:
        self.settings = settings
        self._on_resource = on_resource
        self.record = RunRecord()
        self._lock = threading.RLock()
        self._in_flight = 0
        self._urns: dict[str, RegisteredResource] = {}
        self._parents: dict[str, str] = {}
        self._transforms: dict[str, list[callback_pb2.Callback]] = {}
        self._component_providers: dict[str, dict[str, str]] = {}
        self._stack_transforms: list[callback_pb2.Callback] = []
        self._invoke_transforms: list[callback_pb2.Callback] = []
        self._provider_configs: dict[str, KubeProviderConfig] = {}
        self._defaults: dict[tuple[str, str], str] = {}
        self._crds: dict[tuple[str, str], str] = {}
        self._channels: dict[str, grpc.Channel] = {}

    # -- bookkeeping

    @contextmanager
    def _call(self, method: str, context: Any) -> Iterator[None]:
        with self._lock:
            if self.record.shutdown_signalled:
                self.record.late_calls.append(method)
            self._in_flight += 1
        try:
            yield
        except Refused as exc:
            self._refuse(str(exc))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except ProviderRefusal as exc:
            self._refuse(str(exc))
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except grpc.RpcError as exc:
            message = f"{method}: a transform in the program failed: {_rpc_details(exc)}"
            self._refuse(message)
            context.abort(grpc.StatusCode.UNKNOWN, message)
        except Exception as exc:
            # Whatever else goes wrong stays on record: a program that catches the error must
            # not turn a registration the check could not handle into a pass.
            message = f"{method}: the check could not handle this call: {type(exc).__name__}: {exc}"
            self._refuse(message)
            context.abort(grpc.StatusCode.INTERNAL, message)
        finally:
            with self._lock:
                self._in_flight -= 1

    def _refuse(self, message: str) -> None:
        with self._lock:
            if message not in self.record.refusals:
                self.record.refusals.append(message)

    def close(self) -> None:
        for channel in self._channels.values():
            channel.close()
        self._channels.clear()

    # -- deployment info and features

    def GetDeploymentInfo(self, request: empty_pb2.Empty, context: Any) -> resource_pb2.DeploymentInfo:
        s = self.settings
        return resource_pb2.DeploymentInfo(
            project=s.project,
            stack=s.stack,
            organization=s.organization,
            config=dict(s.config),
            dryRun=True,
            parallel=0,
            supportedFeatures=list(FEATURES),
        )

    def SupportsFeature(
        self, request: resource_pb2.SupportsFeatureRequest, context: Any
    ) -> resource_pb2.SupportsFeatureResponse:
        return resource_pb2.SupportsFeatureResponse(hasSupport=request.id in LEGACY_FEATURES)

    # -- registrations

    def RegisterResource(
        self, request: resource_pb2.RegisterResourceRequest, context: Any
    ) -> resource_pb2.RegisterResourceResponse:
        with self._call("RegisterResource", context):
            return self._register_request(request)
        raise AssertionError("unreachable")  # pragma: no cover

    def _register_request(
        self, req: resource_pb2.RegisterResourceRequest
    ) -> resource_pb2.RegisterResourceResponse:
        if req.type == STACK_TYPE:
            urn = self.urn("", req.type, req.name)
            with self._lock:
                if self.record.stack_urn:
                    raise Refused("the program registered a second root stack")
                self.record.stack_urn = urn
                self._add(RegisteredResource(req.type, req.name, urn, "", False, struct_pb2.Struct()))
            return resource_pb2.RegisterResourceResponse(urn=urn)
        if req.packageRef:
            raise Refused(
                f"{req.type} {req.name}: parameterised packages are not modelled by the hermetic check"
            )
        aliases = [alias_pb2.Alias(urn=u) for u in req.aliasURNs] + list(req.aliases)
        opts = resource_pb2.TransformResourceOptions(
            depends_on=list(req.dependencies),
            protect=req.protect,
            ignore_changes=list(req.ignoreChanges),
            replace_on_changes=list(req.replaceOnChanges),
            version=req.version,
            aliases=aliases,
            provider=req.provider,
            providers=dict(req.providers),
            custom_timeouts=req.customTimeouts if req.HasField("customTimeouts") else None,
            plugin_download_url=req.pluginDownloadURL,
            retain_on_delete=req.retainOnDelete,
            deleted_with=req.deletedWith,
            additional_secret_outputs=list(req.additionalSecretOutputs),
        )
        if req.deleteBeforeReplaceDefined or req.deleteBeforeReplace:
            opts.delete_before_replace = req.deleteBeforeReplace
        goal = _Goal(
            type=req.type,
            name=req.name,
            parent=req.parent,
            custom=req.custom,
            remote=req.remote,
            props=req.object,
            opts=opts,
            transforms=list(req.transforms),
            property_dependencies={k: list(v.urns) for k, v in req.propertyDependencies.items()},
            site=call_site(req),
        )
        urn, resource_id, outputs = self._register(goal)
        return resource_pb2.RegisterResourceResponse(urn=urn, id=resource_id, object=outputs)

    def _register(self, goal: _Goal) -> tuple[str, str, struct_pb2.Struct]:
        """The engine's RegisterResource for one goal: (URN, ID, the outputs the program gets)."""
        package = goal.type.split(":")[0]
        is_provider = goal.type.startswith(PROVIDER_PREFIX)
        if (goal.custom or goal.remote) and not is_provider:
            goal.opts.provider = self._resolve_provider(
                goal.opts.provider, dict(goal.opts.providers), goal.parent, package
            )
        self._run_transforms(goal)
        if not goal.custom and goal.parent in self._component_providers:
            for key, ref in self._component_providers[goal.parent].items():
                if key not in goal.opts.providers:
                    goal.opts.providers[key] = ref
        provider_ref = ""
        if (goal.custom and not is_provider) or goal.remote:
            provider_ref = goal.opts.provider or self._default_provider(package, goal.opts.version)
        props = goal.props
        if is_provider and goal.opts.version:
            props = _with_field(props, "version", goal.opts.version)
        urn = self.urn(goal.parent, goal.type, goal.name)
        if goal.remote:
            return self._construct(goal, urn, provider_ref)
        if goal.custom and package == KUBERNETES and not is_provider:
            props = self._check(goal, urn, props, provider_ref)
        record = RegisteredResource(
            type=goal.type,
            name=goal.name,
            urn=urn,
            parent=goal.parent,
            custom=goal.custom,
            properties=props,
            dependencies=tuple(goal.opts.depends_on),
            property_dependencies={k: tuple(v) for k, v in goal.property_dependencies.items()},
            provider=provider_ref,
            protect=goal.opts.protect,
            site=goal.site,
        )
        self._add(
            record, transforms=goal.transforms, providers=None if goal.custom else dict(goal.opts.providers)
        )
        if is_provider and goal.type == f"{PROVIDER_PREFIX}{KUBERNETES}":
            config = KubeProviderConfig.from_inputs(struct_to_python(props), urn)
            with self._lock:
                self._provider_configs[urn] = config
        if goal.custom and goal.type == components.RELEASE:
            children = components.release_children(goal.name, props, self.settings.cwd, self._crds_copy())
            self._register_children(children, urn)
        if not goal.custom:
            return urn, "", struct_pb2.Struct()
        return urn, "", props

    def urn(self, parent: str, type_: str, name: str) -> str:
        """``urn:pulumi:<stack>::<project>::<parent types$>type::name`` (resource.NewURN)."""
        parent_type = ""
        if parent and parent != self.record.stack_urn:
            parent_type = parent.split("::")[2]
        qualified = f"{parent_type}${type_}" if parent_type else type_
        return f"urn:pulumi:{self.settings.stack}::{self.settings.project}::{qualified}::{name}"

    def _add(
        self,
        record: RegisteredResource,
        *,
        transforms: Sequence[callback_pb2.Callback] = (),
        providers: dict[str, str] | None = None,
    ) -> None:
        with self._lock:
            if record.urn in self._urns:
                raise Refused(
                    f"duplicate resource URN {record.urn}: the engine refuses a second registration"
                )
            self._urns[record.urn] = record
            self.record.resources.append(record)
            if self._on_resource is not None:
                self._on_resource(record)  # under the lock: a provider always precedes its users
            self._parents[record.urn] = record.parent
            if transforms:
                self._transforms[record.urn] = list(transforms)
            if providers is not None:
                self._component_providers[record.urn] = providers

    # -- providers

    def _resolve_provider(
        self, provider: str, providers: Mapping[str, str], parent: str, package: str
    ) -> str:
        if provider:
            return provider
        if package in providers:
            return providers[package]
        with self._lock:
            return self._component_providers.get(parent, {}).get(package, "")

    def _default_provider(self, package: str, version: str) -> str:
        """The package's default provider, registered the first time a resource needs it."""
        with self._lock:
            ref = self._defaults.get((package, version))
            if ref is not None:
                return ref
            name = "default" + ("_" + "_".join(version.replace("-", ".").split(".")) if version else "")
            inputs: dict[str, Any] = {
                key.split(":", 1)[1]: value
                for key, value in self.settings.config.items()
                if key.split(":", 1)[0] == package and ":" in key
            }
            if version:
                inputs["version"] = version
            type_ = f"{PROVIDER_PREFIX}{package}"
            urn = self.urn(self.record.stack_urn, type_, name)
            props = python_to_struct(inputs)
            self._add(RegisteredResource(type_, name, urn, self.record.stack_urn, True, props))
            if package == KUBERNETES:
                self._provider_configs[urn] = KubeProviderConfig.from_inputs(
                    inputs, f"stack config {package}:*"
                )
            ref = f"{urn}::{UNKNOWN_ID}"
            self._defaults[(package, version)] = ref
            return ref

    def _kube_config(self, provider_ref: str) -> KubeProviderConfig:
        urn = provider_ref.rsplit("::", 1)[0]
        with self._lock:
            config = self._provider_configs.get(urn)
        if config is None:
            raise Refused(f"provider {provider_ref} was never registered, so its options cannot be known")
        return config

    def _check(self, goal: _Goal, urn: str, props: struct_pb2.Struct, provider_ref: str) -> struct_pb2.Struct:
        split = split_type(goal.type)
        if split is not None and split[1].endswith("List") and "items" in props.fields:
            raise Refused(f"{urn}: list resources cannot be created directly (the provider refuses them)")
        config = self._kube_config(provider_ref)
        with self._lock:
            crds = dict(self._crds)
        checked = check(props, type_token_=goal.type, urn=urn, config=config, crds=crds)
        if split is not None and split[1] == "CustomResourceDefinition":
            scope = crd_scope(struct_to_python(checked))
            if scope is not None:
                with self._lock:
                    self._crds.setdefault(*scope)
        return checked

    # -- transforms

    def _run_transforms(self, goal: _Goal) -> None:
        with self._lock:
            chain = list(goal.transforms)
            current = goal.parent
            while current:
                chain += self._transforms.get(current, [])
                current = self._parents.get(current, "")
            chain += self._stack_transforms
        if not chain:
            return
        props = outputvalues.upgrade_outputs(goal.props)
        if goal.transforms:
            props = outputvalues.add_dependencies(props, goal.property_dependencies)
        opts = goal.opts
        for callback in chain:
            request = resource_pb2.TransformRequest(
                type=goal.type, name=goal.name, custom=goal.custom, properties=props, options=opts
            )
            raw = self._invoke_callback(callback, request.SerializeToString())
            response = resource_pb2.TransformResponse.FromString(raw)
            if response.HasField("properties"):
                props = response.properties
            if response.HasField("options"):
                opts = response.options
        if goal.transforms:
            goal.property_dependencies = {
                k: sorted(outputvalues.output_dependencies(v)) for k, v in props.fields.items()
            }
            dependencies = set(opts.depends_on)
            for urns in goal.property_dependencies.values():
                dependencies.update(urns)
            del opts.depends_on[:]
            opts.depends_on.extend(sorted(dependencies))
        goal.props = props if goal.remote else outputvalues.downgrade_outputs(props)
        goal.opts = opts

    def _invoke_callback(self, callback: callback_pb2.Callback, request: bytes) -> bytes:
        with self._lock:
            channel = self._channels.get(callback.target)
            if channel is None:
                if not callback.target.startswith("127.0.0.1:"):
                    raise Refused(f"a transform callback at {callback.target!r} is not on this machine")
                channel = grpc.insecure_channel(callback.target)
                self._channels[callback.target] = channel
        stub = callback_pb2_grpc.CallbacksStub(channel)
        response = stub.Invoke(callback_pb2.CallbackInvokeRequest(token=callback.token, request=request))
        return bytes(response.response)

    def RegisterStackTransform(self, request: callback_pb2.Callback, context: Any) -> empty_pb2.Empty:
        with self._call("RegisterStackTransform", context):
            if not request.target:
                raise Refused("a stack transform without a callback target")
            with self._lock:
                self._stack_transforms.append(request)
        return empty_pb2.Empty()

    def RegisterStackInvokeTransform(self, request: callback_pb2.Callback, context: Any) -> empty_pb2.Empty:
        with self._call("RegisterStackInvokeTransform", context):
            if not request.target:
                raise Refused("an invoke transform without a callback target")
            with self._lock:
                self._invoke_transforms.append(request)
        return empty_pb2.Empty()

    def RegisterResourceHook(self, request: Any, context: Any) -> empty_pb2.Empty:
        # Hooks run around real operations; during a preview they cannot change any input.
        with self._call("RegisterResourceHook", context):
            return empty_pb2.Empty()
        raise AssertionError("unreachable")  # pragma: no cover

    def RegisterErrorHook(self, request: Any, context: Any) -> empty_pb2.Empty:
        with self._call("RegisterErrorHook", context):
            return empty_pb2.Empty()
        raise AssertionError("unreachable")  # pragma: no cover

    # -- outputs and completion

    def RegisterResourceOutputs(
        self, request: resource_pb2.RegisterResourceOutputsRequest, context: Any
    ) -> empty_pb2.Empty:
        with self._call("RegisterResourceOutputs", context):
            if request.urn and request.urn == self.record.stack_urn:
                # Plain values, secrets still wrapped; a resource exported as an output stays a
                # reference (reviving it would need the SDK's event loop, and nothing reads it).
                outputs = struct_to_python(request.outputs)
                with self._lock:
                    self.record.stack_outputs = dict(outputs) if isinstance(outputs, dict) else {}
                    self.record.stack_outputs_registered = True
        return empty_pb2.Empty()

    def SignalAndWaitForShutdown(self, request: empty_pb2.Empty, context: Any) -> empty_pb2.Empty:
        with self._lock:
            if self.record.shutdown_signalled:
                self.record.late_calls.append("SignalAndWaitForShutdown")
            self.record.shutdown_signalled = True
            self.record.pending_at_shutdown = self._in_flight
        return empty_pb2.Empty()

    # -- functions

    def Invoke(
        self, request: resource_pb2.ResourceInvokeRequest, context: Any
    ) -> resource_pb2.ResourceInvokeResponse:
        with self._call(f"Invoke({request.tok})", context):
            token, args = self._transform_invoke(request)
            result = self._function(token, args)
            response = resource_pb2.ResourceInvokeResponse()
            getattr(response, "return").CopyFrom(python_to_struct(result))
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def _transform_invoke(self, request: resource_pb2.ResourceInvokeRequest) -> tuple[str, dict[str, Any]]:
        args = request.args
        with self._lock:
            transforms = list(self._invoke_transforms)
        options = resource_pb2.TransformInvokeOptions(
            provider=request.provider, version=request.version, plugin_download_url=request.pluginDownloadURL
        )
        for callback in transforms:
            raw = self._invoke_callback(
                callback,
                resource_pb2.TransformInvokeRequest(
                    token=request.tok, args=args, options=options
                ).SerializeToString(),
            )
            response = resource_pb2.TransformInvokeResponse.FromString(raw)
            if response.HasField("args"):
                args = response.args
            if response.HasField("options"):
                options = response.options
        return request.tok, struct_to_python(args)

    def _function(self, token: str, args: dict[str, Any]) -> dict[str, Any]:
        if token == "pulumi:pulumi:getResource":
            urn = plain(args.get("urn"), "getResource urn")
            with self._lock:
                found = self._urns.get(urn) if isinstance(urn, str) else None
            if found is None:
                raise Refused(f"pulumi:pulumi:getResource: unknown resource {urn!r}")
            return {"urn": found.urn, "id": "", "state": struct_to_python(found.properties)}
        return components.function(token, args, self.settings.cwd, self._crds_copy())

    def _crds_copy(self) -> dict[tuple[str, str], str]:
        with self._lock:
            return dict(self._crds)

    # -- provider-side components

    def _construct(self, goal: _Goal, urn: str, provider_ref: str) -> tuple[str, str, struct_pb2.Struct]:
        """A remote component as its provider's Construct builds it: the component, then its children."""
        components.require_constructible(goal.type, goal.name)
        args = components.Args(goal.props, f"{goal.type} {goal.name}")
        config = self._kube_config(provider_ref)
        component = _Goal(
            type=goal.type,
            name=goal.name,
            parent=goal.parent,
            custom=False,
            remote=False,
            props=struct_pb2.Struct(),
            opts=goal.opts,
            transforms=goal.transforms,
            property_dependencies={},
        )
        component_urn, _, _ = self._register(component)
        children = components.construct(
            goal.type, goal.name, args, config, self.settings.cwd, self._crds_copy()
        )
        urns = self._register_children(children, component_urn)
        return component_urn, "", python_to_struct(components.resource_refs(urns))

    def _register_children(self, children: Sequence[kubeyaml.Child], parent: str) -> list[str]:
        urns: list[str] = []
        for child in children:
            opts = resource_pb2.TransformResourceOptions(depends_on=[urns[i] for i in child.depends_on])
            goal = _Goal(
                type=child.type,
                name=child.name,
                parent=parent,
                custom=True,
                remote=False,
                props=python_to_struct(child.inputs),
                opts=opts,
                transforms=[],
                property_dependencies={},
            )
            urn, _, _ = self._register(goal)
            urns.append(urn)
        return urns

    # -- what the check cannot do

    def ReadResource(self, request: resource_pb2.ReadResourceRequest, context: Any) -> Any:
        with self._call("ReadResource", context):
            raise Refused(
                f"{request.type} {request.name}: the program reads an existing resource (a .get() or a "
                "StackReference), which needs the live stack; the hermetic check cannot do that, "
                f"so {kubeyaml.PREVIEW_ADVICE}"
            )

    def Call(self, request: Any, context: Any) -> Any:
        with self._call("Call", context):
            raise Refused(f"the program calls the method {request.tok}, which only its provider can answer")

    def RegisterPackage(self, request: Any, context: Any) -> Any:
        with self._call("RegisterPackage", context):
            raise Refused(
                f"package {request.name}: parameterised packages are not modelled by the hermetic check"
            )


def _relog(forwarded: str) -> None:
    """A keyfence log record from the program's process, logged here under its own logger.

    Only ``keyfence.*`` loggers and levels up to WARNING: the program cannot use this to log
    anything that would change the outcome, only what keyfence itself would have shown.
    """
    name, _, rest = forwarded.partition("\t")
    level, _, encoded = rest.partition("\t")
    if not (name == "keyfence" or name.startswith("keyfence.")) or not level.isdigit():
        return
    try:
        fields = json.loads(encoded)
        msg, args = str(fields["msg"]), tuple(fields["args"])
        msg % args  # a record that would not format is logged as plain text
    except (ValueError, TypeError, KeyError):
        msg, args = "%s", (encoded[:MAX_LINE_CHARS],)
    # The record keeps its format arguments, as it had them in the program's process.
    logging.getLogger(name).log(min(int(level), logging.WARNING), msg, *args)


def _rpc_details(exc: grpc.RpcError) -> str:
    details = exc.details() if hasattr(exc, "details") else str(exc)
    return " ".join(str(details).split())[:500]


def _with_field(props: struct_pb2.Struct, key: str, value: str) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.CopyFrom(props)
    out.fields[key].string_value = value
    return out


# --------------------------------------------------------------------------- the Engine service


class EngineLog(engine_pb2_grpc.EngineServicer):
    """The Engine service a program logs to (``pulumi.log``), and its root resource."""

    def __init__(self, record: RunRecord) -> None:
        self._record = record
        self._lock = threading.Lock()
        self._root = ""

    def Log(self, request: engine_pb2.LogRequest, context: Any) -> empty_pb2.Empty:
        if request.message.startswith(FORWARDED):
            _relog(request.message[len(FORWARDED) :])
            return empty_pb2.Empty()
        line = LogLine(
            _SEVERITIES.get(request.severity, "info"), request.message[:MAX_LINE_CHARS], request.urn
        )
        with self._lock:
            if len(self._record.logs) < MAX_LOG_LINES or line.severity == "error":
                self._record.logs.append(line)
        return empty_pb2.Empty()

    def GetRootResource(self, request: Any, context: Any) -> engine_pb2.GetRootResourceResponse:
        return engine_pb2.GetRootResourceResponse(urn=self._root)

    def SetRootResource(self, request: Any, context: Any) -> engine_pb2.SetRootResourceResponse:
        self._root = request.urn
        return engine_pb2.SetRootResourceResponse()

    def RequirePulumiVersion(self, request: Any, context: Any) -> engine_pb2.RequirePulumiVersionResponse:
        return engine_pb2.RequirePulumiVersionResponse()
