"""Rules across fields and entries (unique names, one master, unique key paths).

They run on the raw YAML, beside the typed model, so every problem is found at once."""

from __future__ import annotations

from typing import Any

from keyfence_policies import permissions as perms
from keyfence_policies.labels import canonical_key_path

from .model import ENV_NAME, MAX_INSTANCE_LABEL, QUANTITY, SECRET_LOOKING_ENV, quantity_to_str, quantity_value
from .source import brief, brief_list, dotted

# --------------------------------------------------------------------------- cross-field rules

Problem = tuple[tuple[Any, ...], str]
"""A pydantic-style location and what is wrong there."""


def _as_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _items(data: Any, key: str) -> list[tuple[int, dict[str, Any]]]:
    """The mapping entries of a list field, with their indices; anything malformed is skipped."""
    value = data.get(key) if isinstance(data, dict) else None
    if not isinstance(value, list):
        return []
    return [(i, item) for i, item in enumerate(value) if isinstance(item, dict)]


def cross_rules(data: Any) -> list[Problem]:
    """Rules that span fields; tolerant of entries that already failed their own validation."""
    if not isinstance(data, dict):
        return []
    vault = data.get("vault")
    prefix = (_as_str(vault.get("prefix")) if isinstance(vault, dict) else None) or "kraken"
    subaccounts = _items(data, "subaccounts")
    problems = _unique_subaccounts_one_master(subaccounts)
    keys_seen: dict[str, tuple[tuple[Any, ...], str]] = {}
    for si, sub in subaccounts:
        problems += _institutional_spot(si, sub)
        processes = _items(sub, "processes")
        problems += _unique_processes(si, sub, processes)
        for pi, proc in processes:
            loc = ("subaccounts", si, "processes", pi)
            problems += _instance_label_fits(loc, sub, proc)
            problems += _unique_key_path(loc, sub, proc, prefix, keys_seen)
            problems += _permissions_fit_role(loc, sub, proc)
            problems += _requests_within_limits(loc, proc)
            problems += _env_names(loc, proc)
    problems += _operator_address(data, subaccounts)
    return problems


def _env_names(loc: tuple[Any, ...], proc: dict[str, Any]) -> list[Problem]:
    """Each bad variable name at its own line, whatever else is wrong in the same map.

    Run on the raw YAML: a value of the wrong type elsewhere in ``env`` (an unquoted number)
    must not hide a credential-named variable beside it.
    """
    env = proc.get("env")
    if not isinstance(env, dict):
        return []
    problems: list[Problem] = []
    for name in env:
        where = (*loc, "env", name)
        if not isinstance(name, str):
            continue  # the typed model reports a non-string name
        if not ENV_NAME.match(name):
            problems.append(
                (where, f"environment variable name {brief(name)} must match [A-Za-z_][A-Za-z0-9_]*")
            )
        elif name.upper().startswith("KEYFENCE_"):
            problems.append(
                (where, f"environment variable {brief(name)}: the KEYFENCE_ prefix is reserved for keyfence")
            )
        elif SECRET_LOOKING_ENV.search(name):
            problems.append(
                (
                    where,
                    f"environment variable {brief(name)} looks like a credential: env holds plain values "
                    "only; the key is mounted as files under /var/run/keyfence/key",
                )
            )
    return problems


def _operator_address(data: dict[str, Any], subaccounts: list[tuple[int, dict[str, Any]]]) -> list[Problem]:
    """external-secrets needs a Vault address for its SecretStore; the other modes do not."""
    operators = data.get("operators")
    if isinstance(operators, dict) and operators.get("vault_address"):
        return []
    fleet = data.get("delivery")
    for si, sub in subaccounts:
        for pi, proc in _items(sub, "processes"):
            if (proc.get("delivery") or sub.get("delivery") or fleet) == "external-secrets":
                return [
                    (
                        ("subaccounts", si, "processes", pi),
                        "this process uses delivery external-secrets, whose SecretStore needs the Vault "
                        "address: set operators.vault_address (e.g. https://vault.example.com:8200)",
                    )
                ]
    return []


def _unique_subaccounts_one_master(subaccounts: list[tuple[int, dict[str, Any]]]) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    masters: list[int] = []
    for si, sub in subaccounts:
        name = _as_str(sub.get("name"))
        if name is not None and name in seen:
            problems.append(
                (
                    ("subaccounts", si, "name"),
                    f"subaccount {brief(name)} is already defined at subaccounts[{seen[name]}]",
                )
            )
        elif name is not None:
            seen[name] = si
        if sub.get("master") is True:
            masters.append(si)
    for si in masters[1:]:
        problems.append(
            (
                ("subaccounts", si, "master"),
                f"only one subaccount may be the master; subaccounts[{masters[0]}] already is",
            )
        )
    return problems


def _institutional_spot(si: int, sub: dict[str, Any]) -> list[Problem]:
    if sub.get("venue") != "spot" or sub.get("master") is True or sub.get("institutional") is True:
        return []
    return [
        (
            ("subaccounts", si, "venue"),
            f"spot subaccount {brief(sub.get('name'))} is not the master: Kraken offers spot subaccounts to "
            "institutional clients only; add 'institutional: true' if yours is one, "
            "or use a futures subaccount",
        )
    ]


def _unique_processes(
    si: int, sub: dict[str, Any], processes: list[tuple[int, dict[str, Any]]]
) -> list[Problem]:
    problems: list[Problem] = []
    seen: dict[str, int] = {}
    for pi, proc in processes:
        name = _as_str(proc.get("name"))
        if name is None:
            continue
        if name in seen:
            problems.append(
                (
                    ("subaccounts", si, "processes", pi, "name"),
                    f"process {brief(name)} is already defined in subaccount {brief(sub.get('name'))} "
                    f"at processes[{seen[name]}]",
                )
            )
        else:
            seen[name] = pi
    return problems


def _instance_label_fits(loc: tuple[Any, ...], sub: dict[str, Any], proc: dict[str, Any]) -> list[Problem]:
    sname, pname = _as_str(sub.get("name")), _as_str(proc.get("name"))
    if sname is None or pname is None or len(sname) + 1 + len(pname) <= MAX_INSTANCE_LABEL:
        return []
    return [
        (
            (*loc, "name"),
            f"{brief(f'{sname}-{pname}')} is {len(sname) + 1 + len(pname)} characters: the instance label "
            f"<subaccount>-<process> must fit {MAX_INSTANCE_LABEL}; shorten either name",
        )
    ]


def _unique_key_path(
    loc: tuple[Any, ...],
    sub: dict[str, Any],
    proc: dict[str, Any],
    prefix: str,
    seen: dict[str, tuple[tuple[Any, ...], str]],
) -> list[Problem]:
    sname, pname, raw_key = _as_str(sub.get("name")), _as_str(proc.get("name")), _as_str(proc.get("key"))
    if raw_key is not None:
        key_path = canonical_key_path(raw_key)
    elif sname is not None and pname is not None:
        key_path = canonical_key_path(f"{prefix}/{sname}/{pname}")
    else:
        return []
    if not key_path:
        return []
    if key_path not in seen:
        seen[key_path] = (loc, f"{sname}/{pname}")
        return []
    other_loc, other = seen[key_path]
    return [
        (
            (*loc, "key") if raw_key is not None else (*loc, "name"),
            f"key path {brief(key_path)} is already assigned to {other} ({dotted(other_loc)}): "
            "two processes may never share a key, each needs its own nonce sequence",
        )
    ]


def _permissions_fit_role(loc: tuple[Any, ...], sub: dict[str, Any], proc: dict[str, Any]) -> list[Problem]:
    problems: list[Problem] = []
    venue, role, master = _as_str(sub.get("venue")), _as_str(proc.get("role")), sub.get("master") is True
    withdrawals = proc.get("allow_withdrawals") is True
    if withdrawals and (role != "treasury" or not master):
        problems.append(
            (
                (*loc, "allow_withdrawals"),
                "allow_withdrawals is only for role treasury on the master account "
                "(Kraken blocks withdrawals from subaccounts)",
            )
        )
    listed = proc.get("permissions")
    if not isinstance(listed, list) or venue not in perms.VENUES or role not in perms.ROLES:
        return problems
    ids = [p for p in listed if isinstance(p, str)]
    unknown = perms.unknown_ids(venue, ids)
    if unknown:
        problems.append(
            (
                (*loc, "permissions"),
                f"not {venue} permission ids: {brief_list(unknown)}; {perms.unknown_advice(venue, unknown)}",
            )
        )
    unknown_set = set(unknown)  # a list here would make long permission lists quadratic
    known = [i for i in ids if i not in unknown_set]
    extra = perms.excess(role, venue, known, master=master, allow_withdrawals=withdrawals)
    if extra:
        problems.append(((*loc, "permissions"), perms.explain_excess(role, venue, extra, master=master)))
    return problems


def _requests_within_limits(loc: tuple[Any, ...], proc: dict[str, Any]) -> list[Problem]:
    res = proc.get("resources")
    req = res.get("requests") if isinstance(res, dict) else None
    lim = res.get("limits") if isinstance(res, dict) else None
    if not (isinstance(req, dict) and isinstance(lim, dict)):
        return []
    problems: list[Problem] = []
    for what in ("cpu", "memory"):
        r, li = quantity_to_str(req.get(what)), quantity_to_str(lim.get(what))
        comparable = isinstance(r, str) and isinstance(li, str) and QUANTITY.match(r) and QUANTITY.match(li)
        if comparable and quantity_value(r) > quantity_value(li):
            problems.append(
                ((*loc, "resources", "requests", what), f"{what} request {r} is above its limit {li}")
            )
    return problems
