"""The one place the pack reaches into ``pulumi_policy``'s internals: parse the stack once.

``pulumi_policy``'s ``AnalyzeStack`` turns every resource of the request into a
``PolicyResource`` (``MessageToDict``, ``deserialize_properties``, ``unknown_checking_proxy``)
once per stack policy, and keyfence's six stack policies each then index the same stack:
six parses and six indexes of thousands of resources. For the ``pulumi_policy`` versions
listed in :data:`SUPPORTED_VERSIONS`, :func:`install` swaps in a servicer that parses the
request once, hands every policy the same :class:`SharedResources` list, and lets them share
what they derive from it (:func:`derived`). Its ``Analyze`` answers at once when the pack has
no resource policy (the Pulumi CLI calls it for every resource all the same, so the call stays),
after parsing the resource's properties: AnalyzeStack, which the engine sends once the program
completed, then reuses every parse whose properties arrive byte for byte unchanged, so most of
the parsing happens while the program still runs. Properties are handed over as plain dicts and
lists with the SDK's unknown sentinels in place (keyfence's rules read the raw values behind the
SDK's unknown-checking proxies and classify unknowns themselves), and each distinct provider
resource is parsed once instead of once per resource. What the pack can derive from one
resource's properties alone is derived at Analyze time too (the ``prepare`` hook of
:func:`install`, e.g. the scan's list of searchable strings) and handed to the policies with
the parse it came from (:func:`prepared`). The SDK's resource options are built only if a
policy reads them (keyfence's do not).

On any other ``pulumi_policy`` version (or with ``KEYFENCE_POLICY_PUBLIC_PATH=1``) nothing is
swapped and the SDK's public path runs unchanged; a test runs the real pack both ways and
compares the verdicts. Policies must treat the shared resources and what they derive from
them as read-only, as they already must treat ``args.resources``.
"""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Iterable
from importlib import metadata
from inspect import isawaitable
from typing import Any, Final, TypeVar

from pulumi_policy import policy as sdk

T = TypeVar("T")
_internal: Any = sdk
"""``pulumi_policy.policy`` for the names it uses but does not export (read only behind the guard)."""

SUPPORTED_VERSIONS: Final = frozenset({"1.21.0"})
"""``pulumi_policy`` versions whose servicer internals this module was checked against."""
PUBLIC_PATH_ENV: Final = "KEYFENCE_POLICY_PUBLIC_PATH"
"""Set to ``1`` to keep the SDK's public path on a supported version too (tests compare both)."""


Prepare = Callable[[Any], object]
"""What the pack derives from one resource's plain properties alone, ahead of AnalyzeStack."""


class SharedResources(list[sdk.PolicyResource]):
    """The stack's resources, parsed once for all stack policies, with what they derive from them."""

    def __init__(
        self, items: Iterable[sdk.PolicyResource], prepared: dict[int, tuple[object, object]] | None = None
    ) -> None:
        super().__init__(items)
        self._derived: list[tuple[object, object]] = []
        self._prepared = prepared or {}

    def prepared_for(self, props: object) -> object | None:
        """What ``prepare`` made of exactly this properties object at Analyze time, if anything."""
        found = self._prepared.get(id(props))
        return found[1] if found is not None and found[0] is props else None

    def derive(self, key: object, build: Callable[[], T]) -> T:
        """``build()`` once per equal ``key``; later policies get the same object back.

        Keys are compared with ``==`` (configs need not be hashable); a failed build is not
        kept, so every policy that asks sees the failure itself.
        """
        for known, value in self._derived:
            if known == key:
                return value  # type: ignore[return-value]
        value = build()
        self._derived.append((key, value))
        return value


def derived(resources: object, key: object, build: Callable[[], T]) -> T:
    """What ``build`` derives from ``resources``: shared when they are :class:`SharedResources`."""
    if isinstance(resources, SharedResources):
        return resources.derive(key, build)
    return build()


def prepared(resources: object, props: object) -> object | None:
    """What the ``prepare`` hook made of ``props`` ahead of time; None when nothing was prepared.

    Only an object that still is the very properties object parsed at Analyze time qualifies, so
    a caller that replaced or rebuilt the properties (a merged patch, a list item) gets None.
    """
    if isinstance(resources, SharedResources):
        return resources.prepared_for(props)
    return None


def sdk_version() -> str | None:
    """The installed ``pulumi_policy`` distribution's version."""
    try:
        return metadata.version("pulumi_policy")
    except metadata.PackageNotFoundError:
        return None


def supported() -> bool:
    """Whether the shared-parse servicer can be used with the installed ``pulumi_policy``."""
    return (
        sdk_version() in SUPPORTED_VERSIONS
        and hasattr(sdk, "_PolicyAnalyzerServicer")
        and os.environ.get(PUBLIC_PATH_ENV, "") != "1"
    )


def install(prepare: Prepare | None = None) -> bool:
    """Serve the pack with the shared-parse servicer when :func:`supported`; returns whether it did.

    ``PolicyPack(...)`` looks the servicer class up in ``pulumi_policy.policy`` when it is
    constructed, so this must run before it. Nothing internal is touched otherwise.
    ``prepare`` runs on each resource's parsed properties at Analyze time (see :func:`prepared`);
    it must not modify them and must depend on nothing else.
    """
    if not supported():
        return False
    _internal._PolicyAnalyzerServicer = _servicer_class(sdk._PolicyAnalyzerServicer, prepare)
    return True


def _parse(properties: Any) -> Any:
    """A ``properties`` Struct as plain dicts and lists, the SDK's unknown sentinels left in place.

    The SDK wraps every level in an unknown-checking proxy; keyfence's rules read the raw values
    behind those proxies anyway and classify the sentinels themselves (``props.Node``), so the
    proxies would only be built to be opened again.
    """
    return _internal.deserialize_properties(_internal.json_format.MessageToDict(properties))


class _Parsed:
    """One resource's properties as an Analyze call brought them: the exact bytes and the parse.

    AnalyzeStack reuses the parse only for properties byte for byte equal (deterministic
    serialisation), so a resource whose inputs differ between the two calls is parsed again.
    """

    __slots__ = ("_wire", "prepared", "value")

    def __init__(self, wire: bytes, value: Any, prepared: object) -> None:
        self._wire = wire
        self.value = value
        self.prepared = prepared

    @classmethod
    def of(cls, properties: Any, prepare: Prepare | None) -> _Parsed:
        value = _parse(properties)
        made = prepare(value) if prepare is not None else None
        return cls(properties.SerializeToString(deterministic=True), value, made)

    def describes(self, properties: Any) -> bool:
        return bool(self._wire == properties.SerializeToString(deterministic=True))


class _StackResource(sdk.PolicyResource):
    """A ``PolicyResource`` whose ``opts`` are built from the request on first read."""

    def __init__(self, options: Callable[[], Any], *args: Any) -> None:
        self._options: Callable[[], Any] | None = options
        self._opts: Any = None
        super().__init__(*args)

    @property
    def opts(self) -> Any:
        if self._options is not None:
            self._opts, self._options = self._options(), None
        return self._opts

    @opts.setter
    def opts(self, value: Any) -> None:
        if value is not None:
            self._opts, self._options = value, None


def _servicer_class(base: Any, prepare: Prepare | None = None) -> Any:
    """The supported servicer, subclassed: built only once the version guard has passed.

    Written against pulumi_policy 1.21's ``_PolicyAnalyzerServicer``, whose private attributes
    are read under their mangled names (``_PolicyAnalyzerServicer__*``).
    """

    class SharedStackServicer(base):  # type: ignore[misc]
        def _policies(self) -> list[sdk.Policy]:
            return list(self._PolicyAnalyzerServicer__policies)

        def Analyze(self, request: Any, context: Any) -> Any:
            policies = self._policies()
            if any(isinstance(p, sdk.ResourceValidationPolicy) for p in policies):
                return super().Analyze(request, context)
            if any(isinstance(p, sdk.StackValidationPolicy) for p in policies):
                # Parsed now, while the program still registers, for AnalyzeStack to reuse. The SDK's
                # Analyze parses nothing here, so what cannot be parsed is left to AnalyzeStack, which
                # judges (or fails on) the properties it is sent, exactly as the public path does.
                parsed = self._parsed_by_urn()
                try:
                    parsed[request.urn] = _Parsed.of(request.properties, prepare)
                except Exception:
                    parsed.pop(request.urn, None)
            return _internal.proto.AnalyzeResponse()

        def _parsed_by_urn(self) -> dict[str, _Parsed]:
            parsed: dict[str, _Parsed] | None = getattr(self, "_keyfence_parsed", None)
            if parsed is None:
                parsed = {}
                self._keyfence_parsed: dict[str, _Parsed] = parsed
            return parsed

        def _stack_resources(self, request: Any) -> SharedResources:
            """The request's resources as ``PolicyResource`` objects, linked as the SDK links them."""
            resources: list[sdk.PolicyResource] = []
            links: list[tuple[sdk.PolicyResource, str, list[str], dict[str, list[str]]]] = []
            early = self._parsed_by_urn()
            self._keyfence_parsed = {}
            providers: dict[bytes, Any] = {}
            made: dict[int, tuple[object, object]] = {}

            def provider_of(r: Any) -> Any:
                """The SDK's provider resource, parsed once per distinct provider (most share one)."""
                if not r.HasField("provider"):
                    return None
                key = r.provider.SerializeToString(deterministic=True)
                if key not in providers:
                    providers[key] = self._get_provider_resource(r)
                return providers[key]

            for r in request.resources:
                urn, properties = r.urn, r.properties
                seen = early.get(urn)
                if seen is not None and seen.describes(properties):
                    props = seen.value
                    if seen.prepared is not None:
                        made[id(props)] = (props, seen.prepared)
                else:
                    props = _parse(properties)
                resource: sdk.PolicyResource = _StackResource(
                    functools.partial(self._get_resource_options, r),
                    r.type,
                    props,
                    urn,
                    r.name,
                    None,
                    provider_of(r),
                    None,
                    [],
                    {},
                )
                resources.append(resource)
                property_dependencies = (
                    {k: list(v.urns) for k, v in r.propertyDependencies.items()}
                    if len(r.propertyDependencies)
                    else {}
                )
                links.append((resource, r.parent, list(r.dependencies), property_dependencies))
            by_urn = {resource.urn: resource for resource in resources}
            for resource, parent, dependencies, property_dependencies in links:
                if parent in by_urn:
                    resource.parent = by_urn[parent]
                resource.dependencies.extend(by_urn[d] for d in dependencies if d in by_urn)
                for key, urns in property_dependencies.items():
                    resource.property_dependencies[key] = [by_urn[d] for d in urns if d in by_urn]
            return SharedResources(resources, made)

        def AnalyzeStack(self, request: Any, context: Any) -> Any:
            self._configure_runtime_settings()
            response = _internal.proto.AnalyzeResponse()
            active = []
            for policy in self._policies():
                level = self._get_enforcement_level(policy)
                if level != sdk.EnforcementLevel.DISABLED and isinstance(policy, sdk.StackValidationPolicy):
                    active.append((policy, level))
            if not active:
                return response
            resources = self._stack_resources(request)
            for policy, level in active:
                if level == sdk.EnforcementLevel.REMEDIATE:
                    level = sdk.EnforcementLevel.MANDATORY
                report = self._create_report_violation(
                    response, policy.name, policy.description, level, policy.severity
                )
                config = self._get_policy_config(policy.name)
                args = sdk.StackValidationArgs(resources, config, self._PolicyAnalyzerServicer__stack_tags)
                try:
                    result = policy.validate(args, report)
                    if isawaitable(result):
                        loop = asyncio.new_event_loop()
                        loop.run_until_complete(asyncio.Task(result, loop=loop))  # type: ignore[arg-type]
                        loop.close()
                except _internal.UnknownValueError as e:
                    response.diagnostics.append(self._unknown_diagnostic(policy, e.message))
                except _internal._NotApplicableError as e:
                    response.not_applicable.append(
                        _internal.proto.PolicyNotApplicable(policy_name=policy.name, reason=e.reason or "")
                    )
            return response

        def _unknown_diagnostic(self, policy: sdk.Policy, message: str) -> Any:
            name = self._PolicyAnalyzerServicer__policy_pack_name
            version = self._PolicyAnalyzerServicer__policy_pack_version
            return _internal.proto.AnalyzeDiagnostic(
                policyName=policy.name,
                policyPackName=name,
                policyPackVersion=version,
                message=(
                    f"can't run policy '{policy.name}' from policy pack "
                    f"'{name}@v{version}' during preview: {message}"
                ),
                urn="",
                description=policy.description,
                enforcementLevel=self._map_enforcement_level(sdk.EnforcementLevel.ADVISORY),
            )

    return SharedStackServicer
