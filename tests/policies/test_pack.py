"""The pack as the Pulumi CLI sees it: names, levels, schemas, standalone import."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
from google.protobuf import struct_pb2
from keyfence_policies import pack
from keyfence_policies.config import parse_config
from keyfence_policies.rule import Finding, Rule
from pulumi_policy import EnforcementLevel, StackValidationArgs, StackValidationPolicy

from tests.policies.builders import clean_stack, run

POLICIES_DIR = Path(__file__).resolve().parents[2] / "policies"
CONTRACT = [
    "no-duplicate-key-assignment",
    "single-writer-per-key",
    "subaccount-tag-required",
    "least-privilege-key",
    "key-not-in-env",
    "hardened-workload",
]


def test_policy_names_are_the_public_contract() -> None:
    assert pack.policy_names() == CONTRACT
    assert [p.name for p in pack.build_policies()] == CONTRACT


def test_every_policy_is_a_stack_policy_with_the_documented_level() -> None:
    levels = {p.name: p.enforcement_level for p in pack.build_policies()}
    assert all(isinstance(p, StackValidationPolicy) for p in pack.build_policies())
    assert levels.pop("hardened-workload") is EnforcementLevel.ADVISORY
    assert set(levels.values()) == {EnforcementLevel.MANDATORY}


@pytest.mark.parametrize("name", CONTRACT)
def test_config_schema_is_valid_json_schema_and_fits_in_a_protobuf_struct(name: str) -> None:
    policy = pack.build_policy(pack.rule_named(name))
    properties = policy.config_schema.properties
    # GetAnalyzerInfo copies the schema into a protobuf Struct: only JSON types survive that.
    struct_pb2.Struct().update(properties)
    schema = {"type": "object", "properties": properties}
    jsonschema.Draft7Validator.check_schema(schema)
    defaults = {key: value["default"] for key, value in properties.items()}
    jsonschema.Draft7Validator(schema).validate(defaults)
    # The CLI fills these defaults; the pack must read them exactly as it reads "nothing given".
    parsed = parse_config(defaults, pack.accepted_properties(pack.rule_named(name)))
    assert parsed.errors == ()
    assert parsed.config == parse_config(None).config


def test_only_the_duplicate_policy_has_require_fingerprint() -> None:
    having = [p.name for p in pack.build_policies() if "requireFingerprint" in p.config_schema.properties]
    assert having == ["no-duplicate-key-assignment"]


def test_schema_rejects_a_misspelt_label_name() -> None:
    properties = pack.build_policy(pack.rule_named("subaccount-tag-required")).config_schema.properties
    validator = jsonschema.Draft7Validator({"type": "object", "properties": properties})
    assert list(validator.iter_errors({"labels": {"subacount": "x/y"}}))


def test_the_pack_imports_on_its_own_from_its_folder() -> None:
    """What the Pulumi CLI does: run the folder with only itself on the path, no keyfence infra."""
    code = (
        "import json, sys; import keyfence_policies.pack as p; "
        "foreign = sorted(m for m in sys.modules "
        "if m.split('.')[0] in ('infra', 'keyfence', 'policies', 'tests')); "
        "print(len(p.build_policies())); print(json.dumps(p.policy_names())); print(json.dumps(foreign))"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=POLICIES_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    count, names, foreign = done.stdout.strip().splitlines()
    assert int(count) == 6
    assert json.loads(names) == CONTRACT
    assert json.loads(foreign) == []


def test_main_builds_the_keyfence_pack_from_build_policies() -> None:
    """Run __main__.py the way pulumi.policy does (runpy on the folder) with PolicyPack stubbed out."""
    code = (
        "import json, runpy, pulumi_policy\n"
        "seen = {}\n"
        "def fake(**kwargs):\n"
        "    seen.update(kwargs)\n"
        "pulumi_policy.PolicyPack = fake\n"
        "runpy.run_path('.', run_name='__main__')\n"
        "print(json.dumps({'name': seen['name'], 'level': seen['enforcement_level'].value,\n"
        "    'policies': [p.name for p in seen['policies']],\n"
        "    'description': bool(seen.get('description'))}))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=POLICIES_DIR, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "name": "keyfence",
        "level": "mandatory",
        "policies": CONTRACT,
        "description": True,
    }


def test_pack_files_declare_a_python_runtime_and_pinned_requirements() -> None:
    project = (POLICIES_DIR / "PulumiPolicy.yaml").read_text()
    assert "runtime: python" in project
    assert "version:" in project
    requirements = (POLICIES_DIR / "requirements.txt").read_text()
    for requirement in ("pulumi-policy>=1.21.0,<2", "pulumi>=3.204.0,<4", "protobuf>=", "grpcio>="):
        assert requirement in requirements


def test_a_crashing_rule_is_reported_not_raised() -> None:
    def explode(index: object, config: object) -> list[Finding]:
        raise RuntimeError("boom")

    rule = Rule("exploding", "A rule with a bug.", "mandatory", explode, "Fix the bug.")
    findings = pack.run_rule(rule, clean_stack())
    assert len(findings) == 1
    assert findings[0].urn is None
    assert "could not evaluate the stack (RuntimeError: boom)" in findings[0].message


def test_unreadable_args_are_reported_not_raised() -> None:
    class Broken(StackValidationArgs):  # type: ignore[misc]
        @property
        def resources(self) -> list[object]:
            raise RuntimeError("no resources")

        @resources.setter
        def resources(self, value: object) -> None:
            pass

    found: list[tuple[str, str | None]] = []
    policy = pack.build_policy(pack.rule_named("single-writer-per-key"))
    policy.validate(Broken([]), lambda message, urn=None: found.append((message, urn)))
    assert len(found) == 1
    assert "could not read the stack (RuntimeError: no resources)" in found[0][0]


def test_malformed_config_is_a_violation_and_defaults_still_apply() -> None:
    violations = run("no-duplicate-key-assignment", clean_stack(), {"requireFingerprint": "no"})
    assert len(violations) == 1
    assert violations[0].urn is None
    assert "requireFingerprint must be true or false" in violations[0].message


def test_evaluate_runs_every_policy() -> None:
    result = pack.evaluate(clean_stack(), {"no-duplicate-key-assignment": {"requireFingerprint": False}})
    assert list(result) == CONTRACT
    assert all(findings == [] for findings in result.values())


def test_rule_named_rejects_unknown_names() -> None:
    with pytest.raises(KeyError):
        pack.rule_named("all")


def test_only_the_least_privilege_policy_has_require_permissions() -> None:
    having = [p.name for p in pack.build_policies() if "requirePermissions" in p.config_schema.properties]
    assert having == ["least-privilege-key"]
