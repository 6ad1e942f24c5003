"""Synthetic fleets: a valid spec and one distinct key per process, the same on every run.

A benchmark is only comparable across runs and machines if its input is: names, roles,
images and key material are derived from the process index alone (no randomness). Every
role appears, subaccounts alternate futures and institutional spot, and the first one is
the master, whose first treasury process may withdraw: the fleet exercises every branch a
real desk's spec does, and the policy pack finds nothing wrong with it.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import yaml
from keyfence_policies import permissions as perms

from keyfence.material import KeyMaterial

MOUNT: Final = "secret"
MASTER_NAME: Final = "main"


@dataclass(frozen=True)
class BenchSubaccount:
    """One subaccount of the synthetic fleet."""

    name: str
    venue: perms.Venue
    master: bool = False

    @property
    def institutional(self) -> bool:
        """Non-master spot subaccounts must be institutional for the spec to be valid."""
        return self.venue == "spot" and not self.master


@dataclass(frozen=True)
class BenchProcess:
    """One process: what its spec entry says, where its key lives, and the key itself."""

    subaccount: BenchSubaccount
    name: str
    role: perms.Role
    image: str
    key_path: str
    permissions: tuple[str, ...]
    material: KeyMaterial = field(repr=False)
    allow_withdrawals: bool = False
    args: tuple[str, ...] = ()
    env: tuple[tuple[str, str], ...] = ()
    listed_permissions: bool = False
    """Whether the spec states the permissions too (they then must equal Vault's)."""

    @property
    def ref(self) -> str:
        return f"{self.subaccount.name}/{self.name}"


@dataclass(frozen=True)
class Fleet:
    """A whole synthetic fleet; ``prefix`` keeps fleets of several sizes apart in one Vault."""

    prefix: str
    subaccounts: tuple[BenchSubaccount, ...]
    processes: tuple[BenchProcess, ...]
    mount: str = MOUNT

    @property
    def ledger(self) -> str:
        """The fleet's own key ledger (spec ``vault.ledger``).

        A real ledger holds every stack's keys, and reading it lists all of its records; one
        ledger per benchmark fleet keeps each size's ledger stages to that size's records,
        not to every fleet seeded before it in the same Vault.
        """
        return f"keyfence/bench-ledgers/{self.prefix}"

    def by_subaccount(self) -> dict[str, list[BenchProcess]]:
        """Processes grouped by subaccount, in spec order."""
        out: dict[str, list[BenchProcess]] = {s.name: [] for s in self.subaccounts}
        for process in self.processes:
            out[process.subaccount.name].append(process)
        return out

    def spec_data(self) -> dict[str, Any]:
        """The fleet spec as plain data, ready for YAML."""
        grouped = self.by_subaccount()
        subaccounts = []
        for sub in self.subaccounts:
            entry: dict[str, Any] = {"name": sub.name, "venue": sub.venue}
            if sub.master:
                entry["master"] = True
            if sub.institutional:
                entry["institutional"] = True
            entry["processes"] = [_process_data(p) for p in grouped[sub.name]]
            subaccounts.append(entry)
        return {
            "version": 1,
            "vault": {"mount": self.mount, "prefix": self.prefix, "ledger": self.ledger},
            "subaccounts": subaccounts,
        }

    def spec_yaml(self) -> str:
        return yaml.safe_dump(self.spec_data(), sort_keys=False)

    def write_spec(self, directory: Path) -> Path:
        """Write the spec as ``<prefix>.yaml`` under ``directory`` and return its path."""
        path = directory / f"{self.prefix}.yaml"
        path.write_text(self.spec_yaml(), encoding="utf-8")
        return path


def _process_data(process: BenchProcess) -> dict[str, Any]:
    data: dict[str, Any] = {"name": process.name, "role": process.role, "image": process.image}
    if process.args:
        data["args"] = list(process.args)
    if process.env:
        data["env"] = dict(process.env)
    if process.allow_withdrawals:
        data["allow_withdrawals"] = True
    if process.listed_permissions:
        data["permissions"] = list(process.permissions)
    return data


def material_for(seed: str, ref: str) -> KeyMaterial:
    """A Kraken-shaped key pair (56-character key, base64 64-byte secret), fixed by seed and ref."""
    digest = hashlib.sha512(f"{seed}:{ref}".encode()).digest()
    api_key = base64.urlsafe_b64encode(digest[:42]).decode("ascii")
    secret = hashlib.sha512(digest).digest()
    return KeyMaterial(api_key=api_key, api_secret=base64.b64encode(secret).decode("ascii"))


def _subaccounts(count: int) -> tuple[BenchSubaccount, ...]:
    out = [BenchSubaccount(MASTER_NAME, "spot", master=True)]
    for index in range(1, count):
        venue: perms.Venue = "futures" if index % 2 else "spot"
        out.append(BenchSubaccount(f"{'fut' if venue == 'futures' else 'spot'}-{index:03d}", venue))
    return tuple(out)


def generate(processes: int, subaccounts: int = 20, *, prefix: str | None = None) -> Fleet:
    """A fleet of ``processes`` processes spread round-robin over ``subaccounts`` subaccounts."""
    if processes < 1 or subaccounts < 1:
        raise ValueError("a fleet needs at least one process and one subaccount")
    prefix = prefix or f"bench{processes}"
    subs = _subaccounts(min(subaccounts, processes))
    out: list[BenchProcess] = []
    withdrawing_treasury = False
    for index in range(processes):
        sub = subs[index % len(subs)]
        role = perms.ROLES[(index // len(subs)) % len(perms.ROLES)]
        withdraws = sub.master and role == "treasury" and not withdrawing_treasury
        withdrawing_treasury |= withdraws
        allowed = perms.allowance(role, sub.venue, master=sub.master, allow_withdrawals=withdraws)
        name = f"{role}-{index:05d}"
        out.append(
            BenchProcess(
                subaccount=sub,
                name=name,
                role=role,
                image=f"ghcr.io/acme/{role}:1.{index % 7}.{index % 3}",
                key_path=f"{prefix}/{sub.name}/{name}",
                permissions=tuple(sorted(allowed)),
                material=material_for(prefix, f"{sub.name}/{name}"),
                allow_withdrawals=withdraws,
                args=("--strategy", sub.name) if index % 2 == 0 else (),
                env=(("LOG_LEVEL", "info"),) if index % 3 == 0 else (),
                listed_permissions=index % 2 == 1,
            )
        )
    return Fleet(prefix=prefix, subaccounts=subs, processes=tuple(out))
