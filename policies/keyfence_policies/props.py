"""Reading resource props without ever raising.

Stack policies see every resource's outputs as the Pulumi policy SDK hands them over:
mappings and sequences that may be read-only proxies, with any field missing, null,
oddly typed, or not known yet during a preview (the SDK's proxy raises on touching
such a value, which would turn a mandatory check into an advisory "can't run"
diagnostic). A :class:`Node` wraps one value together with the path it was read
from; typed reads return ``None`` when the value is absent and record a *problem*
when it is present but unusable, so that a policy can report "cannot evaluate"
instead of passing or crashing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import Final

from pulumi_policy import proxy as _sdk_proxy


class _Absent:
    """A field that is not there (distinct from a field that is there and null)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<absent>"


class _Unknown:
    """A field whose value the engine does not know yet (preview of a computed output)."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "<unknown>"


ABSENT: Final = _Absent()
UNKNOWN: Final = _Unknown()

# The SDK marks not-yet-known values with sentinel strings; reading them through its
# proxy raises, reading raw (unproxied) props returns the sentinel itself.
_UNKNOWN_SENTINELS: Final = frozenset(
    value
    for name, value in vars(_sdk_proxy).items()
    if name.startswith("UNKNOWN_") and isinstance(value, str)
)
_UNKNOWN_ERROR: Final[type[BaseException]] = getattr(_sdk_proxy, "UnknownValueError", LookupError)


_SNAKE: Final[dict[str, str]] = {
    name: re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()
    for name in (
        "apiVersion", "automountServiceAccountToken", "concurrencyPolicy", "configMap", "configMapKeyRef",
        "configMapRef", "defaultMode", "enableServiceLinks", "envFrom", "ephemeralContainers",
        "initContainers", "jobTargetRef", "jobTemplate", "matchLabels", "maxSurge", "mountPath",
        "nodePublishSecretRef", "readOnly", "readOnlyRootFilesystem", "allowPrivilegeEscalation",
        "restartPolicy", "roleRef", "runAsNonRoot", "scaleTargetRef", "secretKeyRef", "secretName",
        "secretObjects", "secretProviderClass", "secretRef", "securityContext", "serviceAccountName",
        "stringData", "binaryData", "volumeAttributes", "volumeMounts", "workloadRef", "apiGroups",
        "resourceNames", "blueGreen", "secretPath", "subPath", "valueFrom", "fieldRef",
    )
}  # fmt: skip
"""camelCase field names the pack reads, to their snake_case spelling.

Pulumi translates the typed Kubernetes resources' Python names to camelCase, but a
CustomResource's or Patch's free-form ``spec`` goes to the API as written: the pack reads
either spelling, so a snake_case field can never hide a reference.
"""


class Problems:
    """An ordered set of problem sentences found while reading one resource."""

    __slots__ = ("_seen",)

    def __init__(self) -> None:
        self._seen: dict[str, None] = {}

    def add(self, sentence: str) -> None:
        self._seen.setdefault(sentence, None)

    def extend(self, sentences: Iterable[str]) -> None:
        for sentence in sentences:
            self.add(sentence)

    def __len__(self) -> int:
        return len(self._seen)

    def __bool__(self) -> bool:
        return bool(self._seen)

    def __iter__(self) -> Iterator[str]:
        return iter(self._seen)

    def as_list(self) -> list[str]:
        return list(self._seen)


def _type_name(value: object) -> str:
    if value is None or value is ABSENT:
        return "null"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, Sequence):
        return "a list"
    return f"a {type(value).__name__}"


def _is_list(value: object) -> bool:
    return isinstance(value, Sequence) and not isinstance(value, (str, bytes, bytearray))


_DictProxy: Final[type] = getattr(_sdk_proxy, "_DictProxy", type(None))
_ListProxy: Final[type] = getattr(_sdk_proxy, "_ListProxy", type(None))


def open_proxy(value: object) -> object:
    """The raw dict or list behind one of the SDK's unknown-checking proxies (anything else as is).

    Reading through the proxy costs a call and a check per field, and raises on an unknown
    value; the raw target holds the SDK's unknown sentinels instead, which this module
    classifies itself. Only the proxy's own level is opened: its values are proxies again.
    """
    kind = type(value)
    if kind is _DictProxy or kind is _ListProxy:
        try:
            target = value["__target"]  # type: ignore[index]
        except Exception:  # a future SDK without the raw-target key: read through the proxy
            return value
        if isinstance(target, (dict, list)):
            return target
    return value


def _classify(value: object) -> object:
    """Turn the SDK's raw unknown sentinels into :data:`UNKNOWN`, and open the SDK's proxies."""
    if isinstance(value, str):
        return UNKNOWN if value in _UNKNOWN_SENTINELS else value
    return open_proxy(value)


class Node:
    """One value read from a resource's props, with its dotted path for messages."""

    __slots__ = ("_key", "_parent", "_path", "_problems", "value")

    def __init__(self, value: object, path: str, problems: Problems) -> None:
        self.value = _classify(value)
        self._path: str | None = path
        self._parent: Node | None = None
        self._key: str | int = ""
        self._problems = problems

    @classmethod
    def _child(cls, parent: Node, key: str | int, value: object) -> Node:
        """A field of ``parent``; its dotted path is spelt out only if a message needs it."""
        node = cls.__new__(cls)
        kind = type(value)
        if kind is str:
            node.value = UNKNOWN if value in _UNKNOWN_SENTINELS else value
        elif kind is dict or kind is list or value is None or value is ABSENT:
            node.value = value
        else:
            node.value = _classify(value)
        node._path = None
        node._parent = parent
        node._key = key
        node._problems = parent._problems
        return node

    @property
    def path(self) -> str:
        if self._path is None:
            assert self._parent is not None
            self._path = self._parent._child_path(self._key)
        return self._path

    @classmethod
    def root(cls, value: object, problems: Problems, path: str = "") -> Node:
        """The props of a resource, or any other top-level value."""
        return cls(value, path, problems)

    @property
    def problems(self) -> Problems:
        return self._problems

    def _child_path(self, key: str | int) -> str:
        if isinstance(key, int):
            return f"{self.path}[{key}]"
        return f"{self.path}.{key}" if self.path else key

    def _note(self, sentence: str) -> None:
        self._problems.add(f"{self.path or '(props)'} {sentence}")

    def expected(self, expected: str) -> None:
        """Record that this value is not of the ``expected`` kind (e.g. "a string")."""
        if self.value is UNKNOWN:
            self._note("is not known during preview")
        else:
            self._note(f"is {_type_name(self.value)}, expected {expected}")

    @property
    def absent(self) -> bool:
        """True when the field is missing or null: the caller applies its default."""
        return self.value is ABSENT or self.value is None

    @property
    def unknown(self) -> bool:
        return self.value is UNKNOWN

    def mapping(self) -> Mapping[object, object] | None:
        """The value as an object; ``None`` (and a problem if present) otherwise."""
        if type(self.value) is dict:
            return self.value
        if self.absent:
            return None
        if isinstance(self.value, Mapping):
            return self.value
        self.expected("an object")
        return None

    def get(self, key: str) -> Node:
        """The field ``key`` of this object; absent when this is not an object."""
        found = self.value
        if type(found) is dict:  # the common case, opened from the SDK's proxy: no checks needed
            value = found.get(key, ABSENT)
            if value is ABSENT and key in _SNAKE:
                value = found.get(_SNAKE[key], ABSENT)
            return Node._child(self, key, value)
        found = self.mapping()
        if found is None:
            return Node._child(self, key, ABSENT)
        try:
            value = found.get(key, ABSENT)
            if value is ABSENT and key in _SNAKE:
                value = found.get(_SNAKE[key], ABSENT)
        except _UNKNOWN_ERROR:
            value = UNKNOWN
        except Exception as exc:  # a foreign proxy may raise anything; never let it escape
            self._problems.add(f"{self._child_path(key)} cannot be read ({type(exc).__name__})")
            value = ABSENT
        return Node._child(self, key, value)

    def dig(self, *keys: str) -> Node:
        """Follow a chain of object fields, e.g. ``dig("spec", "template", "spec")``."""
        node = self
        for key in keys:
            node = node.get(key)
        return node

    def items(self) -> list[Node]:
        """The elements of a list (empty when absent, with a problem when not a list)."""
        if type(self.value) is list:
            return [Node._child(self, index, element) for index, element in enumerate(self.value)]
        if self.absent:
            return []
        if not _is_list(self.value):
            self.expected("a list")
            return []
        assert isinstance(self.value, Sequence)
        out: list[Node] = []
        try:
            for index in range(len(self.value)):
                try:
                    element: object = self.value[index]
                except _UNKNOWN_ERROR:
                    element = UNKNOWN
                out.append(Node._child(self, index, element))
        except Exception as exc:  # a foreign sequence may raise anything
            self._note(f"cannot be read ({type(exc).__name__})")
        return out

    def text(self) -> str | None:
        """The value as a string; ``None`` (and a problem if present) otherwise."""
        if type(self.value) is str:
            return self.value
        if self.absent:
            return None
        if isinstance(self.value, str):
            return self.value
        self.expected("a string")
        return None

    def flag(self) -> bool | None:
        """The value as a boolean; ``None`` (and a problem if present) otherwise."""
        if self.absent:
            return None
        if isinstance(self.value, bool):
            return self.value
        self.expected("a boolean")
        return None

    def count(self) -> int | None:
        """The value as a whole number (protobuf hands numbers over as floats)."""
        if self.absent:
            return None
        value = self.value
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        self.expected("a whole number")
        return None

    def strings(self) -> list[str]:
        """A list of strings; non-string elements are reported and skipped."""
        out: list[str] = []
        for element in self.items():
            value = element.text()
            if value is not None:
                out.append(value)
            elif element.absent:
                element.expected("a string")
        return out

    def string_map(self) -> dict[str, str]:
        """A label or annotation map; entries that are not plain strings are reported and dropped."""
        found = self.mapping()
        if found is None:
            return {}
        try:
            keys = list(found)
        except Exception as exc:  # a foreign mapping may raise anything
            self._note(f"cannot be read ({type(exc).__name__})")
            return {}
        out: dict[str, str] = {}
        for key in keys:
            try:
                value = found[key]
            except Exception:  # unknown during preview, or worse: take the careful path below
                value = None
            if isinstance(key, str) and isinstance(value, str) and value not in _UNKNOWN_SENTINELS:
                out[key] = value
                continue
            if not isinstance(key, str):
                self._note(f"has a non-string key {key!r}")
                continue
            child = self.get(key)
            if child.text() is None:
                child.expected("a string")
        return out
