"""The spec's typed model: every field users edit, with its type, default and single-field rules."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from keyfence_policies.labels import canonical_key_path
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictBool,
    StrictInt,
    StrictStr,
    field_validator,
)

from .source import brief

# Patterns end in \Z, not $: $ also matches before a trailing newline, so "name\n" would pass.
DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")
MAX_SUBACCOUNT_NAME = 63
"""A subaccount name is its Namespace name: a DNS-1123 label."""
MAX_PROCESS_NAME = 46
"""Pods are named ``<deployment>-<10-char hash>-<5-char suffix>``; 46 + 17 keeps them a 63-char label."""
MAX_INSTANCE_LABEL = 63
"""``app.kubernetes.io/instance`` is ``<subaccount>-<process>``, a label value of at most 63 characters."""
RESERVED_NAMESPACES = frozenset({"default", "kube-system", "kube-public", "kube-node-lease"})

PATH_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\Z")
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
SECRET_LOOKING_ENV = re.compile(r"(SECRET|API_?KEY|PASSWORD|PASSPHRASE|TOKEN|PRIVATE|CREDENTIAL|OTP)", re.I)
QUANTITY = re.compile(r"^(?P<num>[0-9]+(\.[0-9]+)?|\.[0-9]+)(?P<suffix>m|k|M|G|T|P|E|Ki|Mi|Gi|Ti|Pi|Ei)?\Z")
_SUFFIX_SCALE = {
    None: Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10**3),
    "M": Decimal(10**6),
    "G": Decimal(10**9),
    "T": Decimal(10**12),
    "P": Decimal(10**15),
    "E": Decimal(10**18),
    "Ki": Decimal(2**10),
    "Mi": Decimal(2**20),
    "Gi": Decimal(2**30),
    "Ti": Decimal(2**40),
    "Pi": Decimal(2**50),
    "Ei": Decimal(2**60),
}

Delivery = Literal["pulumi-secret", "vault-secrets-operator", "external-secrets"]
"""How a key reaches its pod: through Pulumi state, or read in-cluster by an operator."""
WorkloadKind = Literal["deployment", "statefulset"]
OPERATOR_DELIVERIES: frozenset[str] = frozenset({"vault-secrets-operator", "external-secrets"})
DURATION = re.compile(r"^[0-9]+(s|m|h)\Z")
MAX_GRACE_SECONDS = 3600
DEFAULT_GRACE_SECONDS = 30
GRACE_DESCRIPTION = (
    "terminationGracePeriodSeconds of the pod (default 30): on SIGTERM the process stops signing at once, "
    "and is killed after this many seconds."
)

EXTRA_FIELD_HINTS = {
    "replicas": "a process is always exactly one pod: one key, one nonce sequence; "
    "to scale, add another process with its own key",
    "api_key": "key material never goes in the spec; register it with 'keyfence keys register'",
    "api_secret": "key material never goes in the spec; register it with 'keyfence keys register'",
    "secret": "key material never goes in the spec; register it with 'keyfence keys register'",
    "terminationGracePeriodSeconds": "write it termination_grace_period_seconds",
}


# --------------------------------------------------------------------------- field types


def _dns_label(kind: str, max_len: int) -> Any:
    def check(value: str) -> str:
        if len(value) > max_len:
            raise ValueError(f"{kind} {brief(value)} is {len(value)} characters; at most {max_len} fit")
        if not DNS_LABEL.match(value):
            raise ValueError(
                f"{kind} {brief(value)} is not a DNS-1123 label: use lowercase letters, digits and '-', "
                "starting and ending with a letter or digit"
            )
        return value

    return check


def _vault_path(kind: str) -> Any:
    def check(value: str) -> str:
        if "%" in value or "\\" in value:
            raise ValueError(
                f"{kind} {brief(value)} contains '%' or '\\': write the path literally, unencoded"
            )
        canonical = canonical_key_path(value)
        if not canonical:
            raise ValueError(f"{kind} {brief(value)} is empty once '/' are trimmed")
        for segment in canonical.split("/"):
            if segment in (".", ".."):
                raise ValueError(
                    f"{kind} {brief(value)} contains {brief(segment)}: Vault paths cannot climb directories"
                )
            if not PATH_SEGMENT.match(segment):
                raise ValueError(
                    f"{kind} {brief(value)}: segment {brief(segment)} may hold only letters, digits, "
                    "'.', '_' and '-', starting with a letter or digit"
                )
        return canonical

    return check


def quantity_to_str(value: Any) -> Any:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return str(value)
    return value


def _check_quantity(value: str) -> str:
    if not QUANTITY.match(value):
        raise ValueError(f"{brief(value)} is not a Kubernetes quantity (examples: 250m, 1, 512Mi, 2Gi)")
    return value


def quantity_value(value: str) -> Decimal:
    """A quantity's magnitude, so limits can be compared with requests."""
    match = QUANTITY.match(value)
    if not match:
        raise ValueError(value)
    try:
        return Decimal(match["num"]) * _SUFFIX_SCALE[match["suffix"]]
    except InvalidOperation as exc:  # pragma: no cover - the regex admits only decimals
        raise ValueError(value) from exc


Quantity = Annotated[StrictStr, BeforeValidator(quantity_to_str)]
Grace = Annotated[StrictInt, Field(ge=1, le=MAX_GRACE_SECONDS)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=False)


class ResourceAmounts(_Strict):
    """CPU and memory, as Kubernetes quantities."""

    cpu: Quantity | None = Field(None, description="CPU, e.g. 250m or 1.")
    memory: Quantity | None = Field(None, description="Memory, e.g. 256Mi or 1Gi.")

    @field_validator("cpu", "memory")
    @classmethod
    def _quantity(cls, value: str | None) -> str | None:
        return None if value is None else _check_quantity(value)

    def as_dict(self) -> dict[str, str]:
        """The amounts that are set, as Kubernetes expects them."""
        return {k: v for k, v in (("cpu", self.cpu), ("memory", self.memory)) if v is not None}


DEFAULT_REQUESTS = ResourceAmounts(cpu="50m", memory="64Mi")
DEFAULT_LIMITS = ResourceAmounts(cpu="500m", memory="256Mi")


class Resources(_Strict):
    """Pod resources; any value left out takes keyfence's default (requests 50m/64Mi, limits 500m/256Mi)."""

    requests: ResourceAmounts = Field(
        default_factory=ResourceAmounts, description="Guaranteed CPU and memory."
    )
    limits: ResourceAmounts = Field(
        default_factory=ResourceAmounts, description="Ceilings for CPU and memory."
    )

    def effective(self) -> tuple[ResourceAmounts, ResourceAmounts]:
        """Requests and limits with defaults filled in."""
        requests = ResourceAmounts(
            cpu=self.requests.cpu or DEFAULT_REQUESTS.cpu,
            memory=self.requests.memory or DEFAULT_REQUESTS.memory,
        )
        limits = ResourceAmounts(
            cpu=self.limits.cpu or DEFAULT_LIMITS.cpu, memory=self.limits.memory or DEFAULT_LIMITS.memory
        )
        return requests, limits


class Process(_Strict):
    """One trading process: one pod, one API key, one nonce sequence."""

    name: StrictStr = Field(description="DNS-1123 label, unique within its subaccount; the Deployment name.")
    role: Literal["market-data", "trader", "risk", "accounting", "treasury"] = Field(
        description="What the process does; bounds the permissions its key may carry."
    )
    image: StrictStr = Field(description="Container image, pinned by tag or digest.")
    key: StrictStr | None = Field(
        None,
        description="Vault path of the key inside the KV mount; default <prefix>/<subaccount>/<process>.",
    )
    args: list[StrictStr] = Field(default_factory=list, description="Container arguments.")
    env: dict[StrictStr, StrictStr] = Field(
        default_factory=dict,
        description="Plain, non-secret environment values. Key material is mounted, never here.",
    )
    resources: Resources = Field(default_factory=Resources, description="CPU and memory requests and limits.")
    permissions: list[StrictStr] | None = Field(
        None, description="The exact permission set the key must carry; checked against Vault metadata."
    )
    allow_withdrawals: StrictBool = Field(
        False, description="Only for role treasury on the master: lets its key hold withdrawal rights."
    )
    delivery: Delivery | None = Field(None, description="Key delivery; default: its subaccount's.")
    workload: WorkloadKind | None = Field(None, description="Workload kind; default: its subaccount's.")
    termination_grace_period_seconds: Grace | None = Field(None, description=GRACE_DESCRIPTION)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        result: str = _dns_label("process name", MAX_PROCESS_NAME)(value)
        return result

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if not value or any(c.isspace() for c in value):
            raise ValueError(f"image {brief(value)} must be a non-empty image reference without spaces")
        if "@sha256:" in value:
            return value
        last = value.rsplit("/", 1)[-1]
        if ":" not in last or last.endswith(":latest"):
            raise ValueError(
                f"image {brief(value)} is not pinned: add a version tag or digest (not ':latest'), "
                "so a restart never starts a different build"
            )
        return value

    @field_validator("key")
    @classmethod
    def _key(cls, value: str | None) -> str | None:
        return None if value is None else _vault_path("key path")(value)

    @field_validator("permissions")
    @classmethod
    def _permissions(cls, value: list[str] | None) -> list[str] | None:
        if value is None:
            return None
        duplicates = sorted(p for p, n in Counter(value).items() if n > 1)  # list.count would be quadratic
        if duplicates:
            raise ValueError(f"permissions list {', '.join(duplicates)} more than once")
        return sorted(value)


class Subaccount(_Strict):
    """One exchange subaccount (or the master account): one strategy, one Namespace."""

    name: StrictStr = Field(description="DNS-1123 label, unique; also the Namespace name.")
    venue: Literal["spot", "futures"] = Field(description="Kraken spot or derivatives (futures) account.")
    master: StrictBool = Field(False, description="True for the master account (at most one).")
    institutional: StrictBool = Field(
        False,
        description="Must be true on a non-master spot subaccount: Kraken offers those to institutions only.",
    )
    processes: list[Process] = Field(min_length=1, description="The processes trading in this subaccount.")
    delivery: Delivery | None = Field(None, description="How its keys reach the pods; default: the fleet's.")
    workload: WorkloadKind | None = Field(None, description="Workload kind; default: the fleet's.")
    termination_grace_period_seconds: Grace | None = Field(None, description=GRACE_DESCRIPTION)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        result: str = _dns_label("subaccount name", MAX_SUBACCOUNT_NAME)(value)
        if result in RESERVED_NAMESPACES or result.startswith("kube-"):
            raise ValueError(
                f"subaccount name {brief(value)} is a reserved Kubernetes namespace; choose another"
            )
        return result


class VaultSection(_Strict):
    """Where keys live in Vault."""

    mount: StrictStr = Field("secret", description="KV version 2 mount.")
    prefix: StrictStr = Field(
        "kraken", description="Default key path prefix: <prefix>/<subaccount>/<process>."
    )
    ledger: StrictStr = Field(
        "keyfence/ledger",
        description="Where the key ledger lives in the mount: one record per key at <ledger>/<fingerprint>.",
    )

    @field_validator("mount")
    @classmethod
    def _mount(cls, value: str) -> str:
        result: str = _vault_path("vault mount")(value)
        return result

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        result: str = _vault_path("vault prefix")(value)
        return result

    @field_validator("ledger")
    @classmethod
    def _ledger(cls, value: str) -> str:
        result: str = _vault_path("vault ledger")(value)
        return result


class OperatorSection(_Strict):
    """Settings of the in-cluster operators that read keys from Vault (operator delivery modes only)."""

    vault_address: StrictStr | None = Field(
        None, description="Vault address the operator reaches (required for external-secrets)."
    )
    kubernetes_auth_mount: StrictStr = Field(
        "kubernetes", description="Vault Kubernetes auth mount the operator logs in with."
    )
    audience: StrictStr = Field("vault", description="Audience of the service-account tokens sent to Vault.")
    vault_connection: StrictStr | None = Field(
        None, description="vault-secrets-operator VaultConnection name; default: the operator's default."
    )
    refresh_interval: StrictStr = Field(
        "1h", description="How often the operator re-reads the key (e.g. 30s, 15m, 1h)."
    )
    restart: Literal["keyfence-annotation", "reloader"] = Field(
        "keyfence-annotation",
        description="external-secrets: how pods restart on rotation (pinned version + pod annotation, "
        "or Stakater Reloader).",
    )

    @field_validator("refresh_interval")
    @classmethod
    def _interval(cls, value: str) -> str:
        if not DURATION.match(value):
            raise ValueError(f"refresh interval {brief(value)} must be a number and s, m or h (e.g. 1h)")
        if int(value[:-1]) == 0:
            raise ValueError("refresh interval must be above 0: 0 would read the key once and never again")
        return value

    @field_validator("kubernetes_auth_mount")
    @classmethod
    def _mount(cls, value: str) -> str:
        result: str = _vault_path("kubernetes auth mount")(value)
        return result

    @field_validator("vault_address")
    @classmethod
    def _address(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^\s/]+", value):
            raise ValueError(f"vault address {brief(value)} must be an http(s) URL")
        parts = urlsplit(value or "")
        segments = [s for s in parts.path.split("/") if s]
        if "v1" in segments:
            # The operators call <address>/v1/... themselves: a second /v1 reaches no mount at all.
            base = f"{parts.scheme}://{parts.netloc}" + "/".join(["", *segments[: segments.index("v1")]])
            raise ValueError(
                f"vault address {brief(value)} includes the API path /v1: give the server's address only "
                f"({base}); the operators add /v1 themselves"
            )
        return value


@dataclass(frozen=True)
class Location:
    """Where a spec entry is written: file, line and column (1-based) and its dotted field path."""

    file: str
    line: int
    column: int
    field: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.column} ({self.field})"


@dataclass(frozen=True)
class ProcessEntry:
    """A process with everything downstream needs: its subaccount, key path and spec location."""

    subaccount: Subaccount
    process: Process
    key_path: str
    location: Location
    delivery: str = "pulumi-secret"
    """The effective delivery: the process's, else its subaccount's, else the fleet's."""
    workload: str = "deployment"
    grace_seconds: int = DEFAULT_GRACE_SECONDS

    @property
    def operator_delivered(self) -> bool:
        """True when an in-cluster operator reads the key: the program reads metadata only."""
        return self.delivery in OPERATOR_DELIVERIES

    @property
    def ref(self) -> str:
        """``<subaccount>/<process>``: how people name a process."""
        return f"{self.subaccount.name}/{self.process.name}"

    @property
    def vault_role(self) -> str:
        """The process's own Vault policy and Kubernetes-auth role: ``keyfence-<subaccount>.<process>``.

        Both names are DNS labels, which hold '-' but never '.': joined by '.', no two processes
        share a role (joined by '-', alpha-beta/feed and alpha/beta-feed would, and the role
        written last would lock the other out).
        """
        return f"keyfence-{self.subaccount.name}.{self.process.name}"


class FleetSpec(_Strict):
    """A fleet: subaccounts, each with the processes that trade in it."""

    version: Literal[1] = Field(description="Spec format version; 1.")
    vault: VaultSection = Field(default_factory=VaultSection, description="Where keys live in Vault.")
    subaccounts: list[Subaccount] = Field(min_length=1, description="Subaccounts, each a strategy.")
    delivery: Delivery = Field("pulumi-secret", description="How keys reach their pods, fleet-wide default.")
    workload: WorkloadKind = Field("deployment", description="Workload kind of every process, by default.")
    termination_grace_period_seconds: Grace = Field(DEFAULT_GRACE_SECONDS, description=GRACE_DESCRIPTION)
    operators: OperatorSection = Field(
        default_factory=OperatorSection, description="Settings of the operator delivery modes."
    )

    _source: str = PrivateAttr("<spec>")
    _locations: dict[tuple[str, str], Location] = PrivateAttr(default_factory=dict)

    @property
    def source(self) -> str:
        return self._source

    def entries(self) -> list[ProcessEntry]:
        """Every process in spec order, with its canonical key path and location."""
        out = []
        for sub in self.subaccounts:
            for proc in sub.processes:
                path = proc.key or canonical_key_path(f"{self.vault.prefix}/{sub.name}/{proc.name}")
                location = self._locations.get(
                    (sub.name, proc.name), Location(self._source, 1, 1, f"{sub.name}/{proc.name}")
                )
                out.append(
                    ProcessEntry(
                        sub,
                        proc,
                        path,
                        location,
                        delivery=proc.delivery or sub.delivery or self.delivery,
                        workload=proc.workload or sub.workload or self.workload,
                        grace_seconds=proc.termination_grace_period_seconds
                        or sub.termination_grace_period_seconds
                        or self.termination_grace_period_seconds,
                    )
                )
        return out
