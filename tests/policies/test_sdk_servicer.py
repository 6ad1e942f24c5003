"""The policies behind the SDK's own analyzer servicer, in process (no server, no port).

``AnalyzeStack`` deserializes props from protobuf (numbers become floats, unknowns
become sentinels behind a raising proxy) and ``Configure`` hands each policy its config
dict; this checks the pack against that real path rather than hand-built args.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import json_format, struct_pb2
from keyfence_policies.pack import build_policies
from pulumi.runtime import proto
from pulumi_policy.policy import EnforcementLevel, _PolicyAnalyzerServicer
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

from tests.policies.builders import DEPLOYMENT, Proc, clean_stack_props, deployment_props, urn_of

P = Proc("momentum", "executor")


def servicer() -> Any:
    return _PolicyAnalyzerServicer("keyfence", "0.1.0", build_policies(), EnforcementLevel.MANDATORY)


def request(items: list[tuple[str, dict[str, Any], str]]) -> Any:
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


def configure(analyzer: Any, config: dict[str, dict[str, Any]]) -> None:
    policy_config = {}
    for name, properties in config.items():
        struct = struct_pb2.Struct()
        struct.update(properties)
        policy_config[name] = proto.PolicyConfig(properties=struct)
    analyzer.Configure(proto.ConfigureAnalyzerRequest(policyConfig=policy_config), None)


def test_analyzer_info_lists_the_six_stack_policies_with_schemas() -> None:
    info = servicer().GetAnalyzerInfo(None, None)
    assert info.name == "keyfence"
    assert len(info.policies) == 6
    for policy in info.policies:
        assert policy.policy_type == proto.PolicyType.POLICY_TYPE_STACK
        schema = json_format.MessageToDict(policy.configSchema)
        assert {"labels", "annotations", "roleAllowances", "keyBearingKinds"} <= set(schema["properties"])


def test_the_clean_stack_passes_through_the_real_analyzer() -> None:
    response = servicer().AnalyzeStack(request(clean_stack_props()), None)
    assert list(response.diagnostics) == []


def test_violations_come_back_with_urn_and_level() -> None:
    items = clean_stack_props([P])
    for resource_type, props, _ in items:
        if resource_type == DEPLOYMENT:
            props["spec"]["replicas"] = 3
    response = servicer().AnalyzeStack(request(items), None)
    found = [(d.policyName, d.urn, d.enforcementLevel) for d in response.diagnostics]
    assert found == [("single-writer-per-key", urn_of(DEPLOYMENT, P.resource_name), proto.MANDATORY)]
    assert "sets spec.replicas: 3" in response.diagnostics[0].message


def test_an_unknown_value_is_a_mandatory_finding_not_an_advisory_cant_run() -> None:
    props = deployment_props(P)
    props["spec"]["template"]["spec"]["volumes"][0]["secret"]["secretName"] = UNKNOWN_STRING_VALUE
    items = [item for item in clean_stack_props([P]) if item[0] != DEPLOYMENT] + [
        (DEPLOYMENT, props, P.resource_name)
    ]
    response = servicer().AnalyzeStack(request(items), None)
    assert not any("can't run policy" in d.message for d in response.diagnostics)
    mandatory = {d.policyName for d in response.diagnostics if d.enforcementLevel == proto.MANDATORY}
    assert mandatory == {
        "no-duplicate-key-assignment",
        "single-writer-per-key",
        "subaccount-tag-required",
        "least-privilege-key",
        "key-not-in-env",
    }


def test_configure_reaches_the_policies() -> None:
    fleet = [Proc("momentum", "executor", fingerprint="")]
    analyzer = servicer()
    unverifiable = analyzer.AnalyzeStack(request(clean_stack_props(fleet)), None)
    assert [d.policyName for d in unverifiable.diagnostics] == ["no-duplicate-key-assignment"]
    configure(analyzer, {"no-duplicate-key-assignment": {"requireFingerprint": False}})
    assert list(analyzer.AnalyzeStack(request(clean_stack_props(fleet)), None).diagnostics) == []
