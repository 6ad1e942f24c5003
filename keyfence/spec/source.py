"""The spec's YAML source: parsed with the line and column of every node.

Also renders positions and values for messages.

Why PyYAML plus a small located loader, not ruamel.yaml's round-trip loader (issue 9, evaluated with
ruamel.yaml 0.19.1 against this module, the hostile tests and a differential run over their generators):

- It would change how valid specs are read. Its default YAML 1.2 rules make ``master: yes`` text (so
  invalid) and read ``memory: 0100`` as 100 where we read 64; its YAML 1.1 mode is not PyYAML's either:
  ``y``/``n`` become booleans (``env: {FLAG: y}`` turns invalid, a key ``n`` becomes ``False``) and
  ``1e3`` becomes a float, with a multi-line warning on stderr. Matching today's reading would mean
  hand-writing resolver tables, trading this code for less obvious code.
- Its location tracking and duplicate detection do not fit as they are: ``.lc.key()`` has no position
  for merged-in keys; merged keys come after a mapping's own (reordering a merged ``env``, so the
  Deployment); a second ``<<`` key is refused; the duplicate error stops at the first one and quotes
  both whole values plus how to switch the check off. We report every duplicate in bounded words.
- Its round-trip types reach the model: an anchored ``true`` is ``ScalarBoolean``, an ``int`` subclass
  that ``StrictBool`` refuses; floats, hex/octal ints, anchored and block strings and timestamps are
  subclasses too, so every scalar constructor would need overriding back to plain values.
- It accepts what must be refused: unknown tags (``!!python/object:...`` loads as a tagged mapping,
  ``!x`` as a ``TaggedScalar``) and list keys (as tuple-like keys).
- The guard rails would still be ours (it has an opt-in depth limit, no bound on nodes after alias expansion
  or on integer length), hooked in through semi-internal calls (``get_constructor_parser``; a ``%YAML``
  directive then crashed with IndexError unless ``doc_infos`` was seeded by hand); one parser error
  read "but found ('<block mapping start>',)"; and it took 2.4x PyYAML's CPU time on the 2000-process
  bench spec.

So this module keeps PyYAML's SafeLoader (YAML 1.1 as PyYAML resolves it; pinned by
tests/keyfence/test_spec.py) with the few overrides below.

libyaml, PyYAML's C scanner and parser, turns the text into events when PyYAML has it (its wheels
do); the composer, the node guard, the resolver and the constructors are the Python ones either
way. On the 4000-process bench spec that takes the read from 2.9 s to 0.8 s of CPU. The two parsers
differ on a few constructs (tabs, ``?``, tags, byte order marks, ``|#``); text holding any of them, and
text libyaml refuses, is read by PyYAML's Python parser alone, whose error words the messages
reword. tests/hostile/test_libyaml_parity.py holds both parsers to the same outcome on the hostile
tests' inputs.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Hashable, Iterator
from typing import Any, NoReturn, Protocol

import yaml

from ..errors import SpecError

MAX_SPEC_BYTES = 4 * 1024 * 1024
"""A fleet of thousands of processes is well under a megabyte; more is a mistake or an attack."""
MAX_YAML_NODES = 200_000
"""Bound on nodes after alias expansion, so a 'billion laughs' document cannot exhaust memory."""
MAX_INT_LITERAL = 64
"""Longest integer literal read: converting a long one (e.g. base 60) costs quadratic time, and no
field of a spec needs more than a few digits."""
MAX_YAML_DEPTH = 64
"""Bound on how deeply collections nest: a fleet spec needs under ten levels. Python's recursion limit
must not be the bound, as the Python parser's frames share the composer's stack and libyaml's do not
(the same text was read by one parser and refused by the other), and where it stops depends on the
caller's stack."""
MAX_SHOWN = 80


class LocatedDict(dict[Any, Any]):
    """A mapping that remembers the (line, column) of each key in the YAML source."""

    marks: dict[Any, tuple[int, int]]


class LocatedList(list[Any]):
    """A sequence that remembers the (line, column) of each item in the YAML source."""

    marks: list[tuple[int, int]]


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Locating:
    """What both loaders add to PyYAML: the node-count guard, duplicate keys, located values.

    A mixin ahead of a parser in the bases, so that ``compose_node`` here runs before
    PyYAML's Python composer, whichever parser feeds it events.
    """

    duplicate_keys: list[tuple[tuple[int, int], str]]
    composed: int
    depth: int

    def _start_locating(self) -> None:
        """The guard's counters and the duplicate keys found, for one document, whichever parser."""
        self.duplicate_keys = []
        self.composed = 0
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        """Stop composing past MAX_YAML_NODES nodes (aliases included): a 4 MiB flow list of a
        million items would otherwise take many seconds to compose before the count refuses it.
        Stop past MAX_YAML_DEPTH levels too, before either parser can reach the recursion limit."""
        self.composed += 1
        if self.composed > MAX_YAML_NODES:
            self._refuse(f"the spec has more than {MAX_YAML_NODES} YAML nodes; a fleet spec needs far fewer")
        if self.depth >= MAX_YAML_DEPTH:
            self._refuse(
                f"the spec nests lists and mappings more than {MAX_YAML_DEPTH} levels deep; "
                "a fleet spec needs far fewer"
            )
        self.depth += 1
        try:
            node: yaml.Node | None = super().compose_node(parent, index)  # type: ignore[misc]
        finally:
            self.depth -= 1
        return node

    def _refuse(self, problem: str) -> NoReturn:
        raise yaml.composer.ComposerError(
            None,
            None,
            problem,
            self.peek_event().start_mark,  # type: ignore[attr-defined]
        )

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """SafeLoader's scalar constructors let ValueError & co. escape (``!!int abc``, ``2001-02-30``,
        ``!!bool maybe``); each becomes a YAML error at the node, like every other bad value."""
        try:
            return super().construct_object(node, deep=deep)  # type: ignore[misc]
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"this value cannot be read as {_tag_name(node.tag)}; quote it if it is meant as text",
                node.start_mark,
            ) from None


class _LocatingLoader(_Locating, yaml.SafeLoader):
    """SafeLoader that records locations and reports duplicate keys instead of keeping the last.

    All Python: its error messages are the ones :func:`yaml_problem` rewords.
    """

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._start_locating()


def _tag_name(tag: str) -> str:
    """``tag:yaml.org,2002:int`` -> ``!!int``: how people write the tag."""
    return "!!" + tag.removeprefix("tag:yaml.org,2002:") if tag.startswith("tag:yaml.org,2002:") else tag


def _expect_node(node: yaml.Node, kind: type[yaml.Node], what: str) -> None:
    """``!!map`` on a list or ``!!seq`` on a scalar: a YAML error, not a crash in the constructor."""
    if not isinstance(node, kind):
        raise yaml.constructor.ConstructorError(
            None, None, f"{_tag_name(node.tag)} needs {what}, found a {_node_kind(node)}", node.start_mark
        )


def _node_kind(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "mapping"
    return "list" if isinstance(node, yaml.SequenceNode) else "scalar"


def _construct_mapping(loader: _LocatingLoader, node: yaml.MappingNode) -> Iterator[LocatedDict]:
    _expect_node(node, yaml.MappingNode, "a mapping")
    data = LocatedDict()
    data.marks = {}
    yield data
    own_count = sum(1 for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge")
    loader.flatten_mapping(node)
    merged_count = len(node.value) - own_count
    own_keys: set[Any] = set()  # overriding a merged-in key is what merges are for; repeating one is not
    for index, (key_node, value_node) in enumerate(node.value):
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, Hashable):
            loader.duplicate_keys.append((_mark(key_node), "a mapping key must be a plain scalar"))
            continue
        if index >= merged_count:
            if key in own_keys:
                loader.duplicate_keys.append(
                    (
                        _mark(key_node),
                        f"duplicate key {brief(key)}: YAML would silently keep only the last one",
                    )
                )
            own_keys.add(key)
        data[key] = loader.construct_object(value_node, deep=True)
        data.marks[key] = _mark(key_node)


def _construct_sequence(loader: _LocatingLoader, node: yaml.SequenceNode) -> Iterator[LocatedList]:
    _expect_node(node, yaml.SequenceNode, "a list")
    data = LocatedList()
    data.marks = []
    yield data
    for item in node.value:
        data.append(loader.construct_object(item, deep=True))
        data.marks.append(_mark(item))


def _construct_int(loader: _LocatingLoader, node: yaml.ScalarNode) -> int:
    if isinstance(node, yaml.ScalarNode) and len(node.value) > MAX_INT_LITERAL:
        raise yaml.constructor.ConstructorError(
            None,
            None,
            f"an integer of {len(node.value)} characters is too long for a fleet spec; "
            "quote it if it is meant as text",
            node.start_mark,
        )
    value: int = loader.construct_yaml_int(node)
    return value


def _construct_str(loader: _LocatingLoader, node: yaml.ScalarNode) -> str:
    value: str = loader.construct_yaml_str(node)
    if _SURROGATE.search(value):
        raise yaml.constructor.ConstructorError(
            None,
            None,
            "a \\u escape here makes half a surrogate pair, which is not text (nothing downstream can "
            "encode it); write the character itself or escape it whole, e.g. \\U0001F600",
            node.start_mark,
        )
    return value


_SURROGATE = re.compile("[\ud800-\udfff]")
"""Only a double-quoted ``\\u`` escape can put one in a string; UTF-8 files cannot hold them."""

_LocatingLoader.add_constructor("tag:yaml.org,2002:map", _construct_mapping)
_LocatingLoader.add_constructor("tag:yaml.org,2002:seq", _construct_sequence)
_LocatingLoader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_LocatingLoader.add_constructor("tag:yaml.org,2002:str", _construct_str)


class _Loads(Protocol):
    """What :func:`_read` needs of a loader, whichever parser it has."""

    duplicate_keys: list[tuple[tuple[int, int], str]]

    def get_single_node(self) -> yaml.Node | None: ...

    def construct_document(self, node: yaml.Node) -> Any: ...

    def dispose(self) -> None: ...


_LIBYAML_DIFFERS = re.compile(f"[\t\ufeff!?]|[|>][-+0-9]*#|{yaml.reader.Reader.NON_PRINTABLE.pattern}")
"""Text libyaml may read otherwise than PyYAML's parser, found by the parity tests: tabs (libyaml
takes some PyYAML refuses), byte order marks past the start, tags (a bare ``!``), ``?`` (libyaml
takes it inside a plain scalar in an inline list, and places an explicit key elsewhere), a ``#`` right
after a block scalar's ``|`` or ``>`` and its indicators (libyaml takes a comment, PyYAML refuses the
header), and characters YAML forbids (PyYAML's reader refuses them up front, with the message keyfence
words)."""
_FAST_LOADER: Callable[[str], _Loads] | None = None
if yaml.__with_libyaml__:
    from yaml._yaml import CParser

    class _FastLocatingLoader(
        _Locating,
        yaml.composer.Composer,
        CParser,
        yaml.constructor.SafeConstructor,
        yaml.resolver.Resolver,
    ):
        """The same loader with libyaml scanning and parsing the text into events.

        libyaml is PyYAML's own C twin (``yaml.CSafeLoader``); the composer, the guard, the
        resolver and the constructors above stay PyYAML's Python ones, so the document reads
        the same, in a few times less CPU on a large spec. Its error wording is libyaml's, so
        :func:`parse_yaml` only trusts it with text it accepts.
        """

        def __init__(self, stream: str) -> None:
            CParser.__init__(self, stream)
            yaml.composer.Composer.__init__(self)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self._start_locating()

    for _tag, _constructor in _LocatingLoader.yaml_constructors.items():
        _FastLocatingLoader.add_constructor(_tag, _constructor)
    _FAST_LOADER = _FastLocatingLoader


def _count_expanded_nodes(root: yaml.Node, limit: int) -> bool:
    """Whether the document, with every alias expanded, stays within ``limit`` nodes."""
    seen = 0
    stack: list[yaml.Node] = [root]
    while stack:
        node = stack.pop()
        seen += 1
        if seen > limit:
            return False
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                stack.append(key)
                stack.append(value)
        elif isinstance(node, yaml.SequenceNode):
            stack.extend(node.value)
    return True


def parse_yaml(text: str, source: str) -> Any:
    """Parse one YAML document into located containers, or raise SpecError naming the line.

    libyaml reads the text when it is installed (PyYAML's wheels ship it) and the text holds none
    of the constructs the two parsers read differently (``_LIBYAML_DIFFERS``); anything it refuses
    is read again by the Python parser, whose words the message uses. Both yield the same document
    for the text they accept.
    """
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{source}: the spec is larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB; refusing to parse it"
        )
    if _FAST_LOADER is not None and not _LIBYAML_DIFFERS.search(text):
        try:
            return _read(_FAST_LOADER(text), source)
        except yaml.YAMLError:
            pass  # refused: the Python parser below finds the same problem and words it
    try:
        loader = _LocatingLoader(text)
    except yaml.reader.ReaderError as exc:  # the reader checks the whole text up front
        line, col = _line_col(text, exc.position)
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise SpecError(
            f"{source}:{line}:{col}: invalid YAML: character U+{character:04X} is not allowed in YAML text"
        ) from None
    try:
        return _read(loader, source)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = yaml_problem(exc.problem or exc.context or "", exc.context or "")
        raise SpecError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: invalid YAML: {type(exc).__name__}") from None
    except (ValueError, OverflowError):  # PyYAML's scanner takes chr() of a \U escape unchecked
        line, col = _line_col(text, loader.get_mark().index)
        raise SpecError(
            f"{source}:{line}:{col}: invalid YAML: this \\U escape names no character (the last one is "
            "\\U0010FFFF); write the character itself or a valid escape"
        ) from None


def _read(loader: _Loads, source: str) -> Any:
    """The document ``loader`` holds, as located containers; YAML errors are the caller's to word."""
    try:
        root = loader.get_single_node()
        if root is None:
            raise SpecError(f"{source}: the spec is empty; see examples/fleet.yaml for a starting point")
        if not _count_expanded_nodes(root, MAX_YAML_NODES):
            raise SpecError(
                f"{source}: the spec expands to more than {MAX_YAML_NODES} YAML nodes "
                "(deeply nested anchors and aliases?); refusing to expand it"
            )
        data = loader.construct_document(root)
    except RecursionError:
        raise SpecError(f"{source}: the spec nests too deeply to be a fleet spec") from None
    finally:
        loader.dispose()
    if loader.duplicate_keys:
        raise SpecError(
            f"{source}: invalid spec",
            problems=[f"{source}:{line}:{col}: {msg}" for (line, col), msg in sorted(loader.duplicate_keys)],
        )
    return data


_INDENT_HINT = (
    "this line does not fit the block above it: line it up with the entries it belongs to "
    "(spaces only, the same indentation as its siblings), and write each entry as 'key: value' or '- item'"
)
_YAML_PROBLEMS: tuple[tuple[re.Pattern[str], str], ...] = tuple(
    (re.compile(pattern), sentence)
    for pattern, sentence in (
        (
            r"^expected <block end>, but found '-'",
            "a list item '- ...' where a 'key: value' entry belongs; "
            "indent it under the key that holds the list",
        ),
        (r"^expected <block end>, but found", _INDENT_HINT),
        (
            r"^mapping values are not allowed here",
            "a ':' where YAML did not expect one: an entry missing its own line or indentation, "
            "or a value containing ': ' that needs quotes",
        ),
        (
            r"^could not find expected ':'",
            "a line that is not 'key: value' inside a mapping; add the ':' or fix the indentation",
        ),
        (
            r"^found character '\\t' that cannot start any token",
            "a tab character: YAML indents with spaces only",
        ),
        (r"^found undefined alias '(?P<name>.*)'", "the alias *{name} refers to no anchor &{name} above it"),
        (r"^found unexpected end of stream", "the file ends inside a quoted value: close the quote"),
        (
            r"^expected ',' or '(?P<close>[\]}])'",
            "an inline list or mapping ('[...]' or '{{...}}') is not closed with '{close}', or misses a ','",
        ),
        (r"^found duplicate anchor", "the same &anchor is defined twice; rename one"),
        (
            r"^expected '<document start>'",
            "more than one YAML document or stray text after the spec; a spec is one document",
        ),
        (r"^but found another document", "a second document ('---'); a spec is one document"),
    )
)


def yaml_problem(problem: str, context: str) -> str:
    """PyYAML's parser words (``expected <block end>, but found '?'``) as a sentence for a person."""
    for pattern, sentence in _YAML_PROBLEMS:
        match = pattern.search(problem)
        if match:
            return sentence.format(**match.groupdict())
    readable = re.sub(r"'?<(block|flow|stream|document) ?(\w*)[^>]*>'?", r"the \1 \2", problem)
    return " ".join(readable.split()) or "the text is not valid YAML here"


_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
"""What YAML counts as a line break, so a position computed here agrees with YAML's own marks."""


def _line_col(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of a character offset in ``text``."""
    breaks = list(_LINE_BREAK.finditer(text, 0, position))
    line_start = breaks[-1].end() if breaks else 0
    return len(breaks) + 1, position - line_start + 1


def brief(value: Any) -> str:
    """``repr`` for messages, cut to MAX_SHOWN characters; never fails on a hostile value."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int beyond str()'s digit limit, a very deep list
        return kind_of(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def brief_list(items: list[str]) -> str:
    """Comma-separated, cut to MAX_SHOWN characters like ``brief``."""
    text = ", ".join(items)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def kind_of(value: Any) -> str:
    """What a value is, in the words of someone editing YAML: never a Python class name."""
    if value is None:
        return "nothing (the field is empty)"
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "text"
    return "a date" if type(value).__name__ in ("date", "datetime") else "a value of another type"


def locate(data: Any, loc: tuple[Any, ...]) -> tuple[int, int]:
    """The deepest YAML position known along ``loc`` (a pydantic-style path)."""
    position = (1, 1)
    node = data
    for part in loc:
        if isinstance(node, LocatedDict) and part in node:
            position = node.marks.get(part, position)
            node = node[part]
        elif isinstance(node, LocatedList) and isinstance(part, int) and 0 <= part < len(node):
            position = node.marks[part]
            node = node[part]
        else:
            break
    return position


def dotted(loc: tuple[Any, ...]) -> str:
    """``('subaccounts', 1, 'processes', 0, 'name')`` -> ``subaccounts[1].processes[0].name``."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif isinstance(part, str) and _PLAIN_FIELD.match(part) and len(part) <= MAX_SHOWN:
            out += f".{part}" if out else part
        else:  # a key like ' ', 'a.b' or 'x\ny' is quoted, so the path still reads as one path on one line
            out += f"[{brief(part)}]"
    return out or "(top level)"


_PLAIN_FIELD = re.compile(r"[A-Za-z_\[][A-Za-z0-9_\[\]-]*\Z")
