"""libyaml reads a spec exactly as the Python parser does: the same document, the same error.

The spec loader lets libyaml scan and parse the text (several times less CPU on a large spec)
and keeps PyYAML's Python composer, guard and constructors. These properties run every kind
of text the hostile tests use through both parsers and compare the whole outcome: the data,
every recorded line and column, or the error's every word.
"""

from __future__ import annotations

import sys
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from keyfence.errors import SpecError
from keyfence.spec import MAX_YAML_NODES, load_spec_text
from keyfence.spec import source as source_module
from keyfence.spec.source import MAX_YAML_DEPTH
from tests.hostile import yamlgen as g
from tests.hostile.test_spec_loader import FAST, yaml_soup

SOURCE = "parity.yaml"


def located(value: Any) -> Any:
    """The value with every recorded (line, column) beside it, for comparing two parses whole."""
    if isinstance(value, source_module.LocatedDict):
        return ("map", value.marks, {key: located(item) for key, item in value.items()})
    if isinstance(value, source_module.LocatedList):
        return ("seq", value.marks, [located(item) for item in value])
    return (type(value).__name__, value)


def parse(text: str) -> Any:
    try:
        return located(source_module.parse_yaml(text, SOURCE))
    except SpecError as exc:
        return ("error", str(exc), exc.problems)


def python_only(text: str) -> Any:
    fast = source_module._FAST_LOADER
    source_module._FAST_LOADER = None
    try:
        return parse(text)
    finally:
        source_module._FAST_LOADER = fast


def assert_parity(text: str) -> None:
    assert parse(text) == python_only(text)


def test_libyaml_is_there_to_be_used() -> None:
    """PyYAML's wheels ship libyaml; without it the loader works, at the Python parser's speed."""
    assert yaml.__with_libyaml__
    assert source_module._FAST_LOADER is not None


def test_a_valid_spec_is_read_by_libyaml(monkeypatch: pytest.MonkeyPatch) -> None:
    fast = source_module._FAST_LOADER
    assert fast is not None
    used: list[str] = []

    def counted(text: str) -> Any:
        used.append(text)
        return fast(text)

    monkeypatch.setattr(source_module, "_FAST_LOADER", counted)
    text = "version: 1\nsubaccounts:\n  - name: alpha\n    processes:\n      - {name: maker, role: trader}\n"
    assert isinstance(source_module.parse_yaml(text, SOURCE), dict)
    assert used == [text]


@settings(FAST, max_examples=300)
@given(st.text(max_size=300) | yaml_soup())
def test_any_text_reads_the_same(text: str) -> None:
    assert_parity(text)


@settings(FAST, max_examples=150)
@given(g.mangled_example())
def test_a_mangled_example_reads_the_same(text: str) -> None:
    assert_parity(text)


@settings(FAST, max_examples=200)
@given(g.hostile_fleets())
def test_a_fleet_after_hostile_edits_reads_the_same(text: str) -> None:
    assert_parity(text)


@pytest.mark.parametrize(
    "text",
    [
        "a: &x {b: 1}\nc:\n  <<: *x\n  d: 2\n",  # merge keys
        "a: 1\na: 2\n",  # a duplicate key
        "a: !!int abc\n",  # a value its tag cannot read
        "a: !!python/object:os.system x\n",  # an unsafe tag
        "a: yes\nb: 0100\nc: 1e3\nd: 2001-02-03\ne: ~\nf: 0x1f\ng: 1_000\n",  # YAML 1.1 scalars
        "\ufeffa: 1\n",  # a byte order mark
        "a:\n\t- b\n",  # a tab
        "a: 'unclosed\n",
        "a: [1, 2\n",
        "a: *nowhere\n",
        "--- 1\n--- 2\n",
        "a: 1\r\nb: é😀\r\n  c: 2\n",
        'a: "\\ud800"\n',  # half a surrogate pair
        "a: b\x00c\n",  # a character YAML forbids
        "a: b\x85c\u2028d\n",
        "",
        "# only a comment\n",
        "[" * 500 + "]" * 500,
        'a: "\\U00110000"\n',  # an escape past U+10FFFF: PyYAML's scanner raised ValueError
        'a: ["x", "\\UFFFFFFFF"]\n',  # and OverflowError
        "a: |#\n",  # a block scalar header, then '#' with no space: PyYAML refuses it, libyaml took a comment
        "a: >-#c\n  x\n",
        "- |2#\n   x\n",
    ],
)
def test_edge_cases_read_the_same(text: str) -> None:
    assert_parity(text)


def test_the_node_guard_stops_libyaml_as_it_stops_python() -> None:
    """A huge flow list is refused while it is composed, through libyaml too."""
    text = "version: 1\nsubaccounts: [" + ", ".join(["x"] * (MAX_YAML_NODES + 10)) + "]\n"
    with pytest.raises(SpecError, match="YAML nodes"):
        load_spec_text(text, SOURCE)
    assert_parity(text)


@settings(FAST, max_examples=150)
@given(
    st.sampled_from(["a: ", "- ", "", "--- ", "a:\n  - "]),
    st.sampled_from("|>"),
    st.from_regex(r"[-+1-9 ]{0,3}", fullmatch=True),
    st.sampled_from(["#", "#c", " #c", "x", " ", ""]),
    st.sampled_from(["\n  x\n", "\n", "", "\n  x\n  #y\n"]),
)
def test_a_block_scalar_header_reads_the_same(
    lead: str, style: str, indicators: str, tail: str, body: str
) -> None:
    """What may follow ``|`` or ``>`` and its indicators on the header line."""
    assert_parity(lead + style + indicators + tail + body)


def nested(shape: str, depth: int) -> str:
    if shape == "flow list":
        return "[" * depth + "]" * depth
    if shape == "flow mapping":
        return "{a: " * depth + "1" + "}" * depth
    if shape == "block list":
        return "".join("  " * i + "-\n" for i in range(depth)) + "  " * depth + "x\n"
    return "".join("  " * i + "a:\n" for i in range(depth)) + "  " * depth + "x\n"


@pytest.mark.parametrize("shape", ["flow list", "flow mapping", "block list", "block mapping"])
def test_any_nesting_depth_reads_the_same(shape: str) -> None:
    """The Python parser's frames sit on the composer's stack, libyaml's do not: with Python's recursion
    limit as the only bound, a few depths were refused by one parser and read by the other. Every
    depth around the bound, then a sample up to half the recursion limit (that the bound holds at
    every depth is the next test's)."""
    depths = [*range(1, MAX_YAML_DEPTH + 9), *range(MAX_YAML_DEPTH + 9, sys.getrecursionlimit() // 2, 17)]
    for depth in depths:
        assert_parity(nested(shape, depth))


def test_nesting_past_the_bound_is_refused_where_it_goes_too_deep() -> None:
    """The scalars at the bottom count as a level; the mark is the first node past the bound."""
    source_module.parse_yaml(nested("block mapping", MAX_YAML_DEPTH - 1), SOURCE)
    too_deep = (
        rf"^{SOURCE}:{MAX_YAML_DEPTH}:{2 * MAX_YAML_DEPTH - 1}: .* more than {MAX_YAML_DEPTH} levels deep"
    )
    with pytest.raises(SpecError, match=too_deep):
        source_module.parse_yaml(nested("block mapping", MAX_YAML_DEPTH), SOURCE)


def test_an_escape_past_the_last_character_is_refused_at_its_line() -> None:
    with pytest.raises(SpecError, match=r"^parity.yaml:2:8: invalid YAML: this \\U escape names no"):
        source_module.parse_yaml('a: 1\nb: "x\\U00110000"\n', SOURCE)
