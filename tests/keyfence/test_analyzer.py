"""The policy pack harness speaks the real analyzer protocol to a pack in its own process.

Most tests run ``tests/fixtures/testpack`` (one policy per enforcement behaviour) against a
few hand-declared Kubernetes resources; the rest write small packs that misbehave in one
particular way (fail to start, print garbage, crash mid-run, raise) and check that keyfence
reports it with the pack's own stderr and never leaves the process behind.
"""

from __future__ import annotations

import json
import os
import sys
import textwrap
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pytest

from keyfence.check.analyzer import PolicyPackSession, run_policy_pack
from keyfence.check.harness import Collected, collect
from keyfence.check.packconfig import (
    ConfigEntry,
    load_policy_config,
    parse_policy_config,
    read_pack_project,
    reconcile_config,
)
from keyfence.check.verdict import Analysis, PolicyMeta
from keyfence.errors import EXIT_INVALID, KeyfenceError, PolicyPackError

TESTPACK = Path(__file__).resolve().parent.parent / "fixtures" / "testpack"
DEPLOYMENT = "kubernetes:apps/v1:Deployment"


def _program() -> None:
    """One namespace with three deployments, each tripping different testpack policies."""
    ns = k8s.core.v1.Namespace("team-a", metadata={"name": "team-a"})
    images = [
        ("d0", "forbidden.example/trader:1.0", True),  # forbidden registry, pinned by tag
        ("d1", "ghcr.io/acme/feed@sha256:" + "a" * 64, False),  # digest, but no limits
        ("d2", "ghcr.io/acme/risk:2.0", True),  # pinned by tag only
    ]
    for name, image, limits in images:
        container: dict[str, Any] = {"name": name, "image": image}
        if limits:
            container["resources"] = {"limits": {"cpu": "1", "memory": "128Mi"}}
        k8s.apps.v1.Deployment(
            name,
            metadata={"name": name, "namespace": "team-a"},
            spec={
                "selector": {"match_labels": {"app": name}},
                "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [container]}},
            },
            opts=pulumi.ResourceOptions(parent=ns, depends_on=[ns]),
        )


@pytest.fixture(scope="module")
def declared() -> Collected:
    return collect(_program, project="proto", stack="test")


def urn_of(collected: Collected, name: str) -> str:
    return next(r.urn for r in collected.resources if r.name == name)


def run(collected: Collected, config: dict[str, Any] | None = None, pack: Path = TESTPACK) -> Analysis:
    layer = parse_policy_config(config, "test config") if config is not None else None
    return run_policy_pack(pack, collected.resources, project="proto", stack="test", config=layer)


def found(analysis: Analysis, policy: str) -> list[tuple[str, str, str]]:
    """(level, urn, message) of each violation of ``policy``."""
    return sorted((v.level, v.urn, v.message) for v in analysis.violations if v.policy == policy)


@pytest.fixture(scope="module")
def analysis(declared: Collected) -> Analysis:
    return run(declared)


# --------------------------------------------------------------------------- protocol fidelity


def test_pack_metadata_comes_from_get_analyzer_info(analysis: Analysis) -> None:
    assert analysis.pack == "keyfence-testpack"
    assert analysis.version == "0.0.7", "the version in PulumiPolicy.yaml wins, as in the CLI"
    assert [(p.name, p.level, p.kind) for p in analysis.policies] == [
        ("advisory-image-digest", "advisory", "resource"),
        ("config-echo", "advisory", "resource"),
        ("mandatory-forbidden-registry", "mandatory", "resource"),
        ("remediate-container-limits", "remediate", "resource"),
        ("stack-deployments-per-namespace", "mandatory", "stack"),
        ("stack-summary", "advisory", "stack"),
    ]


def test_resource_policies_report_at_their_level_with_the_resource_urn(
    declared: Collected, analysis: Analysis
) -> None:
    d0, d2 = urn_of(declared, "d0"), urn_of(declared, "d2")
    assert [(lvl, urn) for lvl, urn, _ in found(analysis, "advisory-image-digest")] == sorted(
        [("advisory", d0), ("advisory", d2)]
    )
    [(level, urn, message)] = found(analysis, "mandatory-forbidden-registry")
    assert (level, urn) == ("mandatory", d0)
    # The SDK prefixes the policy description to the message, as `pulumi preview` shows it.
    expected = "d0 pulls forbidden.example/trader:1.0 from a forbidden registry"
    assert message == f"Images must not come from forbidden.example.\n{expected}"
    assert all(v.pack == "keyfence-testpack" for v in analysis.violations)


def test_remediate_policy_that_still_fires_is_reported_mandatory(
    declared: Collected, analysis: Analysis
) -> None:
    assert found(analysis, "remediate-container-limits") == [
        (
            "mandatory",
            urn_of(declared, "d1"),
            "Containers must set resource limits.\ncontainer d1 of d1 has no limits",
        )
    ]


def test_stack_policies_see_all_resources(analysis: Analysis, declared: Collected) -> None:
    [(level, urn, message)] = found(analysis, "stack-summary")
    assert (level, urn) == ("advisory", "")
    assert message.endswith(f"\n{len(declared.resources)} resources, 3 deployments")
    assert found(analysis, "stack-deployments-per-namespace") == [], "default maxPerNamespace is 10"


def test_config_schema_defaults_reach_the_policy(analysis: Analysis, declared: Collected) -> None:
    assert found(analysis, "config-echo") == [
        (
            "advisory",
            urn_of(declared, "team-a"),
            "Echoes its configuration.\ngreeting=hello limit=3 namespace=team-a",
        )
    ]
    assert analysis.config["config-echo"].properties == {"greeting": "hello", "limit": 3}
    assert analysis.config["stack-deployments-per-namespace"].properties == {"maxPerNamespace": 10}


def test_config_file_overrides_defaults_and_levels(declared: Collected, tmp_path: Path) -> None:
    config_file = tmp_path / "policy-config.json"
    config_file.write_text(
        json.dumps(
            {
                "config-echo": {"greeting": "hej", "limit": 5},
                "stack-deployments-per-namespace": {"maxPerNamespace": 2},
                "mandatory-forbidden-registry": "advisory",
                "stack-summary": {"enforcementLevel": "disabled"},
            }
        )
    )
    layer = load_policy_config(config_file)
    result = run_policy_pack(TESTPACK, declared.resources, project="proto", stack="test", config=layer)
    assert [m for _, _, m in found(result, "config-echo")] == [
        "Echoes its configuration.\ngreeting=hej limit=5 namespace=team-a"
    ]
    [(level, urn, message)] = found(result, "stack-deployments-per-namespace")
    assert level == "mandatory" and urn in {urn_of(declared, n) for n in ("d0", "d1", "d2")}
    assert message.endswith("namespace team-a has more than 2 deployments")
    assert [lvl for lvl, _, _ in found(result, "mandatory-forbidden-registry")] == ["advisory"]
    assert found(result, "stack-summary") == []


def test_all_sets_every_level_and_named_policies_still_win(declared: Collected) -> None:
    result = run(declared, {"all": "mandatory", "advisory-image-digest": "advisory"})
    assert {lvl for lvl, _, _ in found(result, "config-echo")} == {"mandatory"}
    assert {lvl for lvl, _, _ in found(result, "stack-summary")} == {"mandatory"}
    assert {lvl for lvl, _, _ in found(result, "advisory-image-digest")} == {"advisory"}

    assert run(declared, {"all": "disabled"}).violations == []


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"config-echo": {"limit": 0}}, "config-echo.limit: 0 is less than the minimum of 1"),
        ({"config-echo": {"greeting": 5}}, "config-echo.greeting: 5 is not of type 'string'"),
        ({"stack-summary": {"enforcementLevel": "strict"}}, "'strict' is not an enforcement level"),
        ({"stack-summary": "sometimes"}, "'sometimes' is not an enforcement level"),
        ({"no-such-policy": "advisory"}, "unknown policy 'no-such-policy'"),
        ({"config-echo": ["hej"]}, "expected an enforcement level string or an object"),
        ({"all": {"greeting": "hej"}}, "'all' takes only an enforcement level"),
    ],
)
def test_invalid_config_is_rejected_naming_policy_and_property(
    declared: Collected, config: dict[str, Any], expected: str
) -> None:
    with pytest.raises(KeyfenceError) as info:
        run(declared, config)
    assert expected in str(info.value)
    assert info.value.exit_code == EXIT_INVALID
    assert not isinstance(info.value, PolicyPackError), "a bad config is the user's error, not the pack's"


def test_config_file_errors_name_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text('{"config-echo": {"greeting": }')
    with pytest.raises(KeyfenceError, match=r"bad\.json:1:\d+: invalid JSON"):
        load_policy_config(bad)
    with pytest.raises(KeyfenceError, match="no such policy pack config file"):
        load_policy_config(tmp_path / "missing.json")
    empty = tmp_path / "empty.json"
    empty.write_text("  \n")
    assert load_policy_config(empty) == {}


# --------------------------------------------------------------------------- config reconciliation, no pack


def _meta(name: str, level: Any = "mandatory", properties: dict[str, Any] | None = None) -> PolicyMeta:
    props = {**(properties or {}), "enforcementLevel": {"type": "string"}}
    return PolicyMeta(name, f"{name} description", level, "stack", {"properties": props})


def test_reconcile_applies_defaults_then_initial_config_then_layers_in_order() -> None:
    policies = [_meta("a", properties={"x": {"type": "string", "default": "d"}}), _meta("b", "advisory")]
    initial = {"a": ConfigEntry("mandatory", {"x": "initial"})}
    base = {"a": ConfigEntry(None, {"x": "base"}), "not-in-pack": ConfigEntry(None, {"y": 1})}
    user = {"all": ConfigEntry("advisory"), "b": ConfigEntry("disabled")}
    result = reconcile_config(policies, initial, [(base, False), (user, True)])
    assert result["a"].level == "advisory" and result["a"].properties == {"x": "base"}
    assert result["b"].level == "disabled"
    assert set(result) == {"a", "b"}, "the lenient base layer skips policies the pack does not have"


def test_initial_config_without_a_level_resets_to_advisory_as_in_the_cli() -> None:
    # proto3 cannot tell an unset enforcement level from ADVISORY (0); the CLI reads it as advisory.
    result = reconcile_config([_meta("a")], {"a": ConfigEntry("advisory", {"k": 1})}, [])
    assert result["a"].level == "advisory"


def test_required_properties_are_enforced() -> None:
    policy = PolicyMeta(
        "a", "", "mandatory", "stack", {"properties": {"k": {"type": "string"}}, "required": ["k"]}
    )
    with pytest.raises(KeyfenceError, match="a: 'k' is a required property"):
        reconcile_config([policy], {}, [])
    assert reconcile_config([policy], {}, [({"a": ConfigEntry(None, {"k": "v"})}, True)])["a"].properties == {
        "k": "v"
    }


# --------------------------------------------------------------------------- launching like the CLI


def make_pack(root: Path, body: str, *, project: str | None = None) -> Path:
    """A pack directory with ``body`` as its ``__main__.py`` (policy SDK names pre-imported)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "PulumiPolicy.yaml").write_text(project or "runtime: python\n")
    header = (
        "import os, sys\n"
        "from pulumi_policy import (EnforcementLevel, PolicyPack, ResourceValidationPolicy,\n"
        "    StackValidationPolicy)\n"
    )
    (root / "__main__.py").write_text(header + textwrap.dedent(body))
    return root


def assert_gone(pidfile: Path) -> None:
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


ENV_PACK = """
import grpc
from pulumi.runtime.proto import engine_pb2, engine_pb2_grpc

engine = engine_pb2_grpc.EngineStub(grpc.insecure_channel(sys.argv[1]))
engine.Log(engine_pb2.LogRequest(severity=engine_pb2.WARNING, message="hello from the pack"))

def env(args, report):
    print("a line on stdout after the port")
    facts = {
        "argv": sys.argv[1:],
        "cwd": os.getcwd(),
        "project": os.environ.get("PULUMI_PROJECT"),
        "stack": os.environ.get("PULUMI_STACK"),
        "dry_run": os.environ.get("PULUMI_DRY_RUN"),
        "config": os.environ.get("PULUMI_CONFIG"),
        "vault_token": "VAULT_TOKEN" in os.environ,
        "python": sys.executable,
        "virtual_env": os.environ.get("VIRTUAL_ENV"),
    }
    report(__import__("json").dumps(facts))

PolicyPack(name="env-pack", policies=[StackValidationPolicy(name="env", description="env", validate=env)])
"""


def _facts(analysis: Analysis) -> dict[str, Any]:
    [violation] = analysis.violations
    facts: dict[str, Any] = json.loads(violation.message.split("\n", 1)[1])
    return facts


def test_pack_is_launched_as_the_pulumi_cli_launches_it(
    declared: Collected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VAULT_TOKEN", "hvs.must-not-reach-the-pack")
    monkeypatch.delenv("VIRTUAL_ENV", raising=False)
    pack = make_pack(tmp_path / "env-pack", ENV_PACK)
    analysis = run_policy_pack(pack, declared.resources, project="proj", stack="stk")
    facts = _facts(analysis)
    engine_address, pack_dir = facts["argv"]
    assert engine_address.startswith("127.0.0.1:") and Path(pack_dir) == pack.resolve()
    assert Path(facts["cwd"]) == pack.resolve()
    assert (facts["project"], facts["stack"], facts["dry_run"], facts["config"]) == (
        "proj",
        "stk",
        "true",
        "{}",
    )
    assert facts["vault_token"] is False, "a policy pack never needs a Vault credential"
    assert facts["virtual_env"] is None
    assert ("engine", "warning", "hello from the pack") in {
        (x.source, x.severity, x.message) for x in analysis.logs
    }
    assert ("stdout", "a line on stdout after the port") in {(x.source, x.message) for x in analysis.logs}


def test_runtime_virtualenv_selects_the_packs_interpreter(declared: Collected, tmp_path: Path) -> None:
    venv = tmp_path / "venvs" / "policy"
    (venv / "bin").mkdir(parents=True)
    marker = tmp_path / "used-venv-python"
    wrapper = venv / "bin" / "python"
    wrapper.write_text(f'#!/bin/sh\necho used > "{marker}"\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    project = "runtime:\n  name: python\n  options:\n    virtualenv: ../venvs/policy\n"
    pack = make_pack(tmp_path / "pack", ENV_PACK, project=project)
    assert read_pack_project(pack).python == str(wrapper.resolve())
    facts = _facts(run_policy_pack(pack, declared.resources, project="p", stack="s"))
    assert marker.read_text().strip() == "used"
    assert Path(facts["virtual_env"]) == venv.resolve()


@pytest.mark.parametrize(
    ("project", "expected"),
    [
        ("runtime: nodejs\n", "keyfence runs Python policy packs only"),
        ("runtime:\n  name: python\n  options:\n    virtualenv: nowhere\n", "is not a virtual environment"),
        ("- not a mapping\n", "expected a mapping"),
    ],
)
def test_unusable_pack_projects_are_pack_errors(tmp_path: Path, project: str, expected: str) -> None:
    pack = make_pack(tmp_path / "pack", "", project=project)
    with pytest.raises(PolicyPackError, match=expected):
        read_pack_project(pack)


def test_a_directory_without_pulumipolicy_yaml_is_not_a_pack(tmp_path: Path) -> None:
    with pytest.raises(PolicyPackError, match=r"no PulumiPolicy\.yaml"):
        read_pack_project(tmp_path)
    with pytest.raises(PolicyPackError, match="no such policy pack directory"):
        read_pack_project(tmp_path / "missing")


# --------------------------------------------------------------------------- packs that fail


def _pidfile(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    pidfile = tmp_path / "pack.pid"
    monkeypatch.setenv("TESTPACK_PIDFILE", str(pidfile))
    return pidfile


PID = 'open(os.environ["TESTPACK_PIDFILE"], "w").write(str(os.getpid()))\n'


def test_pack_that_fails_to_start_reports_its_stderr(
    declared: Collected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = _pidfile(tmp_path, monkeypatch)
    pack = make_pack(tmp_path / "bad", PID + "raise RuntimeError('boom while importing the pack')\n")
    with pytest.raises(PolicyPackError) as info:
        run_policy_pack(pack, declared.resources, project="p", stack="s")
    text = str(info.value)
    assert "policy pack 'bad' exited before it started serving (exit status 1)" in text
    assert "boom while importing the pack" in text, "the pack's own stderr is part of the message"
    assert info.value.exit_code == EXIT_INVALID
    assert_gone(pidfile)


def test_pack_that_prints_before_its_port_is_rejected_like_the_cli_does(
    declared: Collected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = _pidfile(tmp_path, monkeypatch)
    body = (
        PID + "print('loading my policies...')\nPolicyPack(name='chatty', policies=[StackValidationPolicy("
        "name='p', description='p', validate=lambda a, r: None)])\n"
    )
    pack = make_pack(tmp_path / "chatty", body)
    with pytest.raises(PolicyPackError, match=r"wrote 'loading my policies\.\.\.' to stdout where"):
        run_policy_pack(pack, declared.resources, project="p", stack="s")
    assert_gone(pidfile)


def test_pack_that_never_prints_a_port_times_out(
    declared: Collected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = _pidfile(tmp_path, monkeypatch)
    body = (
        PID + "import sys, time\nsys.stderr.write('stuck before serving\\n')\nsys.stderr.flush()\n"
        "time.sleep(3600)\n"
    )
    pack = make_pack(tmp_path / "stuck", body)
    with pytest.raises(PolicyPackError, match="did not print its port within 3 s") as info:
        run_policy_pack(pack, declared.resources, project="p", stack="s", startup_timeout=3)
    assert "stuck before serving" in str(info.value)
    assert_gone(pidfile)


def test_pack_that_crashes_mid_run_reports_the_call_and_its_stderr(
    declared: Collected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = _pidfile(tmp_path, monkeypatch)
    body = (
        PID
        + """
def die(args, report):
    sys.stderr.write("segfault-ish: the pack is going down\\n")
    sys.stderr.flush()
    os._exit(7)

PolicyPack(name="crashy", policies=[StackValidationPolicy(name="die", description="dies", validate=die)])
"""
    )
    pack = make_pack(tmp_path / "crashy", body)
    with pytest.raises(PolicyPackError) as info:
        run_policy_pack(pack, declared.resources, project="p", stack="s")
    text = str(info.value)
    assert "policy pack 'crashy' failed in AnalyzeStack: " in text
    assert "(exit status 7)" in text
    assert "segfault-ish: the pack is going down" in text
    assert_gone(pidfile)


def test_policy_that_raises_is_a_pack_failure_naming_the_call(
    declared: Collected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = _pidfile(tmp_path, monkeypatch)
    body = (
        PID
        + """
def broken(args, report):
    raise ValueError("kaboom in a resource policy")

PolicyPack(name="raiser", policies=[
    ResourceValidationPolicy(name="broken", description="b", validate=broken),
])
"""
    )
    pack = make_pack(tmp_path / "raiser", body)
    with pytest.raises(PolicyPackError) as info:
        run_policy_pack(pack, declared.resources, project="p", stack="s")
    text = str(info.value)
    assert "failed in Analyze(urn:pulumi:test::proto::" in text
    assert "kaboom in a resource policy" in text
    assert_gone(pidfile)


def test_session_always_stops_the_pack(
    declared: Collected, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pidfile = _pidfile(tmp_path, monkeypatch)
    with pytest.raises(KeyError), PolicyPackSession(TESTPACK, project="p", stack="s") as session:
        session.get_info()
        assert session.process is not None and session.process.poll() is None
        raise KeyError("the caller fails while the pack is running")
    assert session.process is not None and session.process.returncode is not None
    assert_gone(pidfile)

    # A rejected config is raised after the pack started: it is stopped as well.
    pidfile.unlink()
    with pytest.raises(KeyfenceError):
        run(declared, {"config-echo": {"limit": -1}})
    assert_gone(pidfile)
