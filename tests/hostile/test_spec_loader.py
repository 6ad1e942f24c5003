"""Hostile spec text: whatever goes in, a FleetSpec or a located SpecError comes out, quickly.

Properties over random text, a mangled example, and real fleets after hostile edits (wrong
types, missing and extra fields, duplicate keys, tags, anchors and aliases, merge keys, alias
bombs, deep nesting, huge lists, unicode); then names and key paths against an independent
restatement of Kubernetes' and Vault's rules, in both directions. Sizes are bounded so no
example is slow; there is no timing assertion anywhere (the bound on expansion is the guard).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keyfence.errors import SpecError
from keyfence.spec import MAX_SPEC_BYTES, MAX_YAML_NODES, FleetSpec, load_spec, load_spec_text
from keyfence.spec import source as spec_module
from tests.hostile import yamlgen as g
from tests.hostile.oracle import (
    SOURCE,
    assert_invariants,
    canonical_path,
    located_problems,
    outcome,
    process_name_ok,
    subaccount_name_ok,
)

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

YAML_TOKENS = [
    "version", "subaccounts", "processes", "name", "role", "key", ": ", ":", "- ", "-", "\n", "\n  ", "  ",
    "\t", "[", "]", "{", "}", ",", "&a ", "*a", "&b ", "*b", "<<: ", "!!", "!!str ", "!!map ", "!tag ", "|",
    ">", "'", '"', "#", "%YAML 1.1\n", "---\n", "...\n", "? ", "1", "true", "~", "trader", "spot", "\\",
    "\ufeff", "\x85", "\u2028", "é", "😀", "\x00", "\x1b",
]  # fmt: skip


def yaml_soup() -> st.SearchStrategy[str]:
    return st.lists(st.sampled_from(YAML_TOKENS), max_size=60).map("".join)


# --------------------------------------------------------------------------- properties over documents


@settings(FAST, max_examples=300)
@given(st.text(max_size=300) | yaml_soup())
def test_any_text_is_a_spec_or_a_located_error(text: str) -> None:
    outcome(text)


@settings(FAST, max_examples=250)
@given(g.mangled_example())
def test_a_mangled_example_is_a_spec_or_a_located_error(text: str) -> None:
    outcome(text)


@settings(FAST, max_examples=400)
@given(g.hostile_fleets())
def test_a_fleet_after_hostile_edits_is_a_spec_or_a_located_error(text: str) -> None:
    outcome(text)


@settings(FAST, max_examples=100)
@given(g.fleet_data(), st.data())
def test_a_valid_fleet_loads_in_any_style_with_its_values(data: dict[str, Any], draw: st.DataObject) -> None:
    text = g.render(g.to_ast(data, flows=lambda: draw.draw(st.booleans())))
    spec = outcome(text)
    assert isinstance(spec, FleetSpec), spec
    assert [s.name for s in spec.subaccounts] == [s["name"] for s in data["subaccounts"]]


@settings(FAST, max_examples=200)
@given(g.fleet_data(), st.data())
def test_a_repeated_key_in_any_mapping_is_an_error_at_its_second_occurrence(
    data: dict[str, Any], draw: st.DataObject
) -> None:
    doc = g.to_ast(data, flows=lambda: draw.draw(st.booleans()))
    path = draw.draw(st.sampled_from([p for p in g.maps_in(doc) if g.map_at(doc, p).pairs]))
    pairs = g.map_at(doc, path).pairs
    key, value = draw.draw(st.sampled_from(pairs))
    doc = g.with_pairs(doc, path, (*pairs, (key, value)))
    text = g.render(doc)
    result = outcome(text)
    assert isinstance(result, SpecError), "a repeated key must never be last-one-wins"
    problems = located_problems(result, text)
    assert problems and all("duplicate key" in message for _, _, message in problems)
    lines = text.splitlines()
    for line, col, _ in problems:
        assert lines[line - 1][col - 1 :].startswith(g.flow(key)), (lines[line - 1], g.flow(key))


@settings(FAST, max_examples=60)
@given(st.integers(2, 9), st.integers(2, 10))
def test_alias_bombs_are_refused_before_they_expand(depth: int, width: int) -> None:
    levels = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    levels += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]" for i in range(1, depth)]
    text = "version: 1\n" + "\n".join(levels) + "\n"
    nodes, level = 3, 1 + width  # the root mapping and 'version: 1'; level 0 is a list of scalars
    for _ in range(depth):
        nodes += 1 + level  # each level's key, and its list with every alias expanded
        level = 1 + width * level
    result = outcome(text)
    assert isinstance(result, SpecError)
    if nodes > MAX_YAML_NODES:
        assert "YAML nodes" in result.headline
    else:
        assert "unknown field 'l0'" in str(result)


# --------------------------------------------------------------------------- names and key paths

NAME_PIECES = [
    "a", "z", "0", "9", "-", "--", "A", "Z", "_", ".", " ", "\t", "\n", "\r\n", "é", "ß", "😀",
    "\u0430", "\uff4e", "\u200b", "\x00", "/", ":", "kube-", "default",
]  # fmt: skip


def names() -> st.SearchStrategy[str]:
    """Names near every limit: 46/47 and 63/64 characters, case, unicode, separators, reserved words."""
    at_limits = st.sampled_from([45, 46, 47, 62, 63, 64]).flatmap(
        lambda n: st.from_regex(rf"[a-z0-9][-a-z0-9]{{{n - 2}}}[a-z0-9]", fullmatch=True)
    )
    return st.one_of(
        at_limits,
        st.from_regex(r"[a-z0-9][-a-z0-9]{0,20}[a-z0-9]", fullmatch=True),
        st.lists(st.sampled_from(NAME_PIECES), max_size=12).map("".join),
        st.sampled_from(["default", "kube-system", "kube-x", "kube", "-a", "a-", "a--b", "", "a\n", "A"]),
    )


NAMES_SPEC = """\
version: 1
subaccounts:
  - name: {sub}
    venue: futures
    processes:
      - name: {proc}
        role: trader
        image: ghcr.io/acme/x:1.0
"""


@settings(FAST, max_examples=300)
@given(names(), names())
def test_names_are_accepted_exactly_when_kubernetes_would_accept_them(sub: str, proc: str) -> None:
    text = NAMES_SPEC.format(sub=g.quote(sub), proc=g.quote(proc))
    fits = len(sub) + 1 + len(proc) <= 63
    result = outcome(text)
    if isinstance(result, FleetSpec):
        assert subaccount_name_ok(sub) and process_name_ok(proc) and fits
        return
    where = {line for line, _, _ in located_problems(result, text)}
    assert where <= {3, 6}, result
    assert not subaccount_name_ok(sub) or not process_name_ok(proc) or not fits, result
    if not subaccount_name_ok(sub):
        assert 3 in where
    if not process_name_ok(proc) or not fits:
        assert 6 in where


PATH_PIECES = [
    "kraken", "momentum", "Exec-2", "a.b", "a_b", "v1", "..", ".", "...", "%2e%2e", "%2E%2E", "%2f", "%2F",
    "%252e", "..%2f", "a%20b", "\\", "..\\..", "a\\b", " ", " a", "a ", "\t", "\x00", "\n", "é", "~", "$HOME",
    "a:b", "?", "#", "*", "", "-a", "_a", ".hidden", "C:", "a\r", "v2\n", "\u2028", "etc", "passwd",
]  # fmt: skip


GOOD_PIECES = ["kraken", "alpha", "v2", "a.b", "x_y-1"]


def key_paths() -> st.SearchStrategy[str]:
    """Vault paths: absolute, doubled and trailing '/', '..', URL-encoded, backslash, NUL, blanks."""
    return st.builds(
        lambda lead, parts, trail: ("/" if lead else "") + "/".join(parts) + ("/" if trail else ""),
        st.booleans(),
        st.lists(st.sampled_from(PATH_PIECES) | st.sampled_from(GOOD_PIECES), max_size=5),
        st.booleans(),
    )


KEY_SPEC = """\
version: 1
vault:
  mount: {mount}
  prefix: {prefix}
subaccounts:
  - name: alpha
    venue: futures
    processes:
      - name: exec
        role: trader
        image: ghcr.io/acme/x:1.0
        key: {key}
"""


@settings(FAST, max_examples=300)
@given(st.sampled_from(["key", "mount", "prefix"]), key_paths())
def test_key_paths_never_climb_or_hide_behind_encoding(field: str, raw: str) -> None:
    values = {"mount": "secret", "prefix": "kraken", "key": "kraken/alpha/exec", field: raw}
    text = KEY_SPEC.format(**{k: g.quote(v) for k, v in values.items()})
    expected = canonical_path(raw)
    result = outcome(text)
    if isinstance(result, FleetSpec):
        assert expected is not None, f"{raw!r} was accepted"
        chosen = {
            "key": result.entries()[0].key_path,
            "mount": result.vault.mount,
            "prefix": result.vault.prefix,
        }
        assert chosen[field] == expected
        return
    line = {"mount": 3, "prefix": 4, "key": 12}[field]
    assert expected is None, result
    assert {where for where, _, _ in located_problems(result, text)} == {line}, result


def test_absolute_and_doubled_paths_stay_inside_the_mount() -> None:
    spec = load_spec_text(KEY_SPEC.format(mount="secret", prefix="kraken", key="'//etc//passwd/'"), SOURCE)
    assert spec.entries()[0].key_path == "etc/passwd"


# --------------------------------------------------------------------------- files


@settings(FAST, max_examples=80)
@given(st.binary(max_size=400) | yaml_soup().map(lambda t: t.encode("utf-8", "surrogatepass")))
def test_any_file_is_a_spec_or_an_error_naming_it(raw: bytes) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        path = Path(workdir) / "fleet.yaml"
        path.write_bytes(raw)
        try:
            spec = load_spec(path)
        except SpecError as exc:
            assert exc.headline.startswith(f"{path}"), exc.headline
            text = raw.decode("utf-8", "replace")
            located_problems(exc, text, str(path))
        else:
            assert_invariants(spec)


def test_a_file_is_read_only_up_to_the_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as stream:
        stream.truncate(MAX_SPEC_BYTES + 1)  # sparse: costs no disk
    with pytest.raises(SpecError, match=r"larger than 4 MiB"):
        load_spec(big)
    if os.path.exists("/dev/zero"):
        with pytest.raises(SpecError, match=r"/dev/zero: the spec is larger than 4 MiB"):
            load_spec("/dev/zero")  # endless: only a bounded read can answer


# --------------------------------------------------------------------------- each crash found, pinned

BASE = """\
version: 1
subaccounts:
  - name: alpha
    venue: futures
    processes:
      - name: exec
        role: trader
        image: ghcr.io/acme/x:1.0
"""


@pytest.mark.parametrize(
    ("text", "where", "says"),
    [
        ("version: !!int abc\n", "1:10", "cannot be read as !!int"),
        ("version: !!float abc\n", "1:10", "cannot be read as !!float"),
        ("version: !!bool maybe\n", "1:10", "cannot be read as !!bool"),
        ("version: !!timestamp nope\n", "1:10", "cannot be read as !!timestamp"),
        ("version: 1\nsubaccounts: 2001-02-30\n", "2:14", "cannot be read as !!timestamp"),
        ("version: !!map abc\n", "1:10", "!!map needs a mapping, found a scalar"),
        ("version: !!map [a, b]\n", "1:10", "!!map needs a mapping, found a list"),
        ("version: !!seq abc\n", "1:10", "!!seq needs a list, found a scalar"),
        ("version: !!seq {a: b}\n", "1:10", "!!seq needs a list, found a mapping"),
        ("version: " + "9" * 5000 + "\n", "1:10", "an integer of 5000 characters"),
        ("version: 0x" + "f" * 5000 + "\n", "1:10", "an integer of 5002 characters"),
        ("version: 1" + ":1" * 200_000 + "\n", "1:10", "an integer of 400001 characters"),
        ("version: 1\x00\n", "1:11", "character U+0000 is not allowed"),
        ("version: 1\nsubaccounts: []\n\x1b[2J\n", "3:1", "character U+001B is not allowed"),
        ('version: "\\ud800"\n', "1:10", "half a surrogate pair"),
        ("version: [" + ",".join(["1"] * 200_100) + "]\n", "1:", "more than 200000 YAML nodes"),
    ],
    ids=[
        "int-tag",
        "float-tag",
        "bool-tag",
        "timestamp-tag",
        "impossible-date",
        "map-tag-on-scalar",
        "map-tag-on-list",
        "seq-tag-on-scalar",
        "seq-tag-on-map",
        "long-decimal",
        "long-hex",
        "long-sexagesimal",
        "nul",
        "escape-character",
        "lone-surrogate",
        "over-200k-nodes",
    ],
)
def test_inputs_that_used_to_crash_or_stall_are_located_errors(text: str, where: str, says: str) -> None:
    with pytest.raises(SpecError) as err:
        load_spec_text(text, SOURCE)
    assert str(err.value).startswith(f"{SOURCE}:{where}"), str(err.value)[:300]
    assert says in str(err.value)
    located_problems(err.value, text)


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (BASE.replace("- name: alpha", '- name: "alpha\\n"'), 3),
        (BASE.replace("- name: exec", '- name: "exec\\n"'), 6),
        (BASE + '        env: {"LOG\\n": x}\n', 9),
        (BASE + '        key: "kraken/a\\n"\n', 9),
        (BASE + '        resources: {requests: {cpu: "1\\n"}}\n', 9),
    ],
    ids=["subaccount", "process", "env", "key", "quantity"],
)
def test_a_trailing_newline_does_not_slip_through_a_pattern(text: str, line: int) -> None:
    """``$`` matches before a final newline, so ``"exec\\n"`` passed as a DNS label until ``\\Z``."""
    with pytest.raises(SpecError) as err:
        load_spec_text(text, SOURCE)
    assert [where for where, _, _ in located_problems(err.value, text)] == [line], str(err.value)


def test_overriding_merged_keys_costs_one_construction_per_key(monkeypatch: pytest.MonkeyPatch) -> None:
    """Overrides of merged-in keys used to rescan the mapping's own keys once each: quadratic, tens
    of seconds for 20,000 keys. Counted in constructor calls, not seconds."""
    calls = 0
    original = spec_module._LocatingLoader.construct_object

    def counting(self: Any, node: Any, deep: bool = False) -> Any:
        nonlocal calls
        calls += 1
        return original(self, node, deep)

    monkeypatch.setattr(spec_module._LocatingLoader, "construct_object", counting)
    keys = ", ".join(f"k{i}: 1" for i in range(2000))
    merged = f"base: &b {{{keys}}}\nover: {{<<: *b, {keys}}}\n"
    with pytest.raises(SpecError) as err:
        load_spec_text(merged, SOURCE)
    assert "duplicate" not in str(err.value), "overriding a merged-in key is not a duplicate"
    assert calls < 4 * 2 * 2000 + 100, calls


def test_a_long_permission_list_is_one_short_problem() -> None:
    many = BASE + "        permissions: [" + ", ".join(f"p{i}" for i in range(30_000)) + "]\n"
    with pytest.raises(SpecError) as err:
        load_spec_text(many, SOURCE)
    (problem,) = located_problems(err.value, many)
    assert "not futures permission ids: p0, p1" in problem[2] and "..." in problem[2]


def test_merging_a_process_and_overriding_its_name_is_not_a_duplicate() -> None:
    text = (
        BASE.replace(
            "      - name: exec\n",
            "      - &proc\n        name: exec\n",
        )
        + "      - <<: *proc\n        name: exec2\n        key: kraken/alpha/exec2\n"
    )
    spec = load_spec_text(text, SOURCE)
    assert [e.ref for e in spec.entries()] == ["alpha/exec", "alpha/exec2"]
