"""Hypothesis strategies that write hostile YAML for the fleet spec loader.

PyYAML's emitter only writes documents it could load back; hostile input needs exactly what
it refuses to write: duplicate keys, tags of any name, aliases anywhere (before their anchor,
inside it), merge keys onto scalars. So documents are built as a tiny YAML syntax tree,
mutated there, and rendered by hand: block style where a person would write it, flow style
where the strategy says so.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeAlias

from hypothesis import strategies as st
from keyfence_policies import permissions as perms

ROOT = Path(__file__).resolve().parent.parent.parent
EXAMPLE_TEXT = (ROOT / "examples" / "fleet.yaml").read_text(encoding="utf-8")


# --------------------------------------------------------------------------- the syntax tree


@dataclass(frozen=True)
class Scalar:
    """A scalar exactly as written in the document: plain, quoted, or with a tag in front."""

    text: str


@dataclass(frozen=True)
class Seq:
    items: tuple[Node, ...]
    flow: bool = False


@dataclass(frozen=True)
class Map:
    pairs: tuple[tuple[Node, Node], ...]
    """Pairs, not a dict: a duplicate key is something to write, not to lose."""
    flow: bool = False


@dataclass(frozen=True)
class Anchor:
    name: str
    node: Node


@dataclass(frozen=True)
class Alias:
    name: str


@dataclass(frozen=True)
class Tag:
    tag: str
    node: Node


Node: TypeAlias = Scalar | Seq | Map | Anchor | Alias | Tag
NodePath: TypeAlias = tuple[tuple[str, int], ...]
"""Steps from the root: ("k", i) / ("v", i) into a Map's i-th pair, ("i", i) into a Seq, ("n", 0) inside
an Anchor or Tag."""


# --------------------------------------------------------------------------- scalars

_PLAIN = re.compile(r"[A-Za-z0-9_./][A-Za-z0-9_./-]*")
_YAML_RAW_OK = re.compile("[\u00a0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]")
"""Non-ASCII characters PyYAML reads as they are (printable, not a line break, not a BOM)."""


def quote(text: str) -> str:
    """A double-quoted YAML scalar for any string: escapes whatever the reader would refuse.

    Astral characters are escaped whole (``\\U``): PyYAML turns a ``\\u`` surrogate pair into two
    lone surrogates, which is its own hostile input, generated on purpose elsewhere.
    """
    out = []
    for char in text:
        code = ord(char)
        if char in '"\\':
            out.append("\\" + char)
        elif 0x20 <= code < 0x7F or _YAML_RAW_OK.fullmatch(char):
            out.append(char)
        elif code <= 0xFF:
            out.append(f"\\x{code:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return '"' + "".join(out) + '"'


def scalar(value: Any) -> Scalar:
    """A Python value as the YAML scalar that loads back as it (strings quoted unless plainly safe)."""
    if value is None:
        return Scalar("null")
    if isinstance(value, bool):
        return Scalar("true" if value else "false")
    if isinstance(value, (int, float)):
        return Scalar(repr(value))
    text = str(value)
    resolves_as_string = _PLAIN.fullmatch(text) and not re.fullmatch(
        r"[-+0-9._:]+|0[xob][0-9a-f_]+|(?i:y|n|yes|no|on|off|true|false|null|~|\.inf|\.nan)", text
    )
    return Scalar(text if resolves_as_string else quote(text))


def to_ast(value: Any, flows: Callable[[], bool] | None = None) -> Node:
    """A Python tree (dicts, lists, scalars) as a syntax tree; ``flows`` picks flow style per collection."""
    flow = flows() if flows else False
    if isinstance(value, dict):
        return Map(tuple((scalar(k), to_ast(v, flows)) for k, v in value.items()), flow)
    if isinstance(value, list):
        return Seq(tuple(to_ast(v, flows) for v in value), flow)
    return scalar(value)


# --------------------------------------------------------------------------- rendering


def _peel(node: Node) -> tuple[str, Node]:
    """Anchors and tags in front of a node, and the node they decorate."""
    props = []
    while isinstance(node, (Anchor, Tag)):
        props.append(f"&{node.name}" if isinstance(node, Anchor) else node.tag)
        node = node.node
    return " ".join(props), node


def flow(node: Node) -> str:
    prefix, inner = _peel(node)
    if isinstance(inner, Scalar):
        body = inner.text
    elif isinstance(inner, Alias):
        body = f"*{inner.name}"
    elif isinstance(inner, Seq):
        body = "[" + ", ".join(flow(i) for i in inner.items) + "]"
    else:
        assert isinstance(inner, Map)  # _peel took every Anchor and Tag off
        body = "{" + ", ".join(f"{flow(k)} : {flow(v)}" for k, v in inner.pairs) + "}"
    return f"{prefix} {body}" if prefix else body


def _is_block(node: Node) -> bool:
    _, inner = _peel(node)
    if isinstance(inner, Seq):
        return not inner.flow and bool(inner.items)
    return isinstance(inner, Map) and not inner.flow and bool(inner.pairs)


def _block(node: Node, indent: int) -> list[str]:
    pad = " " * indent
    _, inner = _peel(node)
    lines: list[str] = []
    if isinstance(inner, Map):
        for key, value in inner.pairs:
            head = f"{pad}{flow(key)}:"
            if _is_block(value):
                prefix, _ = _peel(value)
                lines.append(f"{head} {prefix}".rstrip())
                lines += _block(value, indent + 2)
            else:
                lines.append(f"{head} {flow(value)}")
        return lines
    assert isinstance(inner, Seq)
    for item in inner.items:
        if _is_block(item):
            prefix, _ = _peel(item)
            lines.append(f"{pad}- {prefix}".rstrip())
            lines += _block(item, indent + 2)
        else:
            lines.append(f"{pad}- {flow(item)}")
    return lines


def render(node: Node) -> str:
    """The document's text: block style at the top unless the root is a flow collection or scalar."""
    if not _is_block(node):
        return flow(node) + "\n"
    prefix, _ = _peel(node)
    head = [f"--- {prefix}"] if prefix else []
    return "\n".join(head + _block(node, 0)) + "\n"


# --------------------------------------------------------------------------- walking and editing


def paths(node: Node, here: NodePath = ()) -> list[NodePath]:
    """Every node's path, in document order (a key before its value)."""
    out = [here]
    if isinstance(node, (Anchor, Tag)):
        out += paths(node.node, (*here, ("n", 0)))
    elif isinstance(node, Seq):
        for i, item in enumerate(node.items):
            out += paths(item, (*here, ("i", i)))
    elif isinstance(node, Map):
        for i, (key, value) in enumerate(node.pairs):
            out += paths(key, (*here, ("k", i)))
            out += paths(value, (*here, ("v", i)))
    return out


def at(node: Node, path: NodePath) -> Node:
    for step, i in path:
        if isinstance(node, (Anchor, Tag)):
            node = node.node
        elif isinstance(node, Seq):
            node = node.items[i]
        else:
            assert isinstance(node, Map)
            node = node.pairs[i][0 if step == "k" else 1]
    return node


def edit(node: Node, path: NodePath, change: Callable[[Node], Node]) -> Node:
    """A copy of the tree with the node at ``path`` replaced by ``change(node)``."""
    if not path:
        return change(node)
    (step, i), rest = path[0], path[1:]
    if isinstance(node, (Anchor, Tag)):
        return replace(node, node=edit(node.node, rest, change))
    if isinstance(node, Seq):
        items = list(node.items)
        items[i] = edit(items[i], rest, change)
        return replace(node, items=tuple(items))
    assert isinstance(node, Map)
    pairs = list(node.pairs)
    key, value = pairs[i]
    pairs[i] = (edit(key, rest, change), value) if step == "k" else (key, edit(value, rest, change))
    return replace(node, pairs=tuple(pairs))


def maps_in(node: Node) -> list[NodePath]:
    return [p for p in paths(node) if isinstance(at(node, p), Map)]


def map_at(node: Node, path: NodePath) -> Map:
    found = at(node, path)
    assert isinstance(found, Map), found
    return found


def with_pairs(node: Node, path: NodePath, pairs: tuple[tuple[Node, Node], ...]) -> Node:
    """The tree with the mapping at ``path`` holding ``pairs`` (its style kept)."""
    return edit(node, path, lambda old: replace(map_at(old, ()), pairs=pairs))


# --------------------------------------------------------------------------- values that do not belong

TAGS = [
    "!!str", "!!int", "!!float", "!!bool", "!!null", "!!binary", "!!timestamp", "!!map", "!!seq",
    "!!set", "!!omap", "!!pairs", "!!merge", "!!value", "!!python/object:os.system",
    "!!python/object/apply:os.system", "!!python/name:builtins.eval", "!!python/tuple",
    "!!python/module:os", "!local", "!<tag:example.com,2000:x>", "!<tag:yaml.org,2002:str>", "!e!undefined",
]  # fmt: skip

ODD_SCALARS = [
    "~", "null", "Null", "true", "False", "yes", "No", "on", "OFF", "y", "n", "0", "-1", "+12", "007",
    "1.5", "-0.0", "1e3", "6.8523015e+5", ".inf", "-.Inf", ".nan", "0x1F", "0o17", "0b1011", "1_000",
    "190:20:30", "-1:00", "2001-12-14", "2001-12-14t21:59:43.10-05:00", "2001-02-30", "2001-13-01",
    "''", '""', '" "', '"\\0"', '"\\t"', '"a\\nb"', '"trailing\\n"', '"\\e[31mred"', '"\\u00e9t\\u00e9"',
    '"\\U0001F600"', '"\\ud83d\\ude00"', '"\\udfff"', "'it''s'", "!!binary aGVsbG8=", "!!binary '!!!'",
    "!!int abc", "!!int 0xZZ", "!!float x", "!!bool maybe", "!!timestamp nope", "!!null not-null",
    "!!str 12", "!!python/object:os.system ''", "!!python/name:os.system ''",
    "!!python/object/apply:os.system ['true']", "!custom x", "!<tag:yaml.org,2002:str> 7", "=", "<<",
    "9" * 30, "9" * 70, "0x" + "f" * 70, "1" + ":1" * 40, "-" * 3, "'%2e%2e'", "'..'", "'/etc/passwd'",
    '"\\x85"', '"\\u2028"', '"\\ufeff"',
]  # fmt: skip
"""Scalars that load as something surprising: other types, bad tags, odd escapes, huge numbers."""

EXTRA_KEYS = [
    "replicas", "api_key", "api_secret", "secret", "permisions", "Name", "name ",
    "n\u0430me", "\uff4e\uff41\uff4d\uff45", "<<", "=", "? ", "1", "true", "null", "~", "x" * 300,
    "émoji😀", "__class__", "$ref",
]  # fmt: skip
"""Field names a spec does not have: typos, look-alikes (Cyrillic, full-width), credentials, YAML specials."""
RAW_KEYS = ["1", "-7", "true", "null", "~", "1.5", ".nan", "2001-01-01", "0x10", "!!binary aGk=", "!!null ''"]
"""Keys that do not load as strings at all."""

extra_keys = st.sampled_from(EXTRA_KEYS).map(scalar) | st.sampled_from(RAW_KEYS).map(Scalar)
unicode_text = st.text(st.characters(exclude_categories=["Cs"]), max_size=24)
odd_scalars = st.sampled_from(ODD_SCALARS).map(Scalar) | unicode_text.map(lambda t: Scalar(quote(t)))


@st.composite
def deep_nesting(draw: st.DrawFn) -> Node:
    """Lists or mappings nested up to a few hundred levels (the loader's recursion must hold)."""
    depth = draw(st.integers(1, 300))
    as_map = draw(st.booleans())
    node: Node = Scalar("x")
    for _ in range(depth):
        node = Map(((Scalar("k"), node),), flow=True) if as_map else Seq((node,), flow=True)
    return node


@st.composite
def huge_list(draw: st.DrawFn) -> Node:
    """Thousands of items: many errors at once must still each have a location."""
    item = draw(odd_scalars | st.just(Scalar("x")))
    return Seq((item,) * draw(st.integers(200, 800)), flow=draw(st.booleans()))


wrong_values: st.SearchStrategy[Node] = st.one_of(
    odd_scalars,
    st.builds(lambda t: Seq(tuple(t), flow=True), st.lists(odd_scalars, max_size=3)),
    st.builds(lambda k, v: Map(((Scalar(k), v),), flow=True), st.sampled_from(EXTRA_KEYS), odd_scalars),
    st.just(Seq(())),
    st.just(Map(())),
    deep_nesting(),
    huge_list(),
)


# --------------------------------------------------------------------------- fleets

labels = st.from_regex(r"[a-z][a-z0-9]{0,7}", fullmatch=True)


@st.composite
def fleet_data(draw: st.DrawFn) -> dict[str, Any]:
    """A fleet spec as Python data, valid by construction (so mutations start from something real)."""
    names = draw(st.lists(labels, min_size=1, max_size=3, unique=True))
    subaccounts = []
    for index, name in enumerate(names):
        master = index == 0 and draw(st.booleans())
        venue = draw(st.sampled_from(["spot", "futures"]))
        sub: dict[str, Any] = {"name": name, "venue": venue}
        if master:
            sub["master"] = True
        elif venue == "spot":
            sub["institutional"] = True
        processes = []
        for pname in draw(st.lists(labels, min_size=1, max_size=3, unique=True)):
            role = draw(st.sampled_from(sorted(perms.ROLES)))
            proc: dict[str, Any] = {"name": pname, "role": role, "image": f"ghcr.io/acme/{pname}:1.0"}
            if draw(st.booleans()):
                allowed = sorted(perms.allowance(role, venue, master=master, allow_withdrawals=False))
                if allowed:
                    proc["permissions"] = draw(st.lists(st.sampled_from(allowed), min_size=1, unique=True))
            if draw(st.booleans()):
                proc["env"] = {"LOG_LEVEL": "info"}
                proc["args"] = ["--strategy", name]
            if draw(st.booleans()):
                proc["resources"] = {"requests": {"cpu": "100m"}, "limits": {"memory": "256Mi"}}
            if draw(st.booleans()):
                proc["key"] = f"kraken/{name}/{pname}-k"
            processes.append(proc)
        sub["processes"] = processes
        subaccounts.append(sub)
    data: dict[str, Any] = {"version": 1}
    if draw(st.booleans()):
        data["vault"] = {"mount": "secret", "prefix": "kraken"}
    data["subaccounts"] = subaccounts
    return data


def _anchor_name(draw: st.DrawFn) -> str:
    return draw(st.from_regex(r"[a-z][a-z0-9_-]{0,5}", fullmatch=True))


def _mutate(draw: st.DrawFn, doc: Node) -> Node:
    """One hostile edit of the document, anywhere in it."""
    everywhere = paths(doc)[1:] or [()]  # the root too is replaceable, but through its children mostly
    kind = draw(
        st.sampled_from(
            ["wrong", "drop", "extra", "duplicate", "tag", "alias", "merge", "bomb", "flow-key", "unicode"]
        )
    )
    if kind == "wrong":
        return edit(doc, draw(st.sampled_from(everywhere)), lambda _: draw(wrong_values))
    if kind == "tag":
        tag = draw(st.sampled_from(TAGS))
        return edit(doc, draw(st.sampled_from(everywhere)), lambda n: Tag(tag, n))
    maps = maps_in(doc)
    if kind in ("drop", "extra", "duplicate", "merge", "bomb", "flow-key") and not maps:
        return doc
    if kind == "drop":
        path = draw(st.sampled_from(maps))
        pairs = map_at(doc, path).pairs
        if not pairs:
            return doc
        gone = draw(st.integers(0, len(pairs) - 1))
        return with_pairs(doc, path, pairs[:gone] + pairs[gone + 1 :])
    if kind in ("extra", "flow-key"):
        path = draw(st.sampled_from(maps))
        flow_keys: list[Node] = [
            Seq((Scalar("a"),), flow=True),
            Map(((Scalar("a"), Scalar("b")),), flow=True),
        ]
        key = draw(st.sampled_from(flow_keys)) if kind == "flow-key" else draw(extra_keys)
        return with_pairs(doc, path, (*map_at(doc, path).pairs, (key, draw(wrong_values))))
    if kind == "duplicate":
        path = draw(st.sampled_from(maps))
        pairs = map_at(doc, path).pairs
        if not pairs:
            return doc
        key, value = draw(st.sampled_from(pairs))
        again = value if draw(st.booleans()) else draw(wrong_values)
        return with_pairs(doc, path, (*pairs, (key, again)))
    if kind == "alias":
        # Anchor one node and refer to it from another: usually after it, sometimes before it
        # (undefined alias) or inside it (a recursive document).
        name = _anchor_name(draw)
        order = {p: n for n, p in enumerate(everywhere)}
        first, second = sorted(
            draw(st.lists(st.sampled_from(everywhere), min_size=2, max_size=2)), key=lambda p: order[p]
        )
        if draw(st.booleans()):
            first, second = second, first
        doc = edit(doc, second, lambda _: Alias(name))
        if any(p == first for p in paths(doc)):
            doc = edit(doc, first, lambda n: Anchor(name, n))
        return doc
    if kind == "merge":
        name = _anchor_name(draw)
        source = draw(st.sampled_from(everywhere))
        doc = edit(doc, source, lambda n: Anchor(name, n))
        path = draw(st.sampled_from(maps_in(doc)))
        return with_pairs(doc, path, (*map_at(doc, path).pairs, (Scalar("<<"), Alias(name))))
    if kind == "bomb":
        path = draw(st.sampled_from(maps))
        return with_pairs(doc, path, (*map_at(doc, path).pairs, (Scalar("lol"), draw(alias_bombs()))))
    # unicode: a random string somewhere a name or path would be
    return edit(doc, draw(st.sampled_from(everywhere)), lambda _: Scalar(quote(draw(unicode_text))))


@st.composite
def alias_bombs(draw: st.DrawFn) -> Node:
    """'Billion laughs': each level a list of ``width`` aliases of the level below."""
    depth, width = draw(st.integers(2, 9)), draw(st.integers(2, 10))
    levels: list[Node] = [Anchor("l0", Seq((Scalar("lol"),) * width, flow=True))]
    for level in range(1, depth):
        levels.append(Anchor(f"l{level}", Seq((Alias(f"l{level - 1}"),) * width, flow=True)))
    return Seq(tuple(levels), flow=True)


@st.composite
def hostile_fleets(draw: st.DrawFn, min_edits: int = 1, max_edits: int = 4) -> str:
    """A real fleet spec in a random mix of block and flow style, after some hostile edits."""
    doc = to_ast(draw(fleet_data()), flows=lambda: draw(st.booleans()) and draw(st.booleans()))
    for _ in range(draw(st.integers(min_edits, max_edits))):
        doc = _mutate(draw, doc)
    return render(doc)


@st.composite
def mangled_example(draw: st.DrawFn) -> str:
    """examples/fleet.yaml with a few characters inserted, deleted or replaced by YAML-significant ones."""
    text = EXAMPLE_TEXT
    significant = st.sampled_from([*":-&*!|>[]{},#'\"%@`?\t\n \\", "\r", "\x00", "\ufeff", "é", "<<: "])
    for _ in range(draw(st.integers(1, 6))):
        at_ = draw(st.integers(0, len(text)))
        op = draw(st.sampled_from(["insert", "delete", "replace"]))
        if op == "insert":
            text = text[:at_] + draw(significant) + text[at_:]
        elif op == "delete":
            text = text[:at_] + text[at_ + draw(st.integers(1, 20)) :]
        else:
            text = text[:at_] + draw(significant) + text[at_ + 1 :]
    return text
