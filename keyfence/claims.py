"""``keyfence:ledger:Claim``: a key's claim in the ledger as a Pulumi resource.

Declaring the claim as a resource puts it in the Pulumi lifecycle: ``pulumi preview``
shows it, ``pulumi up`` creates it before the process's Secret and Deployment (they
depend on it) and ``pulumi destroy`` — or dropping the process from the spec — deletes
it, which releases the key. The work is done by a dynamic provider that runs in Pulumi's
provider host, with the same ``VAULT_*`` environment as the program.
"""

from __future__ import annotations

from typing import Any, Final

import pulumi
import pulumi.dynamic

from .keys import ResolvedKey
from .keystore.claims import claim_key, release_claim, retire_if_moved
from .vault import Ledger, VaultSettings, connect

CLAIM_TYPE: Final = "keyfence:ledger:Claim"
INPUTS: Final = ("mount", "ledger", "fingerprint", "path", "stack", "process")
"""What identifies a claim; a change to any of them is a new claim (replace), never an edit."""


def current_stack() -> str:
    """The fully-qualified name of the stack being deployed: ``org/project/stack``.

    Self-managed backends have no organizations; Pulumi calls theirs ``organization``.
    """
    organization = pulumi.get_organization() or "organization"
    return f"{organization}/{pulumi.get_project()}/{pulumi.get_stack()}"


def _ledger_call(props: dict[str, Any]) -> tuple[Ledger, str, str, str, str]:
    missing = [name for name in INPUTS if not isinstance(props.get(name), str) or not props[name]]
    if missing:
        raise ValueError(
            f"{CLAIM_TYPE} {props.get('process')!r}: no {', '.join(missing)}; "
            "claims are declared by keyfence's program from a verified key"
        )
    settings = VaultSettings.from_env()
    client = connect(settings)
    return (
        Ledger(client, props["mount"], props["ledger"]),
        props["fingerprint"],
        props["path"],
        props["stack"],
        props["process"],
    )


class ClaimProvider(pulumi.dynamic.ResourceProvider):
    """Creates and deletes ledger claims; runs in the provider host, so it connects on its own."""

    serialize_as_secret_always = False
    """It captures no secret (Vault credentials come from the environment when it runs), so its
    serialized form stays a plain value and only key Secrets carry Pulumi secrets."""

    def create(self, props: dict[str, Any]) -> pulumi.dynamic.CreateResult:
        ledger, fingerprint, path, stack, process = _ledger_call(props)
        with ledger.client:
            record = claim_key(ledger, fingerprint, path, stack, process)
        outs = {name: props[name] for name in INPUTS}
        outs["claimed_at"] = record.claimed_at
        return pulumi.dynamic.CreateResult(id_=ledger.ref(fingerprint), outs=outs)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> pulumi.dynamic.DiffResult:
        replaces = [name for name in INPUTS if olds.get(name) != news.get(name)]
        return pulumi.dynamic.DiffResult(
            changes=bool(replaces), replaces=replaces, delete_before_replace=False
        )

    def delete(self, _id: str, props: dict[str, Any]) -> None:
        ledger, fingerprint, path, stack, process = _ledger_call(props)
        with ledger.client:
            release_claim(ledger, fingerprint, stack, process)
            retire_if_moved(ledger.client, ledger, fingerprint, path)


class _ClaimRecord(pulumi.dynamic.Resource, module="ledger", name="Claim"):
    """The dynamic resource itself; ``Claim`` gives it keyfence's type name as its parent."""

    claimed_at: pulumi.Output[str]

    def __init__(self, name: str, props: dict[str, Any], opts: pulumi.ResourceOptions) -> None:
        super().__init__(ClaimProvider(), name, {**props, "claimed_at": None}, opts)


def claim_inputs(key: ResolvedKey, stack: str) -> dict[str, str]:
    """The claim's plain inputs: known at preview time, no material."""
    return {
        "mount": key.mount,
        "ledger": key.ledger,
        "fingerprint": key.fingerprint or "",
        "path": key.path,
        "stack": stack,
        "process": key.entry.ref,
    }


class Claim(pulumi.ComponentResource):
    """The process's hold on its key in the ledger; the key's Secret and Deployment depend on it."""

    def __init__(self, key: ResolvedKey, stack: str, opts: pulumi.ResourceOptions) -> None:
        ref = key.entry.ref
        super().__init__(CLAIM_TYPE, ref, None, opts)
        inputs = claim_inputs(key, stack)
        self.record = _ClaimRecord(f"{ref}/claim", inputs, pulumi.ResourceOptions(parent=self))
        self.register_outputs(dict(inputs))
