"""The pack's pulumi_policy adapter gives the verdicts of the SDK's public path, for less work.

The adapter parses the stack once for all stack policies and lets them share one index; it
must never change a verdict. Checked twice: in process against the SDK's own servicer on
stacks with violations, unknowns and config, and through the real pack process (started as
the CLI starts it) with the adapter on and with ``KEYFENCE_POLICY_PUBLIC_PATH=1``.
"""

from __future__ import annotations

from typing import Any

import pytest
from google.protobuf import struct_pb2
from keyfence_policies import sdk_adapter
from keyfence_policies.pack import build_policies
from keyfence_policies.scan import Scanner, prepare
from keyfence_policies.sdk_adapter import SharedResources, derived
from pulumi.runtime import proto, rpc
from pulumi_policy.policy import EnforcementLevel, StackValidationPolicy, _PolicyAnalyzerServicer
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from keyfence.check.analyzer import run_policy_pack
from keyfence.check.harness import RegisteredResource
from keyfence.check.packconfig import ConfigEntry
from keyfence.check.runner import OFFLINE_CONFIG, collect_program, default_policy_pack
from tests.fleet_fixtures import EXAMPLE_SPEC
from tests.policies.builders import DEPLOYMENT, SECRET, Proc, clean_stack_props, urn_of

P, Q = Proc("momentum", "executor"), Proc("momentum", "hedger")
ASSET_SIG = ("4dabf18193072939515e22adb298388d", "c44067f5952c0a294b673a41bacd8c17")
"""An asset with neither path, text nor uri: the SDK's deserializer refuses it."""


def _request(items: list[tuple[str, dict[str, Any], str]]) -> Any:
    resources = []
    for resource_type, props, name in items:
        properties = struct_pb2.Struct()
        properties.update(props)
        resources.append(
            proto.AnalyzerResource(
                type=resource_type, properties=properties, urn=urn_of(resource_type, name), name=name
            )
        )
    return proto.AnalyzeStackRequest(resources=resources)


def _verdicts(servicer: Any, request: Any, config: dict[str, dict[str, Any]]) -> list[tuple[Any, ...]]:
    policy_config = {}
    for name, properties in config.items():
        struct = struct_pb2.Struct()
        struct.update(properties)
        policy_config[name] = proto.PolicyConfig(properties=struct, enforcementLevel=proto.MANDATORY)
    servicer.Configure(proto.ConfigureAnalyzerRequest(policyConfig=policy_config), None)
    response = servicer.AnalyzeStack(request, None)
    return [(d.policyName, d.urn, d.enforcementLevel, d.message) for d in response.diagnostics]


def _both(request: Any, config: dict[str, dict[str, Any]] | None = None) -> list[tuple[Any, ...]]:
    args = ("keyfence", "0.1.0", build_policies(), EnforcementLevel.MANDATORY)
    public = _verdicts(_PolicyAnalyzerServicer(*args), request, config or {})
    shared = _verdicts(sdk_adapter._servicer_class(_PolicyAnalyzerServicer)(*args), request, config or {})
    assert shared == public
    return public


def _broken_stack() -> list[tuple[str, dict[str, Any], str]]:
    """Two processes sharing one key, one scaled up, one secret name unknown."""
    items = clean_stack_props([P, Q])
    fingerprints = [props for t, props, _ in items if t == SECRET]
    fingerprints[1]["metadata"]["annotations"] = dict(fingerprints[0]["metadata"]["annotations"])
    deployments = [props for t, props, _ in items if t == DEPLOYMENT]
    deployments[0]["spec"]["replicas"] = 2
    deployments[1]["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] = UNKNOWN_STRING_VALUE
    return items


def test_the_adapter_is_used_on_this_pulumi_policy_version() -> None:
    assert sdk_adapter.supported(), "the installed pulumi_policy is one the adapter was checked against"


def test_in_process_the_adapter_gives_the_public_paths_verdicts() -> None:
    assert _both(_request(clean_stack_props([P, Q]))) == []
    broken = _both(_request(_broken_stack()))
    assert {v[0] for v in broken} >= {"single-writer-per-key", "no-duplicate-key-assignment"}
    # Per-policy config differs (an index per distinct config): still the same verdicts.
    offline = _both(
        _request(_broken_stack()),
        {"no-duplicate-key-assignment": {"requireFingerprint": False}, "hardened-workload": {}},
    )
    assert offline


def test_the_adapter_answers_analyze_without_work_when_the_pack_has_no_resource_policy() -> None:
    servicer = sdk_adapter._servicer_class(_PolicyAnalyzerServicer)(
        "keyfence", "0.1.0", build_policies(), EnforcementLevel.MANDATORY
    )
    request = proto.AnalyzeRequest(type=DEPLOYMENT, urn=urn_of(DEPLOYMENT, "x"), name="x")
    assert list(servicer.Analyze(request, None).diagnostics) == []


def _analyze_each(servicer: Any, items: list[tuple[str, dict[str, Any], str]]) -> None:
    """Analyze calls for ``items``, as the engine sends them before AnalyzeStack."""
    for analyzed in _request(items).resources:
        request = proto.AnalyzeRequest(type=analyzed.type, urn=analyzed.urn, name=analyzed.name)
        request.properties.CopyFrom(analyzed.properties)
        assert list(servicer.Analyze(request, None).diagnostics) == []


def test_analyze_time_parses_are_reused_only_for_unchanged_properties() -> None:
    """Analyze parses each resource early; AnalyzeStack must still judge the properties it is sent."""
    args = ("keyfence", "0.1.0", build_policies(), EnforcementLevel.MANDATORY)
    expected = _verdicts(_PolicyAnalyzerServicer(*args), _request(_broken_stack()), {})
    assert {v[0] for v in expected} >= {"single-writer-per-key", "no-duplicate-key-assignment"}

    unchanged = sdk_adapter._servicer_class(_PolicyAnalyzerServicer)(*args)
    _analyze_each(unchanged, _broken_stack())
    assert len(unchanged._parsed_by_urn()) == len(_broken_stack()), "every resource parsed at Analyze"
    assert _verdicts(unchanged, _request(_broken_stack()), {}) == expected
    assert unchanged._parsed_by_urn() == {}, "the early parses are dropped once the stack was analysed"

    # Analyze saw a clean stack; AnalyzeStack is sent the broken one: its verdicts, not the early ones.
    changed = sdk_adapter._servicer_class(_PolicyAnalyzerServicer)(*args)
    _analyze_each(changed, clean_stack_props([P, Q]))
    assert _verdicts(changed, _request(_broken_stack()), {}) == expected


def test_strings_prepared_at_analyze_are_searched_only_for_unchanged_properties(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The scan's strings listed at Analyze time stand in for a walk only of the very same parse."""
    args = ("keyfence", "0.1.0", build_policies(), EnforcementLevel.MANDATORY)
    expected = _verdicts(_PolicyAnalyzerServicer(*args), _request(_broken_stack()), {})
    walked: list[object] = []
    original = Scanner.scan

    def counted(self: Scanner, props: object, **kwargs: Any) -> Any:
        walked.append(props)
        return original(self, props, **kwargs)

    monkeypatch.setattr(Scanner, "scan", counted)
    unchanged = sdk_adapter._servicer_class(_PolicyAnalyzerServicer, prepare)(*args)
    _analyze_each(unchanged, _broken_stack())
    assert _verdicts(unchanged, _request(_broken_stack()), {}) == expected
    assert walked == [], "every resource's strings were listed at Analyze time"

    changed = sdk_adapter._servicer_class(_PolicyAnalyzerServicer, prepare)(*args)
    _analyze_each(changed, clean_stack_props([P, Q]))
    assert _verdicts(changed, _request(_broken_stack()), {}) == expected
    differing = sum(a != b for a, b in zip(clean_stack_props([P, Q]), _broken_stack(), strict=True))
    assert differing and len(walked) == differing, "a resource whose properties changed is walked again"


def test_resource_options_are_the_sdks_when_a_policy_reads_them() -> None:
    seen: list[Any] = []

    def read_options(args: Any, report: Any) -> None:
        for r in args.resources:
            seen.append((r.urn, r.opts.protect, list(r.opts.ignore_changes), r.opts.parent))

    policy = StackValidationPolicy(name="reads-options", description="reads options", validate=read_options)
    request = _request(clean_stack_props([P]))
    request.resources[0].options.protect = True
    request.resources[0].options.ignoreChanges.append("spec")
    request.resources[1].options.parent = request.resources[0].urn
    args = ("keyfence", "0.1.0", [policy], EnforcementLevel.MANDATORY)
    adapted = sdk_adapter._servicer_class(_PolicyAnalyzerServicer)(*args)
    for servicer in (_PolicyAnalyzerServicer(*args), adapted):
        servicer.AnalyzeStack(request, None)
    half = len(seen) // 2
    assert seen[:half] == seen[half:] and seen[0][1:3] == (True, ["spec"]) and seen[1][3] == seen[0][0]


def test_another_pulumi_policy_version_keeps_the_public_path(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sdk_adapter, "sdk_version", lambda: "1.99.0")
    assert not sdk_adapter.supported()
    assert not sdk_adapter.install()
    monkeypatch.setattr(sdk_adapter, "sdk_version", lambda: "1.21.0")
    monkeypatch.setenv(sdk_adapter.PUBLIC_PATH_ENV, "1")
    assert not sdk_adapter.install()


def test_derived_values_are_shared_per_equal_key_only_on_shared_resources() -> None:
    calls: list[str] = []

    def build(tag: str) -> Any:
        calls.append(tag)
        return object()

    shared = SharedResources([])
    first = derived(shared, {"a": 1}, lambda: build("a"))
    assert derived(shared, {"a": 1}, lambda: build("again")) is first
    assert derived(shared, {"a": 2}, lambda: build("b")) is not first
    plain: list[object] = []
    assert derived(plain, {"a": 1}, lambda: build("p1")) is not derived(plain, {"a": 1}, lambda: build("p2"))
    assert calls == ["a", "b", "p1", "p2"]

    def failing() -> Any:
        calls.append("fail")
        raise ValueError("boom")

    for _ in range(2):
        with pytest.raises(ValueError):
            derived(shared, "k", failing)
    assert calls.count("fail") == 2, "a failed build is not kept: each policy sees the failure"


# --------------------------------------------------------------------------- the real pack process


def _hostile_stack() -> list[RegisteredResource]:
    """The example fleet, plus a copy of every Deployment and key Secret with its metadata unknown."""
    base = collect_program(EXAMPLE_SPEC, mode="offline", stack="check", project="keyfence").resources
    extra = []
    for index, resource in enumerate(r for r in base if r.type in (DEPLOYMENT, SECRET)):
        props = rpc.deserialize_properties(resource.properties, keep_unknowns=True)
        props["metadata"] = rpc.UNKNOWN if index % 2 else {**props["metadata"], "name": "shared-name"}
        struct = struct_pb2.Struct()
        struct.update(props)
        name = f"{resource.name}~copy"
        urn = f"{resource.urn.rsplit('::', 1)[0]}::{name}"
        extra.append(RegisteredResource(resource.type, name, urn, resource.parent, True, struct))
    return [*base, *extra]


def test_the_real_pack_process_gives_the_same_verdicts_both_ways(monkeypatch: pytest.MonkeyPatch) -> None:
    resources = _hostile_stack()
    config = {**OFFLINE_CONFIG, "hardened-workload": ConfigEntry("advisory", {})}

    def verdicts() -> list[tuple[str, str, str, str]]:
        analysis = run_policy_pack(
            default_policy_pack(), resources, project="keyfence", stack="check", base_config=config
        )
        return sorted((v.policy, v.level, v.urn, v.message) for v in analysis.violations)

    monkeypatch.delenv(sdk_adapter.PUBLIC_PATH_ENV, raising=False)
    adapted = verdicts()
    monkeypatch.setenv(sdk_adapter.PUBLIC_PATH_ENV, "1")
    public = verdicts()
    assert adapted == public
    assert {v[1] for v in adapted} == {"mandatory", "advisory"}, "the stack must exercise both levels"


def test_analyze_never_fails_where_the_public_path_answers() -> None:
    """The early parse is an optimisation: properties it cannot parse are left to AnalyzeStack."""
    args = ("keyfence", "0.1.0", build_policies(), EnforcementLevel.MANDATORY)
    odd = {"metadata": {"name": "cm", "namespace": "momentum"}, "data": {"x": {ASSET_SIG[0]: ASSET_SIG[1]}}}
    fine = {"metadata": {"name": "cm", "namespace": "momentum"}, "data": {"x": "fine"}}
    adapted = sdk_adapter._servicer_class(_PolicyAnalyzerServicer, prepare)(*args)
    public = _PolicyAnalyzerServicer(*args)
    for servicer in (public, adapted):
        _analyze_each(servicer, [("kubernetes:core/v1:ConfigMap", odd, "cm")])
    # AnalyzeStack is sent properties it can parse: both judge those.
    stack = [*clean_stack_props([P]), ("kubernetes:core/v1:ConfigMap", fine, "cm")]
    assert _verdicts(adapted, _request(stack), {}) == _verdicts(public, _request(stack), {})
