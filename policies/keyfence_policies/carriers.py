"""Objects a pod can read a key from: Secrets, ConfigMaps, SecretProviderClasses.

A Secret is a key Secret when a keyfence:fleet:Process component declared it (its parent
chain says so, whatever its labels), when it carries the exchange-key label or keyfence's
key annotations, or when it holds a known key's material. Its key is the fleet process's
key when the facts know it, else the key its annotations name. The material a key Secret
holds is hashed here, once, so a copy of it anywhere else in the stack is recognised.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final, Literal

from .config import PackConfig
from .keybook import Key, KeyBook
from .labels import KEY_FILES, MATERIAL_PLACEHOLDER
from .objects import StackObject
from .props import Node, Problems
from .scan import MIN_MATERIAL, Hit, decode_base64, digest

CarrierKind = Literal["Secret", "ConfigMap", "SecretProviderClass"]
MATERIAL_FIELDS: Final = ("stringData", "data")


@dataclass
class SecretInfo:
    """A Secret, ConfigMap or SecretProviderClass of the stack (or one a secrets operator will create)."""

    urn: str | None
    namespace: str
    name: str | None
    labels: dict[str, str]
    annotations: dict[str, str]
    problems: Problems
    is_key: bool
    key_uncertain: bool
    kind: CarrierKind = "Secret"
    fleet_process: str | None = None
    key: Key | None = None
    """The key it holds (or claims to hold)."""
    claimed: Key | None = None
    """The key its own annotations name, when they name one."""
    held: list[Key] = field(default_factory=list)
    """Keys whose material it holds (by digest)."""
    hits: list[Hit] = field(default_factory=list)
    origin: str | None = None
    """For a Secret the stack does not declare but a secrets operator creates: who creates it."""
    declares_data: bool = False
    """It sets ``data``/``stringData`` (or they cannot be read): what a rendered manifest would hold."""

    @property
    def ref(self) -> str:
        return f"{self.kind} {self.namespace}/{self.name or '<unnamed>'}"

    @property
    def fleet(self) -> bool:
        return self.fleet_process is not None


def read_secret(obj: StackObject, config: PackConfig, book: KeyBook) -> SecretInfo:
    """A Secret as the pack sees it; a key Secret's material is hashed into the key book."""
    problems = obj.problems
    metadata = obj.metadata
    namespace = obj.namespace
    name = metadata.get("name").text() or None
    if problems:  # a namespace or name that cannot be read cannot be matched to any reference
        name = None
    before = len(problems)
    labels = metadata.get("labels").string_map()
    marker = labels.get(config.labels.exchange_key)
    labelled = marker is not None and marker.strip().lower() == "true"
    if marker is not None and not labelled and marker.strip().lower() != "false":
        problems.add(
            f'metadata.labels["{config.labels.exchange_key}"] is {marker!r}, expected "true" or "false"'
        )
    annotations = metadata.get("annotations").string_map()
    keys = config.annotations
    path, mount = annotations.get(keys.key_path), annotations.get(keys.vault_mount)
    fingerprint = (annotations.get(keys.fingerprint) or "").strip().lower() or None
    is_key = labelled or obj.fleet_process is not None
    claimed = book.claimed(mount, path, fingerprint) if is_key and (path or fingerprint) else None
    # Unreadable metadata (unknown during preview, or not an object) hides the labels as well, but its
    # problem was already noted while reading the name, so it adds none here: count it explicitly, or
    # such a Secret would be silently taken for one that holds no key.
    unreadable = not metadata.absent and metadata.mapping() is None
    uncertain = not is_key and (len(problems) > before or unreadable)
    secret = SecretInfo(
        obj.urn,
        namespace,
        name,
        labels,
        annotations,
        problems,
        is_key,
        uncertain,
        fleet_process=obj.fleet_process,
        claimed=claimed,
    )
    secret.declares_data = declares_data(obj.props)
    if obj.fleet_process is not None:
        secret.key = book.for_process(obj.fleet_process, claimed)
    else:
        secret.key = claimed
    if obj.fleet_process is not None:
        _digest_material(secret, obj.props, book)
    return secret


def declares_data(props: Node) -> bool:
    """Whether a Secret sets ``data`` or ``stringData``; a value that cannot be read counts as set."""
    for field_name in MATERIAL_FIELDS:
        node = Node(props.get(field_name).value, field_name, Problems())
        if node.absent:
            continue
        found = node.mapping()
        if found is None or len(found) > 0:
            return True
    return False


def _digest_material(secret: SecretInfo, props: Node, book: KeyBook) -> None:
    """Hash what a fleet key Secret holds: the api key and secret files (or every field, lacking both)."""
    values: list[str] = []
    for field_name in MATERIAL_FIELDS:
        # Read apart from the Secret's problems: material that cannot be read cannot be hashed, and that
        # judges nothing (the key's facts still say which key it is).
        found = Node(props.get(field_name).value, field_name, Problems()).string_map()
        chosen = {k: v for k, v in found.items() if k in KEY_FILES} or found
        for value in chosen.values():
            text = decode_base64(value) if field_name == "data" else value
            if text and text != MATERIAL_PLACEHOLDER and len(text) >= MIN_MATERIAL:
                values.append(text)
    if not values:
        return
    if secret.key is None:
        secret.key = Key()
        book.keys.append(secret.key)
    for value in values:
        holder = book.add_digest(digest(value), secret.key)
        if holder not in secret.held:
            secret.held.append(holder)


def read_config_map(obj: StackObject) -> SecretInfo:
    """A ConfigMap: it carries a key only if the scan finds key material in it."""
    return _not_a_key_secret(obj, "ConfigMap")


def _not_a_key_secret(obj: StackObject, kind: CarrierKind) -> SecretInfo:
    """An object that is not itself a key Secret, by its metadata (a key found in it is added later)."""
    metadata = obj.metadata
    return SecretInfo(
        obj.urn,
        obj.namespace,
        metadata.get("name").text() or None,
        metadata.get("labels").string_map(),
        metadata.get("annotations").string_map(),
        obj.problems,
        is_key=False,
        key_uncertain=False,
        kind=kind,
    )


def read_provider_class(obj: StackObject) -> tuple[SecretInfo, list[str]]:
    """A SecretProviderClass, and the Secrets it syncs (``spec.secretObjects[].secretName``)."""
    info = _not_a_key_secret(obj, "SecretProviderClass")
    synced = [
        name
        for item in obj.props.dig("spec", "secretObjects").items()
        if (name := item.get("secretName").text())
    ]
    return info, synced


def destinations(obj: StackObject) -> list[str]:
    """The Secrets a secrets operator's object writes: Vault Secrets Operator, External Secrets, CSI."""
    spec = obj.props.get("spec")
    names = [spec.dig("destination", "name").value, spec.dig("target", "name").value]
    names += [item.get("secretName").value for item in spec.get("secretObjects").items()]
    out = [n for n in names if isinstance(n, str) and n]
    if obj.kind in ("ExternalSecret", "ClusterExternalSecret") and not out:
        out.append(obj.name)  # External Secrets names the target after the ExternalSecret by default
    return out
