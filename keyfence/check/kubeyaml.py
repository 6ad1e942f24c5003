"""Kubernetes manifests turned into resources the way the Kubernetes provider turns them.

``yaml/v2`` ``ConfigFile``/``ConfigGroup`` and ``helm.sh/v4`` ``Chart`` are *provider-side*
components: the provider reads the manifests and registers one child resource per object
(pulumi-kubernetes ``provider/pkg/provider/yaml/v2/yaml.go``: ``Parse``, ``Normalize``,
``Register``). ``yaml`` v1 and ``helm.sh/v3`` ``Chart`` build their children in the SDK,
but ask the provider to decode the YAML (``kubernetes:yaml:decode``,
``invoke_decode_yaml.go``) or to render the chart (``kubernetes:helm:template``,
``invoke_helm_template.go``). This module is those provider parts, hermetically: local
files only (a URL is refused), and Helm only through a ``helm`` binary on ``PATH``.
"""

from __future__ import annotations

import glob
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml

from .kubeprovider import ProviderRefusal, crd_scope, is_namespaced, secret, type_token

DEPENDS_ON_ANNOTATION: Final = "config.kubernetes.io/depends-on"
SKIP_AWAIT_ANNOTATION: Final = "pulumi.com/skipAwait"
HELM_HOOK_ANNOTATION: Final = "helm.sh/hook"
HELM_TIMEOUT: Final = 300.0
PREVIEW_ADVICE: Final = "gate this stack with `pulumi preview --policy-pack policies`, which renders it"
_GLOB: Final = re.compile(r"(?:^|[^\\])[*?\[]")
_TEST_HOOK: Final = re.compile(r"test|test-success|test-failure")


# --------------------------------------------------------------------------- decoding


def decode(text: str, source: str) -> list[dict[str, Any]]:
    """Every non-empty document of a YAML (or JSON) stream, as the provider's decoder reads it."""
    try:
        documents = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        raise ProviderRefusal(f"{source}: invalid YAML: {exc}") from None
    except (ValueError, TypeError, RecursionError) as exc:
        raise ProviderRefusal(f"{source}: invalid YAML ({type(exc).__name__})") from None
    out = []
    for index, document in enumerate(documents):
        if document is None or document == {}:
            continue
        if not isinstance(document, dict):
            raise ProviderRefusal(f"{source}: document {index + 1} is not a mapping (a Kubernetes object)")
        out.append(document)
    return out


def decode_function(
    text: str, default_namespace: str, crds: Mapping[tuple[str, str], str], source: str
) -> list[dict[str, Any]]:
    """What the provider's functions return for YAML (``decodeYaml`` in invoke_decode_yaml.go).

    Documents without a kind or an apiVersion are skipped; with a default namespace, every
    object not known to be cluster-scoped gets it if it has none.
    """
    out = []
    for obj in decode(text, source):
        if not obj.get("kind") or not obj.get("apiVersion"):
            continue
        metadata = obj.get("metadata")
        namespaced = is_namespaced(str(obj["apiVersion"]), str(obj["kind"]), crds) is not False
        if default_namespace and isinstance(metadata, dict) and not metadata.get("namespace") and namespaced:
            metadata["namespace"] = default_namespace
        out.append(obj)
    return out


def read_manifest(path: str, cwd: Path) -> str:
    """A manifest file, relative to the program's folder; a URL is not the check's to fetch."""
    if re.match(r"^[A-Za-z][A-Za-z0-9+.-]*://", path):
        raise ProviderRefusal(
            f"manifest {path!r} is a URL: the hermetic check does not fetch over the network; "
            f"vendor the file into the repository, or {PREVIEW_ADVICE}"
        )
    file = Path(path) if Path(path).is_absolute() else cwd / path
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ProviderRefusal(f"manifest {path}: cannot read it: {exc}") from None


def expand_files(patterns: Iterable[str], cwd: Path, *, globbing: bool) -> list[str]:
    """File names as ``Parse`` reads them: globs expanded and sorted when ``globbing`` is on."""
    files: list[str] = []
    for pattern in patterns:
        if globbing and _GLOB.search(pattern) and "://" not in pattern:
            base = Path(pattern) if Path(pattern).is_absolute() else cwd / pattern
            files.extend(sorted(glob.glob(str(base))))
        else:
            files.append(pattern)
    return files


# --------------------------------------------------------------------------- Normalize


def _expand_lists(objs: Sequence[dict[str, Any]], source: str) -> list[dict[str, Any]]:
    """``v1/List`` and other ``*List`` objects become their items, recursively (yaml.go ``expand``)."""
    out: list[dict[str, Any]] = []
    pending = list(objs)
    while pending:
        obj = pending.pop(0)
        if "items" in obj and str(obj.get("kind", "")).endswith("List"):
            items = obj["items"]
            if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
                raise ProviderRefusal(f"{source}: a {obj.get('kind')} whose items are not objects")
            pending[:0] = items
            continue
        out.append(obj)
    return out


def normalize(
    objs: Sequence[dict[str, Any]],
    default_namespace: str | None,
    crds: Mapping[tuple[str, str], str],
    source: str,
) -> list[dict[str, Any]]:
    """Lists expanded, kind/apiVersion/name required, the default namespace applied (``Normalize``).

    ``default_namespace`` ``None`` means it would come from the deploying machine's
    kubeconfig: a namespaced object without a namespace is then refused.
    """
    expanded = _expand_lists(objs, source)
    known = dict(crds)
    for obj in expanded:
        scope = crd_scope(obj)
        if scope is not None:
            known.setdefault(*scope)
    for obj in expanded:
        kind, api_version = obj.get("kind"), obj.get("apiVersion")
        if not isinstance(kind, str) or not kind or not isinstance(api_version, str) or not api_version:
            raise ProviderRefusal(
                f"{source}: Kubernetes resources require a kind and apiVersion: {_brief(obj)}"
            )
        metadata = obj.get("metadata")
        if (
            not isinstance(metadata, dict)
            or not isinstance(metadata.get("name"), str)
            or not metadata["name"]
        ):
            raise ProviderRefusal(f"{source}: Kubernetes resources require a .metadata.name: {_brief(obj)}")
        if api_version.startswith("core/"):
            obj["apiVersion"] = api_version = api_version[len("core/") :]
        if metadata.get("namespace"):
            continue
        if is_namespaced(api_version, kind, known) is True:
            if default_namespace is None:
                raise ProviderRefusal(
                    f"{source}: {kind} {metadata['name']} has no metadata.namespace, so the provider would "
                    "put it in the namespace of the deploying machine's kubeconfig context, which the "
                    "hermetic check cannot know; set metadata.namespace, or the provider's namespace option"
                )
            metadata["namespace"] = default_namespace
    return expanded


def _brief(obj: Mapping[str, Any]) -> str:
    text = json.dumps(obj, sort_keys=True, default=str)
    return text if len(text) <= 100 else text[:97] + "..."


# --------------------------------------------------------------------------- Register


@dataclass
class Child:
    """One object to register under a component: its type, name, inputs and what it depends on."""

    type: str
    name: str
    inputs: dict[str, Any]
    depends_on: list[int] = field(default_factory=list)
    """Indexes (into the ordered list) of the children it must follow."""


def _identity(obj: Mapping[str, Any]) -> tuple[str, str, str, str]:
    metadata = obj.get("metadata") or {}
    api_version = str(obj.get("apiVersion", ""))
    group = api_version.rpartition("/")[0]
    return (
        group,
        str(obj.get("kind", "")),
        str(metadata.get("namespace") or ""),
        str(metadata.get("name", "")),
    )


def _dependencies(objs: Sequence[Mapping[str, Any]]) -> list[set[int]]:
    """The edges cli-utils' DependencyGraph draws: CRD before its objects, Namespace before its
    members, and the ``config.kubernetes.io/depends-on`` annotation."""
    index = {_identity(o): i for i, o in enumerate(objs)}
    crds = {}
    namespaces = {}
    for i, obj in enumerate(objs):
        scope = crd_scope(obj)
        if scope is not None:
            crds[scope[0]] = i
        if obj.get("kind") == "Namespace" and obj.get("apiVersion") == "v1":
            namespaces[_identity(obj)[3]] = i
    deps: list[set[int]] = [set() for _ in objs]
    for i, obj in enumerate(objs):
        group, kind, namespace, _ = _identity(obj)
        if (group, kind) in crds:
            deps[i].add(crds[(group, kind)])
        if namespace in namespaces:
            deps[i].add(namespaces[namespace])
        annotations = (obj.get("metadata") or {}).get("annotations") or {}
        for ref in str(annotations.get(DEPENDS_ON_ANNOTATION, "")).split(","):
            parts = ref.strip().split("/")
            if len(parts) == 5 and parts[1] == "namespaces":
                key = (parts[0], parts[3], parts[2], parts[4])
            elif len(parts) == 3:
                key = (parts[0], parts[1], "", parts[2])
            else:
                continue
            if key in index:
                deps[i].add(index[key])
        deps[i].discard(i)
    return deps


def children(objs: Sequence[dict[str, Any]], prefix: str, *, skip_await: bool, source: str) -> list[Child]:
    """The objects as the component's children, in dependency order (``Register`` in yaml.go)."""
    deps = _dependencies(objs)
    placed: dict[int, int] = {}
    order: list[int] = []
    remaining = list(range(len(objs)))
    while remaining:
        level = [i for i in remaining if deps[i] <= placed.keys()]
        if not level:
            raise ProviderRefusal(f"{source}: the objects' depends-on annotations form a cycle")
        for i in level:
            placed[i] = len(order)
            order.append(i)
        remaining = [i for i in remaining if i not in placed]
    out = []
    for i in order:
        obj = objs[i]
        _, kind, namespace, name = _identity(obj)
        resource_name = f"{namespace}/{name}" if namespace else name
        if prefix:
            resource_name = f"{prefix}:{resource_name}"
        if skip_await:
            metadata = obj.setdefault("metadata", {})
            annotations = metadata.get("annotations")
            if not isinstance(annotations, dict):
                metadata["annotations"] = annotations = {}
            annotations[SKIP_AWAIT_ANNOTATION] = "true"
        inputs = dict(obj)
        if f"{obj.get('apiVersion')}/{kind}" == "v1/Secret":
            for key in ("data", "stringData"):
                if key in inputs:
                    inputs[key] = secret(inputs[key])
        out.append(
            Child(
                type_token(str(obj["apiVersion"]), kind),
                resource_name,
                inputs,
                sorted(placed[d] for d in deps[i]),
            )
        )
    return out


# --------------------------------------------------------------------------- Helm


@dataclass(frozen=True)
class HelmRequest:
    """What ``helm template`` needs, from a v3 or v4 Chart's options."""

    what: str
    release: str
    chart: str
    namespace: str
    version: str | None = None
    repo: str | None = None
    devel: bool = False
    values: Mapping[str, Any] = field(default_factory=dict)
    values_files: Sequence[str] = ()
    include_crds: bool = True
    hooks: bool = False
    test_hooks: bool = False


def render_helm(request: HelmRequest, cwd: Path) -> str:
    """The chart's manifests from ``helm template``; refused when there is no ``helm`` binary."""
    helm = shutil.which("helm")
    if helm is None:
        raise ProviderRefusal(
            f"{request.what}: the hermetic check cannot render a Helm chart without a `helm` binary on PATH; "
            f"install helm where the check runs, or {PREVIEW_ADVICE}"
        )
    with tempfile.TemporaryDirectory(prefix="keyfence-helm-") as tmp:
        values_file = Path(tmp) / "values.json"
        values_file.write_text(json.dumps(request.values), encoding="utf-8")
        args = [helm, "template", request.release, request.chart, "--namespace", request.namespace]
        if request.include_crds:
            args.append("--include-crds")
        if not request.hooks:
            args.append("--no-hooks")
        if request.version:
            args += ["--version", request.version]
        if request.repo:
            args += ["--repo", request.repo]
        if request.devel:
            args.append("--devel")
        for values in (*request.values_files, str(values_file)):
            args += ["--values", values]
        try:
            done = subprocess.run(
                args,
                cwd=cwd,
                capture_output=True,
                text=True,
                timeout=HELM_TIMEOUT,
                check=False,
                env=dict(os.environ),
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise ProviderRefusal(f"{request.what}: helm template could not run: {exc}") from None
    if done.returncode != 0:
        tail = " ".join(done.stderr.strip().splitlines()[-3:])[:400]
        raise ProviderRefusal(f"{request.what}: helm template failed (exit {done.returncode}): {tail}")
    if request.hooks and not request.test_hooks:
        return "\n---\n".join(d for d in done.stdout.split("\n---") if not _is_test_hook(d))
    return done.stdout


def _is_test_hook(document: str) -> bool:
    for line in document.splitlines():
        stripped = line.strip().strip('"')
        if stripped.startswith(HELM_HOOK_ANNOTATION) and _TEST_HOOK.search(stripped.split(":", 1)[-1]):
            return True
    return False
