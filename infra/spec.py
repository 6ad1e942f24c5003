"""The fleet spec: the YAML contract users edit, typed and validated.

Every problem is reported at once, each with the file, line and column of the YAML
node at fault and a sentence saying what to change. Unknown fields are errors: a typo
such as ``permisions`` must never silently fall back to a default.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from keyfence_policies import permissions as perms
from keyfence_policies.labels import canonical_key_path
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictStr,
    ValidationError,
    field_validator,
)

from .errors import SpecError

MAX_SPEC_BYTES = 4 * 1024 * 1024
"""A fleet of thousands of processes is well under a megabyte; more is a mistake or an attack."""
MAX_YAML_NODES = 200_000
"""Bound on nodes after alias expansion, so a 'billion laughs' document cannot exhaust memory."""
MAX_INT_LITERAL = 64
"""Longest integer literal read: converting a long one (e.g. base 60) costs quadratic time, and no
field of a spec needs more than a few digits."""
MAX_SHOWN = 80
"""Longest rendering of a user's value inside a message; a hostile value must not make a huge error."""

# Patterns end in \Z, not $: $ also matches before a trailing newline, so "name\n" would pass.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
MAX_SUBACCOUNT_NAME = 63
"""A subaccount name is its Namespace name: a DNS-1123 label."""
MAX_PROCESS_NAME = 46
"""Pods are named ``<deployment>-<10-char hash>-<5-char suffix>``; 46 + 17 keeps them a 63-char label."""
MAX_INSTANCE_LABEL = 63
"""``app.kubernetes.io/instance`` is ``<subaccount>-<process>``, a label value of at most 63 characters."""
RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})

PATH_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
SECRET_LOOKING_ENV = re.compile(r"(SECRET|API_?KEY|PASSWORD|PASSPHRASE|TOKEN|PRIVATE|CREDENTIAL|OTP)", re.I)
QUANTITY = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?|\.[0-9]+)(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?\Z")
_SUFFIX_SCALE = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}

EXTRA_FIELD_HINTS = {
    "replicas": "a process is always exactly one pod: one key, one nonce sequence; "
    "to scale, add another process with its own key",
    "api_key": "key material never goes in the spec; register it with 'keyfence keys register'",
    "api_secret": "key material never goes in the spec; register it with 'keyfence keys register'",
    "secret": "key material never goes in the spec; register it with 'keyfence keys register'",
}


# --------------------------------------------------------------------------- YAML with locations


class LocatedDict(dict[Any, Any]):
    """A mapping that remembers the (line, column) of each key in the YAML source."""

    marks: dict[Any, tuple[int, int]]


class LocatedList(list[Any]):
    """A sequence that remembers the (line, column) of each item in the YAML source."""

    marks: list[tuple[int, int]]


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _LocatingLoader(yaml.SafeLoader):
    """SafeLoader that records locations and reports duplicate keys instead of keeping the last."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[tuple[tuple[int, int], str]] = []
        self.composed = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        """Stop composing past MAX_YAML_NODES nodes (aliases included): a 4 MiB flow list of a
        million items would otherwise take many seconds to compose before the count refuses it."""
        self.composed += 1
        if self.composed > MAX_YAML_NODES:
            raise yaml.composer.ComposerError(
                None,
                None,
                f"the spec has more than {MAX_YAML_NODES} YAML nodes; a fleet spec needs far fewer",
                self.peek_event().start_mark,  # type: ignore[no-untyped-call]
            )
        return super().compose_node(parent, index)

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        """SafeLoader's scalar constructors let ValueError & co. escape (``!!int abc``, ``2001-02-30``,
        ``!!bool maybe``); each becomes a YAML error at the node, like every other bad value."""
        try:
            return super().construct_object(node, deep=deep)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError):
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"this value cannot be read as {_tag_name(node.tag)}; quote it if it is meant as text",
                node.start_mark,
            ) from None


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
                        f"duplicate key {_brief(key)}: YAML would silently keep only the last one",
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
    """Parse one YAML document into located containers, or raise SpecError naming the line."""
    if len(text.encode("utf-8", "surrogatepass")) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{source}: the spec is larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB; refusing to parse it"
        )
    try:
        loader = _LocatingLoader(text)
    except yaml.reader.ReaderError as exc:  # the reader checks the whole text up front
        line, col = _line_col(text, exc.position)
        character = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise SpecError(
            f"{source}:{line}:{col}: invalid YAML: character U+{character:04X} is not allowed in YAML text"
        ) from None
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
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        problem = exc.problem or exc.context or "invalid YAML"
        raise SpecError(f"{where}: invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError(f"{source}: invalid YAML: {type(exc).__name__}") from None
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


_LINE_BREAK = re.compile("\r\n|[\r\n\x85\u2028\u2029]")
"""What YAML counts as a line break, so a position computed here agrees with YAML's own marks."""


def _line_col(text: str, position: int) -> tuple[int, int]:
    """1-based line and column of a character offset in ``text``."""
    breaks = list(_LINE_BREAK.finditer(text, 0, position))
    line_start = breaks[-1].end() if breaks else 0
    return len(breaks) + 1, position - line_start + 1


def _brief(value: Any) -> str:
    """``repr`` for messages, cut to MAX_SHOWN characters; never fails on a hostile value."""
    try:
        text = repr(value)
    except (ValueError, RecursionError):  # an int beyond str()'s digit limit, a very deep list
        return f"a {_kind(value)}"
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _brief_list(items: list[str]) -> str:
    """Comma-separated, cut to MAX_SHOWN characters like ``_brief``."""
    text = ", ".join(items)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def _kind(value: Any) -> str:
    """The YAML word for a value's type: internal container classes stay internal."""
    if isinstance(value, dict):
        return "mapping"
    if isinstance(value, list):
        return "list"
    return type(value).__name__


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
            out += f"[{_brief(part)}]"
    return out or "(top level)"


_PLAIN_FIELD = re.compile(r"[A-Za-z_\[][A-Za-z0-9_\[\]-]*\Z")


# --------------------------------------------------------------------------- field types


def _dns_label(kind: str, max_len: int) -> Any:
    def check(value: str) -> str:
        if len(value) > max_len:
            raise ValueError(f"{kind} {_brief(value)} is {len(value)} characters; at most {max_len} fit")
        if not DNS_LABEL.match(value):
            raise ValueError(
                f"{kind} {_brief(value)} is not a DNS-1123 label: use lowercase letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        return value

    return check


def _vault_path(kind: str) -> Any:
    def check(value: str) -> str:
        if "%" in value or "\\" in value:
            raise ValueError(
                f"{kind} {_brief(value)} contains '%' or '\\': write the path literally, unencoded"
            )
        canonical = canonical_key_path(value)
        if not canonical:
            raise ValueError(f"{kind} {_brief(value)} is empty once '/' are trimmed")
        for segment in canonical.split("/"):
            if segment in (".", ".."):
                raise ValueError(
                    f"{kind} {_brief(value)} contains {_brief(segment)}: Vault paths cannot climb directories"
                )
            if not PATH_SEGMENT.match(segment):
                raise ValueError(
                    f"{kind} {_brief(value)}: segment {_brief(segment)} may hold only letters, digits, "
                    "'.', '_' and '-', starting with a letter or digit"
                )
        return canonical

    return check


def _quantity_to_str(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _check_quantity(value: str) -> str:
    if not QUANTITY.match(value):
        raise ValueError(f"{_brief(value)} is not a Kubernetes quantity (examples: 250m, 1, 512Mi, 2Gi)")
    return value


def quantity_value(value: str) -> Decimal:
    """A quantity's magnitude, so limits can be compared with requests."""
    match = QUANTITY.match(value)
    if not match:
        raise ValueError(value)
    try:
        return Decimal(match["num"]) * _SUFFIX_SCALE[match["suffix"]]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(value) from exc


Quantity = Annotated[StrictStr, BeforeValidator(_quantity_to_str)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class ResourceAmounts(_Strict):
    """CPU and memory, as Kubernetes quantities."""

    cpu: Quantity | None = Field(None, description="CPU, e.g. 250m or 1.")
    memory: Quantity | None = Field(None, description="Memory, e.g. 256Mi or 1Gi.")

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        return None if value is None else _check_quantity(value)

    def as_dict(self) -> dict[str, str]:
        """The amounts that are set, as Kubernetes expects them."""
        return {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v is not None}


DEFAULT_REQUESTS = ResourceAmounts(cpu="50m", memory="64Mi")
DEFAULT_LIMITS = ResourceAmounts(cpu="500m", memory="256Mi")


class Resources(_Strict):
    """Pod resources; any value left out takes keyfence's default (requests 50m/64Mi, limits 500m/256Mi)."""

    requests: ResourceAmounts = Field(
        default_factory=ResourceAmounts, description="Guaranteed CPU and memory."
    )
    limits: ResourceAmounts = Field(
        default_factory=ResourceAmounts, description="Ceilings for CPU and memory."
    )

    def effective(self) -> tuple[ResourceAmounts, ResourceAmounts]:
        """Requests and limits with defaults filled in."""
        requests = ResourceAmounts(
            cpu=self.requests.cpu or DEFAULT_REQUESTS.cpu,
            memory=self.requests.memory or DEFAULT_REQUESTS.memory,
        )
        limits = ResourceAmounts(
            cpu=self.limits.cpu or DEFAULT_LIMITS.cpu, memory=self.limits.memory or DEFAULT_LIMITS.memory
        )
        return requests, limits


class Process(_Strict):
    """One trading process: one pod, one API key, one nonce sequence."""

    name: StrictStr = Field(description="DNS-1123 label, unique within its subaccount; the Deployment name.")
    role: Literal["market-data", "trader", "risk", "accounting", "treasury"] = Field(
        description="What the process does; bounds the permissions its key may carry."
    )
    image: StrictStr = Field(description="Container image, pinned by tag or digest.")
    key: StrictStr | None = Field(
        None,
        description="Vault path of the key inside the KV mount; default <prefix>/<subaccount>/<process>.",
    )
    args: list[StrictStr] = Field(default_factory=list, description="Container arguments.")
    env: dict[StrictStr, StrictStr] = Field(
        default_factory=dict,
        description="Plain, non-secret environment values. Key material is mounted, never here.",
    )
    resources: Resources = Field(default_factory=Resources, description="CPU and memory requests and limits.")
    permissions: list[StrictStr] | None = Field(
        None, description="The exact permission set the key must carry; checked against Vault metadata."
    )
    allow_withdrawals: StrictBool = Field(
        False, description="Only for role treasury on the master: lets its key hold withdrawal rights."
    )

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        result: str = _dns_label("process name", MAX_PROCESS_NAME)(value)
        return result

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"image {_brief(value)} must be a non-empty image reference without spaces")
        if "@sha256:" in value:
            return value
        last = value.rsplit("/", 1)[-1]
        if ":" not in last or last.endswith(":latest"):
            raise ValueError(
                f"image {_brief(value)} is not pinned: add a version tag or digest (not ':latest'), "
                "so a restart never starts a different build"
            )
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else _vault_path("key path")(value)

    @field_validator("env")
    @classmethod
    def _env(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not ENV_NAME.match(name):
                raise ValueError(
                    f"environment variable name {_brief(name)} must match [A-Za-z_][A-Za-z0-9_]*"
                )
            if name.upper().startswith("KEYFENCE_"):
                raise ValueError(
                    f"environment variable {_brief(name)}: the KEYFENCE_ prefix is reserved for keyfence"
                )
            if SECRET_LOOKING_ENV.search(name):
                raise ValueError(
                    f"environment variable {_brief(name)} looks like a credential: env holds plain values "
                    "only; the key is mounted as files under /var/run/keyfence/key"
                )
        return value

    @field_validator("permissions")
    @classmethod
    def _permissions(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        duplicates = sorted(p for p, n in Counter(value).items() if n > 1)  # list.count would be quadratic
        if duplicates:
            raise ValueError(f"permissions list {', '.join(duplicates)} more than once")
        return sorted(value)


class Subaccount(_Strict):
    """One exchange subaccount (or the master account): one strategy, one Namespace."""

    name: StrictStr = Field(description="DNS-1123 label, unique; also the Namespace name.")
    venue: Literal["spot", "futures"] = Field(description="Kraken spot or derivatives (futures) account.")
    master: StrictBool = Field(False, description="True for the master account (at most one).")
    institutional: StrictBool = Field(
        False,
        description="Must be true on a non-master spot subaccount: Kraken offers those to institutions only.",
    )
    processes: list[Process] = Field(min_length=1, description="The processes trading in this subaccount.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        result: str = _dns_label("subaccount name", MAX_SUBACCOUNT_NAME)(value)
        if result in RESERVED_NAMESPACES or result.startswith("kube-"):
            raise ValueError(
                f"subaccount name {_brief(value)} is a reserved Kubernetes namespace; choose another"
            )
        return result


class VaultSection(_Strict):
    """Where keys live in Vault."""

    mount: StrictStr = Field("secret", description="KV version 2 mount.")
    prefix: StrictStr = Field(
        "kraken", description="Default key path prefix: <prefix>/<subaccount>/<process>."
    )

    @field_validator("mount")
    @classmethod
    def _mount(cls, value: str) -> str:
        result: str = _vault_path("vault mount")(value)
        return result

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        result: str = _vault_path("vault prefix")(value)
        return result


@dataclass(frozen=True)
class Location:
    """Where a spec entry is written: file, line and column (1-based) and its dotted field path."""

    file: str
    line: int
    column: int
    field: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column} ({self.field})"


@dataclass(frozen=True)
class ProcessEntry:
    """A process with everything downstream needs: its subaccount, key path and spec location."""

    subaccount: Subaccount
    process: Process
    key_path: str
    location: Location

    @property
    def ref(self) -> str:
        """``<subaccount>/<process>``: how people name a process."""
        return f"{self.subaccount.name}/{self.process.name}"


class FleetSpec(_Strict):
    """A fleet: subaccounts, each with the processes that trade in it."""

    version: Literal[1] = Field(description="Spec format version; 1.")
    vault: VaultSection = Field(default_factory=VaultSection, description="Where keys live in Vault.")
    subaccounts: list[Subaccount] = Field(min_length=1, description="Subaccounts, each a strategy.")

    _source: str = PrivateAttr("<spec>")
    _locations: dict[tuple[str, str], Location] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        return self._source

    def entries(self) -> list[ProcessEntry]:
        """Every process in spec order, with its canonical key path and location."""
        out = []
        for sub in self.subaccounts:
            for proc in sub.processes:
                path = proc.key or canonical_key_path(f"{self.vault.prefix}/{sub.name}/{proc.name}")
                location = self._locations.get(
                    (sub.name, proc.name), Location(self._source, 1, 1, f"{sub.name}/{proc.name}")
                )
                out.append(ProcessEntry(sub, proc, path, location))
        return out


# --------------------------------------------------------------------------- cross-field rules

Problem = tuple[tuple[Any, ...], str]
"""A pydantic-style location and what is wrong there."""


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _items(data: Any, key: str) -> list[tuple[int, dict[str, Any]]]:
    """The mapping entries of a list field, with their indices; anything malformed is skipped."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def _cross_rules(data: Any) -> list[Problem]:
    """Rules that span fields; tolerant of entries that already failed their own validation."""
    if not isinstance(data, dict):
        return []
    vault = data.get("vault")
    prefix = (_as_str(vault.get("prefix")) if isinstance(vault, dict) else None) or "kraken"
    subaccounts = _items(data, "subaccounts")
    problems = _unique_subaccounts_one_master(subaccounts)
    keys_seen: dict[str, tuple[tuple[Any, ...], str]] = {}
    for si, sub in subaccounts:
        problems += _institutional_spot(si, sub)
        processes = _items(sub, "processes")
        problems += _unique_processes(si, sub, processes)
        for pi, proc in processes:
            loc = ("subaccounts", si, "processes", pi)
            problems += _instance_label_fits(loc, sub, proc)
            problems += _unique_key_path(loc, sub, proc, prefix, keys_seen)
            problems += _permissions_fit_role(loc, sub, proc)
            problems += _requests_within_limits(loc, proc)
    return problems


def _unique_subaccounts_one_master(subaccounts: list[tuple[int, dict[str, Any]]]) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    masters: list[int] = []
    for si, sub in subaccounts:
        name = _as_str(sub.get("name"))
        if name is not None and name in seen:
            problems.append(
                (
                    ("subaccounts", si, "name"),
                    f"subaccount {_brief(name)} is already defined at subaccounts[{seen[name]}]",
                )
            )
        elif name is not None:
            seen[name] = si
        if sub.get("master") is True:
            masters.append(si)
    for si in masters[1:]:
        problems.append(
            (
                ("subaccounts", si, "master"),
                f"only one subaccount may be the master; subaccounts[{masters[0]}] already is",
            )
        )
    return problems


def _institutional_spot(si: int, sub: dict[str, Any]) -> list[Problem]:
    if sub.get("venue") != "spot" or sub.get("master") is True or sub.get("institutional") is True:
        return []
    return [
        (
            ("subaccounts", si, "venue"),
            f"spot subaccount {_brief(sub.get('name'))} is not the master: Kraken offers spot subaccounts to "
            "institutional clients only; add 'institutional: true' if yours is one, "
            "or use a futures subaccount",
        )
    ]


def _unique_processes(
    si: int, sub: dict[str, Any], processes: list[tuple[int, dict[str, Any]]]
) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for pi, proc in processes:
        name = _as_str(proc.get("name"))
        if name is None:
            continue
        if name in seen:
            problems.append(
                (
                    ("subaccounts", si, "processes", pi, "name"),
                    f"process {_brief(name)} is already defined in subaccount {_brief(sub.get('name'))} "
                    f"at processes[{seen[name]}]",
                )
            )
        else:
            seen[name] = pi
    return problems


def _instance_label_fits(loc: tuple[Any, ...], sub: dict[str, Any], proc: dict[str, Any]) -> list[Problem]:
    sname, pname = _as_str(sub.get("name")), _as_str(proc.get("name"))
    if sname is None or pname is None or len(sname) + 1 + len(pname) <= MAX_INSTANCE_LABEL:
        return []
    return [
        (
            (*loc, "name"),
            f"{_brief(f'{sname}-{pname}')} is {len(sname) + 1 + len(pname)} characters: the instance label "
            f"<subaccount>-<process> must fit {MAX_INSTANCE_LABEL}; shorten either name",
        )
    ]


def _unique_key_path(
    loc: tuple[Any, ...],
    sub: dict[str, Any],
    proc: dict[str, Any],
    prefix: str,
    seen: dict[str, tuple[tuple[Any, ...], str]],
) -> list[Problem]:
    sname, pname, raw_key = _as_str(sub.get("name")), _as_str(proc.get("name")), _as_str(proc.get("key"))
    if raw_key is not None:
        key_path = canonical_key_path(raw_key)
    elif sname is not None and pname is not None:
        key_path = canonical_key_path(f"{prefix}/{sname}/{pname}")
    else:
        return []
    if not key_path:
        return []
    if key_path not in seen:
        seen[key_path] = (loc, f"{sname}/{pname}")
        return []
    other_loc, other = seen[key_path]
    return [
        (
            (*loc, "key") if raw_key is not None else (*loc, "name"),
            f"key path {_brief(key_path)} is already assigned to {other} ({dotted(other_loc)}): "
            "two processes may never share a key, each needs its own nonce sequence",
        )
    ]


def _permissions_fit_role(loc: tuple[Any, ...], sub: dict[str, Any], proc: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    venue, role, master = _as_str(sub.get("venue")), _as_str(proc.get("role")), sub.get("master") is True
    withdrawals = proc.get("allow_withdrawals") is True
    if withdrawals and (role != "treasury" or not master):
        problems.append(
            (
                (*loc, "allow_withdrawals"),
                "allow_withdrawals is only for role treasury on the master account "
                "(Kraken blocks withdrawals from subaccounts)",
            )
        )
    listed = proc.get("permissions")
    if not isinstance(listed, list) or venue not in perms.VENUES or role not in perms.ROLES:
        return problems
    ids = [p for p in listed if isinstance(p, str)]
    unknown = perms.unknown_ids(venue, ids)
    if unknown:
        problems.append(
            (
                (*loc, "permissions"),
                f"not {venue} permission ids: {_brief_list(unknown)}; {venue} permissions are "
                f"{', '.join(sorted(perms.PERMISSION_IDS[venue]))}",
            )
        )
    unknown_set = set(unknown)  # a list here would make long permission lists quadratic
    known = [i for i in ids if i not in unknown_set]
    extra = perms.excess(role, venue, known, master=master, allow_withdrawals=withdrawals)
    if extra:
        problems.append(((*loc, "permissions"), perms.explain_excess(role, venue, extra, master=master)))
    return problems


def _requests_within_limits(loc: tuple[Any, ...], proc: dict[str, Any]) -> list[Problem]:
    res = proc.get("resources")
    req = res.get("requests") if isinstance(res, dict) else None
    lim = res.get("limits") if isinstance(res, dict) else None
    if not (isinstance(req, dict) and isinstance(lim, dict)):
        return []
    problems: list[Problem] = []
    for what in ("cpu", "memory"):
        r, li = _quantity_to_str(req.get(what)), _quantity_to_str(lim.get(what))
        comparable = isinstance(r, str) and isinstance(li, str) and QUANTITY.match(r) and QUANTITY.match(li)
        if comparable and quantity_value(r) > quantity_value(li):
            problems.append(
                ((*loc, "resources", "requests", what), f"{what} request {r} is above its limit {li}")
            )
    return problems


# --------------------------------------------------------------------------- loading


def _pydantic_problems(exc: ValidationError) -> list[Problem]:
    out = []
    for err in exc.errors(include_url=False):
        loc = tuple(err["loc"])
        kind = err["type"]
        if kind == "extra_forbidden":
            field = str(loc[-1]) if loc else "?"
            hint = EXTRA_FIELD_HINTS.get(field, "check the spelling against the spec reference in README.md")
            message = f"unknown field {_brief(field)}: {hint}"
        elif kind == "missing":
            message = "this field is required"
        elif kind in (
            "string_type",
            "bool_type",
            "list_type",
            "dict_type",
            "model_type",
            "model_attributes_type",
        ):
            expected = {
                "string_type": "a string (quote it)",
                "bool_type": "true or false",
                "list_type": "a list",
                "dict_type": "a mapping",
                "model_type": "a mapping",
                "model_attributes_type": "a mapping",
            }[kind]
            message = f"expected {expected}, got {_kind(err.get('input'))}"
        elif kind == "literal_error":
            expected = err.get("ctx", {}).get("expected", "")
            message = f"{_brief(err.get('input'))} is not one of {expected}"
        elif kind == "too_short":
            message = "must list at least one entry"
        else:
            message = err["msg"].removeprefix("Value error, ")
        out.append((loc, message))
    return out


def _record_locations(spec: FleetSpec, data: Any, source: str) -> None:
    locations: dict[tuple[str, str], Location] = {}
    for si, sub in enumerate(spec.subaccounts):
        for pi, proc in enumerate(sub.processes):
            loc = ("subaccounts", si, "processes", pi)
            line, col = locate(data, loc)
            locations[(sub.name, proc.name)] = Location(source, line, col, dotted(loc))
    spec._locations = locations
    spec._source = source


def validate_spec(data: Any, source: str) -> FleetSpec:
    """Validate parsed YAML; every problem is reported in one SpecError, sorted by position."""
    problems = _cross_rules(data)
    spec: FleetSpec | None = None
    try:
        if not isinstance(data, dict):
            raise SpecError(f"{source}: the spec must be a mapping with 'version' and 'subaccounts'")
        spec = FleetSpec.model_validate(data)
    except ValidationError as exc:
        problems = _pydantic_problems(exc) + problems
    if problems:
        seen = set()
        rendered = []
        for loc, message in sorted(problems, key=lambda p: (locate(data, p[0]), dotted(p[0]))):
            line, col = locate(data, loc)
            text = f"{source}:{line}:{col}: {dotted(loc)}: {message}"
            if text not in seen:
                seen.add(text)
                rendered.append(text)
        raise SpecError(f"{source}: invalid fleet spec", problems=rendered)
    assert spec is not None
    _record_locations(spec, data, source)
    return spec


def load_spec_text(text: str, source: str = "<spec>") -> FleetSpec:
    """Parse and validate a spec given as text (``source`` names it in messages)."""
    return validate_spec(parse_yaml(text, source), source)


def load_spec(path: str | Path) -> FleetSpec:
    """Read, parse and validate the fleet spec at ``path``."""
    p = Path(path)
    try:
        with p.open("rb") as stream:
            raw = stream.read(MAX_SPEC_BYTES + 1)  # never more: the path may be huge, or /dev/zero
    except FileNotFoundError:
        raise SpecError(
            f"{p}: no such spec file (set keyfence:spec in the stack config or pass --spec)"
        ) from None
    except OSError as exc:
        raise SpecError(f"{p}: cannot read the spec: {exc.strerror}") from None
    if len(raw) > MAX_SPEC_BYTES:
        raise SpecError(
            f"{p}: the spec is larger than {MAX_SPEC_BYTES // (1024 * 1024)} MiB; refusing to parse it"
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(f"{p}: the spec is not UTF-8 text (byte {exc.start})") from None
    return load_spec_text(text, str(p))
