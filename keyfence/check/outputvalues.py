"""Output values, as the engine passes properties to transforms and back.

When a resource has transforms of its own, the engine hands them properties with their
dependencies as output values, secrets and unknowns included (UpgradeToOutputValues and
``upgradeOutputValues`` in pulumi ``pkg/resource/deploy/source_eval.go``), and turns the
answers back into plain, secret or unknown values before the provider sees them
(``downgradeOutputValues``). These functions do the same on protobuf Structs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from google.protobuf import struct_pb2

from .kubeprovider import OUTPUT_SIG, SECRET_SIG, SIG, UNKNOWN


def _is_special(value: struct_pb2.Value, sig: str) -> bool:
    if value.WhichOneof("kind") != "struct_value":
        return False
    fields = value.struct_value.fields
    return SIG in fields and fields[SIG].string_value == sig


def _map_values(
    struct: struct_pb2.Struct, fn: Callable[[struct_pb2.Value], struct_pb2.Value]
) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    for key, value in struct.fields.items():
        out.fields[key].CopyFrom(fn(value))
    return out


def upgrade_outputs(struct: struct_pb2.Struct) -> struct_pb2.Struct:
    """Secrets and unknowns as output values, as the engine unmarshals them (UpgradeToOutputValues)."""
    return _map_values(struct, _upgrade_value)


def _upgrade_value(value: struct_pb2.Value) -> struct_pb2.Value:
    kind = value.WhichOneof("kind")
    out = struct_pb2.Value()
    if kind == "string_value" and value.string_value == UNKNOWN:
        out.struct_value.update({SIG: OUTPUT_SIG})
        return out
    if _is_special(value, SECRET_SIG):
        inner = _upgrade_value(value.struct_value.fields["value"])
        if _is_special(inner, OUTPUT_SIG):
            inner.struct_value.fields["secret"].bool_value = True
            return inner
        out.struct_value.update({SIG: OUTPUT_SIG, "secret": True})
        out.struct_value.fields["value"].CopyFrom(inner)
        return out
    if kind == "struct_value" and SIG not in value.struct_value.fields:
        out.struct_value.CopyFrom(_map_values(value.struct_value, _upgrade_value))
        return out
    if kind == "list_value":
        for item in value.list_value.values:
            out.list_value.values.add().CopyFrom(_upgrade_value(item))
        out.list_value.SetInParent()
        return out
    return value


def add_dependencies(
    props: struct_pb2.Struct, dependencies: Mapping[str, Sequence[str]]
) -> struct_pb2.Struct:
    """Top-level properties carry their dependencies as output values (upgradeOutputValues)."""
    out = struct_pb2.Struct()
    out.CopyFrom(props)
    for key, urns in dependencies.items():
        if not urns or key not in out.fields:
            continue
        value = out.fields[key]
        current = output_dependencies(value)
        if set(urns) <= current:
            continue
        if not _is_special(value, OUTPUT_SIG):
            wrapped = struct_pb2.Value()
            wrapped.struct_value.update({SIG: OUTPUT_SIG})
            wrapped.struct_value.fields["value"].CopyFrom(value)
            value = wrapped
        merged = sorted(set(urns) | _direct_dependencies(value))
        deps = value.struct_value.fields["dependencies"]
        deps.list_value.SetInParent()
        del deps.list_value.values[:]
        for urn in merged:
            deps.list_value.values.add().string_value = urn
        out.fields[key].CopyFrom(value)
    return out


def _direct_dependencies(value: struct_pb2.Value) -> set[str]:
    deps = value.struct_value.fields.get("dependencies")
    if deps is None:
        return set()
    return {v.string_value for v in deps.list_value.values}


def output_dependencies(value: struct_pb2.Value) -> set[str]:
    found: set[str] = set()
    if _is_special(value, OUTPUT_SIG):
        found |= _direct_dependencies(value)
        inner = value.struct_value.fields.get("value")
        if inner is not None:
            found |= output_dependencies(inner)
    elif value.WhichOneof("kind") == "struct_value":
        for item in value.struct_value.fields.values():
            found |= output_dependencies(item)
    elif value.WhichOneof("kind") == "list_value":
        for item in value.list_value.values:
            found |= output_dependencies(item)
    return found


def downgrade_outputs(struct: struct_pb2.Struct) -> struct_pb2.Struct:
    """Output values back to plain, secret or unknown values (downgradeOutputValues)."""
    return _map_values(struct, _downgrade_value)


def _downgrade_value(value: struct_pb2.Value) -> struct_pb2.Value:
    kind = value.WhichOneof("kind")
    if _is_special(value, OUTPUT_SIG):
        fields = value.struct_value.fields
        if "value" in fields:
            result = _downgrade_value(fields["value"])
        else:
            result = struct_pb2.Value(string_value=UNKNOWN)
        if "secret" in fields and fields["secret"].bool_value:
            wrapped = struct_pb2.Value()
            wrapped.struct_value.update({SIG: SECRET_SIG})
            wrapped.struct_value.fields["value"].CopyFrom(result)
            return wrapped
        return result
    if kind == "struct_value":
        out = struct_pb2.Value()
        out.struct_value.CopyFrom(_map_values(value.struct_value, _downgrade_value))
        return out
    if kind == "list_value":
        out = struct_pb2.Value()
        out.list_value.SetInParent()
        for item in value.list_value.values:
            out.list_value.values.add().CopyFrom(_downgrade_value(item))
        return out
    return value
