"""Least-privilege Vault access for the operator delivery modes, one policy and role per process.

Each operator-delivered process logs in to Vault (Kubernetes auth) as its own ServiceAccount,
through a role bound to exactly that ServiceAccount and namespace, whose policy can read
exactly one KV v2 path: its own key. Nothing here reads Vault; it renders text from the spec.
"""

from __future__ import annotations

from dataclasses import dataclass

from keyfence_policies.labels import canonical_key_path

from ..spec import FleetSpec, ProcessEntry

TOKEN_TTL = "10m"
"""Operator tokens live briefly: each sync logs in again with a fresh ServiceAccount token."""


@dataclass(frozen=True)
class ProcessAccess:
    """The Vault policy and Kubernetes-auth role one operator-delivered process needs."""

    entry: ProcessEntry
    mount: str
    auth_mount: str
    audience: str

    @property
    def name(self) -> str:
        return self.entry.vault_role

    @property
    def data_path(self) -> str:
        return f"{canonical_key_path(self.mount)}/data/{self.entry.key_path}"

    def policy_hcl(self) -> str:
        return (
            f"# {self.name}: {self.entry.delivery} reads the key of {self.entry.ref}, nothing else.\n"
            f'path "{self.data_path}" {{\n  capabilities = ["read"]\n}}\n'
        )

    def role_command(self) -> str:
        """The ``vault write`` that creates the Kubernetes-auth role, bound to the process's own account."""
        return (
            f"vault write auth/{self.auth_mount}/role/{self.name} \\\n"
            f"    bound_service_account_names={self.entry.process.name} \\\n"
            f"    bound_service_account_namespaces={self.entry.subaccount.name} \\\n"
            f"    audience={self.audience} \\\n"
            f"    token_policies={self.name} token_ttl={TOKEN_TTL} token_max_ttl={TOKEN_TTL}"
        )


def process_access(spec: FleetSpec) -> list[ProcessAccess]:
    """The access of every operator-delivered process, in spec order."""
    ops = spec.operators
    return [
        ProcessAccess(e, spec.vault.mount, ops.kubernetes_auth_mount, ops.audience)
        for e in spec.entries()
        if e.operator_delivered
    ]


def render(spec: FleetSpec) -> str:
    """Every policy (HCL) with the command creating its role, as one text to review or apply."""
    accesses = process_access(spec)
    if not accesses:
        return (
            "# No process of this fleet uses an operator delivery mode (vault-secrets-operator or\n"
            "# external-secrets): the deploy token reads keys itself (docs/vault-policies/deploy.hcl).\n"
        )
    blocks = []
    for access in accesses:
        role = "\n".join(f"#   {line}" for line in access.role_command().splitlines())
        blocks.append(
            f"# ---- {access.entry.ref}: policy '{access.name}' "
            f"(vault policy write {access.name} <this block>)\n"
            f"{access.policy_hcl()}"
            f"# Kubernetes-auth role:\n{role}\n"
        )
    return "\n".join(blocks)
