"""What ``keyfence check`` tells the policy pack about keys: non-secret facts, never material.

The pack cannot trust labels or annotations (a transformation may rewrite them), so the check
reads each key's facts itself, in its own process (never from the program under check), and
hands them to the pack as config.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ..errors import KeyfenceError, VaultError
from ..keys import METADATA_SECRET_FINGERPRINT, ResolvedKey, metadata_facts, resolve_keys
from ..spec import FleetSpec
from ..vault import KeyAccessDeniedError, KeyMetadata, KV2Client
from ..vault.errors import KeyNotFoundError, KVMountError
from ..vault.listing import FolderListings, tree_metadata


@dataclass
class KeyFacts:
    """What ``keyfence check`` tells the policy pack about keys: never material, only non-secret facts.

    The pack cannot trust labels or annotations (a transformation may rewrite them), so it is
    told, as config, each key's Vault path, fingerprints, subaccount, venue and permissions,
    which fleet process it belongs to, and where keys live in Vault.
    """

    entries: list[dict[str, object]]
    verified: bool
    """Every key under ``prefixes`` is listed as Vault holds it (check mode)."""
    prefixes: list[str]
    notes: list[str] = field(default_factory=list)

    def config(self) -> dict[str, object]:
        """The pack config properties (``knownKeys``, ``vaultVerified``, ``keyPrefixes``)."""
        return {"knownKeys": self.entries, "vaultVerified": self.verified, "keyPrefixes": self.prefixes}


def _entry(key: ResolvedKey) -> dict[str, object]:
    entry = key.entry
    out: dict[str, object] = {
        "mount": key.mount,
        "path": key.path,
        "subaccount": key.subaccount,
        "venue": key.venue,
        "process": entry.ref,
        "namespace": entry.subaccount.name,
        "master": entry.subaccount.master,
    }
    if key.fingerprint:
        out["fingerprint"] = key.fingerprint
    if key.secret_fingerprint:
        out["secretFingerprint"] = key.secret_fingerprint
    permissions = key.vault_permissions if key.identity_source != "offline" else key.permissions
    if permissions is not None:
        out["permissions"] = list(permissions)
    return out


def _gone(error: KeyfenceError) -> bool:
    """A key deleted since it was listed: no key to recognise (a mount problem is no such thing)."""
    return isinstance(error, KeyNotFoundError) and not isinstance(error, KVMountError)


def offline_facts(spec: FleetSpec, keys: list[ResolvedKey] | None = None) -> KeyFacts:
    """The fleet spec's word on each process's key: paths and subaccounts, no fingerprints."""
    resolved = keys if keys is not None else resolve_keys(spec, None, "offline")
    return KeyFacts([_entry(k) for k in resolved], False, [f"{spec.vault.mount}/{spec.vault.prefix}"])


def _other_key(
    client: KV2Client, mount: str, path: str, known: Mapping[str, KeyMetadata]
) -> dict[str, object] | None:
    metadata = known.get(path) or client.read_metadata(mount, path)
    facts, _ = metadata_facts(metadata.custom_metadata, "spot")
    out: dict[str, object] = {"mount": mount, "path": path}
    for name, value in (
        ("fingerprint", facts.fingerprint),
        ("secretFingerprint", facts.secret_fingerprint),
        ("subaccount", facts.subaccount),
        ("venue", facts.venue),
    ):
        if value:
            out[name] = value
    if facts.permissions is not None:
        out["permissions"] = list(facts.permissions)
    if "secretFingerprint" not in out and metadata.current is not None and metadata.current.available:
        out["current_version"] = metadata.current_version
    return out


def _secret_fingerprint(client: KV2Client, entry: dict[str, object]) -> str | None:
    """Fingerprint a key's api secret when metadata lacks it; the material is dropped at once."""
    version = entry.pop("current_version", None)
    if not isinstance(version, int):
        return None
    try:
        return client.read_version(str(entry["mount"]), str(entry["path"]), version).secret_fingerprint
    except KeyAccessDeniedError:
        return None


def vault_facts(
    client: KV2Client, spec: FleetSpec, keys: list[ResolvedKey], listings: FolderListings | None = None
) -> KeyFacts:
    """Facts of the fleet's keys and of every other key under the prefix, from Vault metadata.

    ``listings`` are the folder listings :func:`resolve_keys` made for ``keys``: a folder it
    listed is not asked again.

    A key whose metadata lacks ``secret_fingerprint`` is read once (if the token may) to
    fingerprint its api secret, so that a copy of the secret alone is recognised too.

    Raises VaultError (exit 2) when the keys under the prefix cannot all be listed, when one's
    metadata cannot be read, or when one has no fingerprint and its material cannot be read:
    the pack could not recognise a copy of such a key, so the check cannot pass.
    """
    mount, prefix = spec.vault.mount, spec.vault.prefix
    facts = KeyFacts([_entry(k) for k in keys], True, [f"{mount}/{prefix}"])
    fleet = {(k.mount, k.path) for k in keys}
    # One detailed-metadata listing per folder (OpenBao) answers the keys' metadata at once; which keys
    # there are is the plain listing's word: a policy's list filter drops keys from a detailed page
    # after it is cut, so a short page may not be the last. Keys it does not show are read.
    known = tree_metadata(listings or FolderListings(client, mount), prefix) or {}
    try:
        listed = client.list_keys(mount, prefix)
    except KeyfenceError as exc:
        # Without every key under the prefix the pack cannot recognise a copy of one pasted into
        # the stack (another strategy's key would pass): not provable, so not a pass.
        raise VaultError(
            f"keyfence check cannot list the keys under {mount}/{prefix}: "
            f"{exc.cause}; it needs every key there to recognise a "
            "copy of one in the stack (grant the token 'list' on "
            f"{mount}/metadata/{prefix}/*, see docs/vault-policies/ci-metadata.hcl)"
        ) from None
    others = [path for path in listed if (mount, path) not in fleet]
    unlisted = [path for path in others if path not in known]
    outcome_of = client.read_many(lambda path: _other_key(client, mount, path, known), unlisted)
    read = dict(zip(unlisted, outcome_of, strict=True))
    outcomes = [read[path] if path in read else _other_key(client, mount, path, known) for path in others]
    failed = [
        (path, o)
        for path, o in zip(others, outcomes, strict=True)
        if isinstance(o, KeyfenceError) and not _gone(o)
    ]
    for outcome in outcomes:
        if isinstance(outcome, dict):
            facts.entries.append(outcome)
    if failed:
        # A key whose fingerprints are unknown cannot be recognised pasted into the stack: not a pass.
        raise VaultError(
            f"keyfence check cannot read the metadata of every key under {mount}/{prefix}: it needs "
            "their fingerprints to recognise a copy of one in the stack; grant the token 'read' on "
            f"{mount}/metadata/{prefix}/* (docs/vault-policies/ci-metadata.hcl)",
            problems=[f"{mount}/{path}: {e.cause}" for path, e in failed],
        )
    for k, entry in zip(keys, facts.entries, strict=False):
        if "secretFingerprint" not in entry and k.version is not None:
            entry["current_version"] = k.version
    missing = [e for e in facts.entries if "current_version" in e]
    # One read tells whether the token may read material at all (a CI token may not): if not, skip the rest.
    found: list[object] = client.read_many(lambda entry: _secret_fingerprint(client, entry), missing[:1])
    if found and isinstance(found[0], str):
        found += client.read_many(lambda entry: _secret_fingerprint(client, entry), missing[1:])
    found += [None] * (len(missing) - len(found))
    unreadable = 0
    blind: list[str] = []
    for entry, digest in zip(missing, found, strict=True):
        entry.pop("current_version", None)
        if isinstance(digest, str):
            entry["secretFingerprint"] = digest
        else:
            unreadable += 1
            if "fingerprint" not in entry:
                blind.append(f"{entry['mount']}/{entry['path']}")
    if blind:
        # Neither half of such a key could be recognised pasted into the stack: not a pass.
        raise VaultError(
            f"keyfence check cannot fingerprint every key under {mount}/{prefix}: their metadata has no "
            f"fingerprint and the token may not read them; register them with 'keyfence keys register' "
            "(which records both fingerprints), or remove them",
            problems=blind,
        )
    if unreadable:
        facts.notes.append(
            f"{unreadable} key(s) have no {METADATA_SECRET_FINGERPRINT} in their metadata and the token may "
            "not read them: a copy of their api secret alone is not recognised (re-register them with "
            "'keyfence keys register')"
        )
    return facts
