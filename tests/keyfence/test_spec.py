"""Fleet spec validation: each rule, reported with the YAML location of the problem."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from keyfence.errors import SpecError
from keyfence.spec import Process, load_spec, load_spec_text
from tests.fleet_fixtures import EXAMPLE_SPEC

BASE = """\
version: 1
subaccounts:
  - name: main
    master: true
    venue: spot
    processes:
      - name: treasury
        role: treasury
        image: ghcr.io/acme/treasury:2.1.0
  - name: momentum
    venue: futures
    processes:
      - name: executor
        role: trader
        image: ghcr.io/acme/momentum:1.4.2
"""


def problems(text: str) -> list[str]:
    with pytest.raises(SpecError) as err:
        load_spec_text(textwrap.dedent(text), "fleet.yaml")
    return err.value.problems or [err.value.headline]


def one_problem(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def test_example_spec_is_valid() -> None:
    spec = load_spec(EXAMPLE_SPEC)
    refs = [e.ref for e in spec.entries()]
    assert len(refs) == len(set(refs)) >= 5
    assert {s.venue for s in spec.subaccounts} == {"spot", "futures"}


def test_defaults_and_canonical_key_paths() -> None:
    spec = load_spec_text(BASE + "        key: /kraken//momentum/Exec-2/\n", "f.yaml")
    entries = {e.ref: e for e in spec.entries()}
    assert spec.vault.mount == "secret" and spec.vault.prefix == "kraken"
    assert entries["main/treasury"].key_path == "kraken/main/treasury"
    assert entries["momentum/executor"].key_path == "kraken/momentum/Exec-2", "case is kept"
    assert entries["momentum/executor"].location.line == 13


def test_unknown_field_is_an_error_with_location() -> None:
    msg = one_problem(
        BASE.replace("        role: trader", "        role: trader\n        permisions: [general-full]")
    )
    assert msg.startswith("fleet.yaml:15:9: subaccounts[1].processes[0].permisions: unknown field")


def test_replicas_gets_a_nonce_explanation() -> None:
    msg = one_problem(BASE.replace("        role: trader", "        role: trader\n        replicas: 2"))
    assert "nonce" in msg and ":15:9:" in msg


@pytest.mark.parametrize("name", ["Executor", "exec_1", "-x", "x-", "a" * 47])
def test_process_names_are_dns_labels_that_fit(name: str) -> None:
    msg = one_problem(BASE.replace("name: executor", f"name: '{name}'"))
    assert msg.startswith("fleet.yaml:13:9: subaccounts[1].processes[0].name:")


def test_subaccount_name_reserved_namespace() -> None:
    msg = one_problem(BASE.replace("name: momentum", "name: kube-system"))
    assert "reserved" in msg and msg.startswith("fleet.yaml:10:")


def test_duplicate_subaccount_and_process_and_master() -> None:
    text = BASE + textwrap.indent(
        textwrap.dedent("""\
        - name: momentum
          master: true
          venue: futures
          processes:
            - {name: a, role: trader, image: 'x:1'}
            - {name: a, role: risk, image: 'x:1'}
        """),
        "  ",
    )
    found = problems(text)
    joined = "\n".join(found)
    assert "fleet.yaml:16:" in joined and "already defined at subaccounts[1]" in joined
    assert "only one subaccount may be the master" in joined
    assert "process 'a' is already defined" in joined


def test_spot_subaccount_needs_institutional() -> None:
    text = BASE.replace("venue: futures", "venue: spot")
    msg = one_problem(text)
    assert msg.startswith("fleet.yaml:11:") and "institutional" in msg
    load_spec_text(
        text.replace(
            "venue: spot\n    processes:\n      - name: executor",
            "venue: spot\n    institutional: true\n    processes:\n      - name: executor",
        ),
        "f",
    )


def test_two_processes_may_not_name_the_same_key_path() -> None:
    text = BASE + "        key: kraken//main/treasury/\n"
    msg = one_problem(text)
    assert msg.startswith("fleet.yaml:16:9: subaccounts[1].processes[0].key:")
    assert "main/treasury" in msg and "nonce" in msg


def test_key_paths_differing_in_case_are_different_keys() -> None:
    load_spec_text(BASE + "        key: kraken/Main/treasury\n", "f")


@pytest.mark.parametrize(
    "path", ["kraken/../main/treasury", "./x", "kraken/%2e%2e/x", "kraken\\x", "kraken/ x", "///"]
)
def test_key_path_traversal_and_encoding_rejected(path: str) -> None:
    msg = one_problem(BASE + f"        key: '{path}'\n")
    assert msg.startswith("fleet.yaml:16:")


def test_permissions_within_role_and_venue() -> None:
    msg = one_problem(BASE + "        permissions: [general-full, withdrawal]\n")
    assert "withdrawal" in msg and "subaccounts" in msg and msg.startswith("fleet.yaml:16:")
    msg = one_problem(BASE + "        permissions: [query-funds]\n")
    assert "not futures permission ids: query-funds" in msg
    msg = one_problem(
        BASE.replace("role: trader", "role: market-data") + "        permissions: [general-full]\n"
    )
    assert "market-data" in msg and "general-read" in msg


def test_withdrawals_only_for_master_treasury_with_flag() -> None:
    ok = BASE.replace(
        "image: ghcr.io/acme/treasury:2.1.0",
        "image: ghcr.io/acme/treasury:2.1.0\n        allow_withdrawals: true\n"
        "        permissions: [withdraw-funds, query-funds]",
    )
    load_spec_text(ok, "f")
    msg = one_problem(ok.replace("        allow_withdrawals: true\n", ""))
    assert "withdraw-funds" in msg and "allow_withdrawals" in msg
    msg = one_problem(BASE + "        allow_withdrawals: true\n")
    assert "only for role treasury on the master" in msg


def test_env_plain_values_only() -> None:
    msg = one_problem(BASE + "        env:\n          KRAKEN_API_SECRET: abc\n")
    assert "credential" in msg
    msg = one_problem(BASE + "        env:\n          PORT: 8080\n")
    assert "quote it" in msg


def test_image_must_be_pinned() -> None:
    msg = one_problem(BASE.replace("momentum:1.4.2", "momentum:latest"))
    assert "pinned" in msg
    load_spec_text(BASE.replace("momentum:1.4.2", "momentum@sha256:" + "a" * 64), "f")


def test_requests_above_limits() -> None:
    msg = one_problem(
        BASE + "        resources:\n          requests: {cpu: '2'}\n          limits: {cpu: 500m}\n"
    )
    assert "above its limit" in msg


def test_all_problems_reported_at_once_sorted_by_line() -> None:
    text = BASE.replace("name: executor", "name: Executor").replace("role: treasury", "role: janitor")
    text = text.replace("version: 1", "version: 1\nextra: true")
    found = problems(text)
    assert len(found) == 3
    lines = [int(p.split(":")[1]) for p in found]
    assert lines == sorted(lines)


def test_duplicate_mapping_keys_are_errors() -> None:
    msg = one_problem(BASE.replace("        role: trader", "        role: trader\n        role: risk"))
    assert "duplicate key 'role'" in msg and ":15:9:" in msg


def test_alias_bomb_is_refused_quickly() -> None:
    levels = ['a: &a ["x","x","x","x","x","x","x","x","x","x"]']
    for i in range(1, 9):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        levels.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 10) + "]")
    msg = one_problem("\n".join(levels) + "\n")
    assert "aliases" in msg


def test_invalid_yaml_names_line() -> None:
    msg = one_problem("version: 1\nsubaccounts: [\n")
    assert msg.startswith("fleet.yaml:") and "invalid YAML" in msg


def test_missing_file_and_not_a_mapping(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n")
    with pytest.raises(SpecError, match="must be a mapping"):
        load_spec(tmp_path / "list.yaml")
    (tmp_path / "bin.yaml").write_bytes(b"\xff\xfe\x00")
    with pytest.raises(SpecError, match="not UTF-8"):
        load_spec(tmp_path / "bin.yaml")


# How scalars read is part of the contract: a loader swap must not change it silently (the docstring
# of keyfence/spec/source.py says why ruamel.yaml's round-trip loader was not taken up).
EXECUTOR = "role: trader\n"


def executor(text: str) -> Process:
    return load_spec_text(text, "fleet.yaml").subaccounts[1].processes[0]


@pytest.mark.parametrize("written", ["yes", "On", "&m true"])
def test_yaml_1_1_booleans_and_anchored_ones_are_booleans(written: str) -> None:
    assert load_spec_text(BASE.replace("master: true", f"master: {written}")).subaccounts[0].master is True


def test_y_and_n_stay_text() -> None:
    env = executor(BASE.replace(EXECUTOR, EXECUTOR + "        env: {FLAG: y, OTHER: n}\n")).env
    assert env == {"FLAG": "y", "OTHER": "n"}


@pytest.mark.parametrize(("written", "read"), [("0100", "64"), ("1:30", "90")], ids=["octal", "base-60"])
def test_yaml_1_1_integers_keep_their_value(written: str, read: str) -> None:
    line = f"        resources: {{limits: {{memory: {written}}}}}\n"
    proc = executor(BASE.replace(EXECUTOR, EXECUTOR + line))
    assert proc.resources is not None and proc.resources.limits is not None
    assert proc.resources.limits.memory == read


def test_merged_in_keys_come_first_then_the_mappings_own() -> None:
    """The env order reaches the Deployment, so reordering it would roll every pod."""
    text = BASE.replace("role: treasury\n", "role: treasury\n        env: &common {A: a, Z: z}\n")
    text = text.replace(EXECUTOR, EXECUTOR + "        env: {<<: *common, B: b, A: own}\n")
    assert list(executor(text).env.items()) == [("A", "own"), ("Z", "z"), ("B", "b")]


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("env: {FLAG: on}", "expected text, got true (a boolean)"),
        ("resources: {limits: {memory: 1e3}}", "'1e3' is not a Kubernetes"),
        ("env: !!python/object:os.system {FLAG: x}", "could not determine a constructor"),
        ("env: !local {FLAG: x}", "could not determine a constructor"),
        ("env: {[A]: x}", "a mapping key must be a plain scalar"),
    ],
    ids=["on-is-a-bool", "1e3-is-text", "python-tag", "local-tag", "list-key"],
)
def test_yaml_1_1_readings_and_odd_tags_are_located_errors(line: str, says: str) -> None:
    msg = one_problem(BASE.replace(EXECUTOR, f"{EXECUTOR}        {line}\n"))
    assert msg.startswith("fleet.yaml:15:") and says in msg, msg
