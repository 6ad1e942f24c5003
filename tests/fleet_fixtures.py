"""Fleets and keys the tests declare without Vault: canary material that must never leak."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

from keyfence.keys import ResolvedKey
from keyfence.material import KeyMaterial, fingerprint_of
from keyfence.spec import FleetSpec, load_spec

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_SPEC = str(ROOT / "examples" / "fleet.yaml")
CANARY_PREFIX = "CANARYKEY"


def canary_material(ref: str) -> KeyMaterial:
    """A distinct, recognisable key pair per process; tests search every output for it."""
    digest = hashlib.sha256(ref.encode()).hexdigest()[:24]
    secret = base64.b64encode(f"CANARYSECRET-{digest}".encode()).decode()
    return KeyMaterial(api_key=f"{CANARY_PREFIX}-{digest}", api_secret=secret)


def resolved_keys(spec: FleetSpec, *, version: int = 3) -> list[ResolvedKey]:
    """Keys as deploy mode would resolve them: material present, fingerprint from material."""
    keys = []
    for entry in spec.entries():
        material = canary_material(entry.ref)
        keys.append(
            ResolvedKey(
                entry=entry,
                mount=spec.vault.mount,
                path=entry.key_path,
                version=version,
                fingerprint=fingerprint_of(material.api_key),
                identity_source="material",
                permissions=tuple(entry.process.permissions) if entry.process.permissions else None,
                material=material,
            )
        )
    return keys


def canary_strings(keys: list[ResolvedKey]) -> list[str]:
    """Every secret string that must appear only inside Pulumi secrets."""
    out = []
    for key in keys:
        assert key.material is not None
        out += [key.material.api_key, key.material.api_secret]
    return out


def example_spec() -> FleetSpec:
    return load_spec(EXAMPLE_SPEC)
