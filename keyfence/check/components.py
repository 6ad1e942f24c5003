"""The Kubernetes provider's components and functions, as the engine would get them from it.

A remote component's ``Construct`` (``yaml/v2`` ``ConfigFile``/``ConfigGroup``, ``helm.sh/v4``
``Chart``) and a Helm v3 ``Release`` become the objects to register as children; the
provider's functions (``kubernetes:yaml:decode``, ``kubernetes:helm:template``) become their
results. Everything here is pure: the engine registers what it returns. What the provider
would do that the hermetic check cannot (an unknown input, a post-renderer, kustomize, any
other function or component) raises ProviderRefusal, which the engine keeps on record.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

from google.protobuf import struct_pb2
from pulumi.runtime import rpc

from . import kubeyaml
from .kubeprovider import SIG, KubeProviderConfig, ProviderRefusal, plain, struct_to_python

CONFIG_FILE: Final = "kubernetes:yaml/v2:ConfigFile"
CONFIG_GROUP: Final = "kubernetes:yaml/v2:ConfigGroup"
CHART_V4: Final = "kubernetes:helm.sh/v4:Chart"
RELEASE: Final = "kubernetes:helm.sh/v3:Release"
CONSTRUCTED: Final = (CONFIG_FILE, CONFIG_GROUP, CHART_V4)
"""The remote components the check builds; any other is refused."""

Crds = Mapping[tuple[str, str], str]


class Args:
    """A component's inputs, read one by one: an unknown value that matters is refused."""

    def __init__(self, props: struct_pb2.Struct, where: str) -> None:
        self._raw = struct_to_python(props)
        self.where = where

    def get(self, key: str) -> Any:
        try:
            return plain(self._raw.get(key), f"{self.where} input {key}")
        except ProviderRefusal as exc:
            raise ProviderRefusal(
                f"{exc}; what it holds cannot be known, so the check cannot judge it"
            ) from None


def construct(
    type_: str, name: str, args: Args, config: KubeProviderConfig, cwd: Path, crds: Crds
) -> list[kubeyaml.Child]:
    """The children a remote component's Construct registers, in order."""
    require_constructible(type_, name)
    if type_ == CONFIG_FILE:
        file = str(args.get("file") or "")
        objs = kubeyaml.normalize(
            kubeyaml.decode(kubeyaml.read_manifest(file, cwd), file), config.namespace, crds, args.where
        )
    elif type_ == CONFIG_GROUP:
        objs = kubeyaml.normalize(_group_objects(args, cwd), config.namespace, crds, args.where)
    else:
        objs = _chart_v4_objects(name, args, config, cwd, crds)
    prefix = args.get("resourcePrefix")
    prefix = name if prefix is None else str(prefix)
    return kubeyaml.children(objs, prefix, skip_await=bool(args.get("skipAwait")), source=args.where)


def require_constructible(type_: str, name: str) -> None:
    if type_ not in CONSTRUCTED:
        raise ProviderRefusal(
            f"{type_} {name}: a component built by its provider (a remote component) that the hermetic "
            f"check does not model, so it cannot see what it holds; {kubeyaml.PREVIEW_ADVICE}"
        )


def _group_objects(args: Args, cwd: Path) -> list[dict[str, Any]]:
    """``files`` (globbed and sorted), then ``yaml``, then ``objs`` (configgroup.go)."""
    objs: list[dict[str, Any]] = []
    for file in kubeyaml.expand_files([str(f) for f in args.get("files") or []], cwd, globbing=True):
        objs += kubeyaml.decode(kubeyaml.read_manifest(file, cwd), file)
    yaml_text = args.get("yaml")
    for index, text in enumerate(yaml_text if isinstance(yaml_text, list) else [yaml_text or ""]):
        objs += kubeyaml.decode(str(text), f"{args.where} yaml[{index}]")
    objs += [dict(o) for o in args.get("objs") or [] if isinstance(o, dict)]
    return objs


def _chart_v4_objects(
    name: str, args: Args, config: KubeProviderConfig, cwd: Path, crds: Crds
) -> list[dict[str, Any]]:
    """A v4 Chart rendered with ``helm template`` (helm/v4/chart.go: no hooks, CRDs unless skipped)."""
    where = f"helm.v4.Chart {name}"
    if args.get("postRenderer"):
        raise ProviderRefusal(
            f"{where}: a post-renderer is not run by the hermetic check; {kubeyaml.PREVIEW_ADVICE}"
        )
    namespace = str(args.get("namespace") or "")
    request = _helm_request(where, name, args, namespace or config.namespace or "default")
    text = kubeyaml.render_helm(request, cwd)
    return kubeyaml.normalize(kubeyaml.decode(text, where), namespace or config.namespace, crds, where)


def release_children(name: str, props: struct_pb2.Struct, cwd: Path, crds: Crds) -> list[kubeyaml.Child]:
    """A Helm v3 Release's chart, rendered, as children of the Release.

    ``pulumi preview`` shows a pack only the Release itself; rendering it is stricter, never looser.
    """
    where = f"helm.v3.Release {name}"
    args = Args(props, where)
    if args.get("postrender"):
        raise ProviderRefusal(
            f"{where}: a post-renderer is not run by the hermetic check; {kubeyaml.PREVIEW_ADVICE}"
        )
    namespace = str(args.get("namespace") or "default")
    text = kubeyaml.render_helm(_helm_request(where, name, args, namespace), cwd)
    objs = kubeyaml.normalize(kubeyaml.decode(text, where), namespace, crds, where)
    return kubeyaml.children(objs, name, skip_await=False, source=where)


def _helm_request(where: str, name: str, args: Args, namespace: str) -> kubeyaml.HelmRequest:
    repository = args.get("repositoryOpts") or {}
    return kubeyaml.HelmRequest(
        what=where,
        release=str(args.get("name") or name),
        chart=str(args.get("chart") or ""),
        namespace=namespace,
        version=args.get("version"),
        repo=repository.get("repo") if isinstance(repository, dict) else None,
        devel=bool(args.get("devel")),
        values=args.get("values") or {},
        values_files=_asset_paths(args.get("valueYamlFiles"), where),
        include_crds=not args.get("skipCrds"),
    )


def _asset_paths(value: Any, where: str) -> list[str]:
    paths = []
    for item in value or []:
        if (
            isinstance(item, dict)
            and item.get(SIG) == rpc._special_asset_sig
            and isinstance(item.get("path"), str)
        ):
            paths.append(item["path"])
        else:
            raise ProviderRefusal(f"{where}: only file assets are supported in valueYamlFiles")
    return paths


def resource_refs(urns: list[str]) -> dict[str, Any]:
    """A component's ``resources`` output: references to its children."""
    return {"resources": [{SIG: rpc._special_resource_sig, "urn": urn, "id": ""} for urn in urns]}


# --------------------------------------------------------------------------- functions


def function(token: str, args: Mapping[str, Any], cwd: Path, crds: Crds) -> dict[str, Any]:
    """The result of one of the Kubernetes provider's functions the check can evaluate."""
    if token == "kubernetes:yaml:decode":
        text = plain(args.get("text"), "kubernetes:yaml:decode text")
        namespace = plain(args.get("defaultNamespace"), "defaultNamespace")
        objs = kubeyaml.decode_function(
            text if isinstance(text, str) else "",
            namespace if isinstance(namespace, str) else "",
            crds,
            "YAML passed to kubernetes:yaml:decode",
        )
        return {"result": objs}
    if token == "kubernetes:helm:template":
        return {"result": _helm_v3_template(args, cwd, crds)}
    if token.startswith("kubernetes:kustomize:"):
        raise ProviderRefusal(
            f"{token}: the hermetic check does not run kustomize; {kubeyaml.PREVIEW_ADVICE}"
        )
    raise ProviderRefusal(
        f"the program calls the function {token}, which only its provider can answer; the hermetic check "
        f"cannot evaluate it, so it cannot say what the stack holds; {kubeyaml.PREVIEW_ADVICE}"
    )


def _helm_v3_template(args: Mapping[str, Any], cwd: Path, crds: Crds) -> list[dict[str, Any]]:
    """``kubernetes:helm:template`` (invoke_helm_template.go): hooks kept, test hooks only if asked."""
    raw = plain(args.get("jsonOpts"), "helm.v3.Chart options")
    opts = json.loads(raw) if isinstance(raw, str) else {}
    fetch = opts.get("fetch_opts") or {}
    chart = opts.get("path") or opts.get("chart") or ""
    if opts.get("repo") and not opts.get("path") and not fetch.get("repo"):
        chart = f"{opts['repo']}/{chart}"
    release = str(opts.get("release_name") or "release")
    request = kubeyaml.HelmRequest(
        what=f"helm.v3.Chart {release}",
        release=release,
        chart=str(chart),
        namespace=str(opts.get("namespace") or "default"),
        version=opts.get("version") or fetch.get("version"),
        repo=fetch.get("repo"),
        devel=bool(fetch.get("devel")),
        values=opts.get("values") or {},
        include_crds=not opts.get("skip_crd_rendering"),
        hooks=True,
        test_hooks=bool(opts.get("include_test_hook_resources")),
    )
    text = kubeyaml.render_helm(request, cwd)
    return kubeyaml.decode_function(text, str(opts.get("namespace") or ""), crds, request.what)
