"""The pack's work grows linearly with the stack: no pairwise comparison anywhere.

Wall-clock time is noise on a shared machine, so the test counts work instead: the
number of source lines executed inside ``keyfence_policies`` (a ``sys.settrace`` line
counter). A pairwise step would make a stack twice as large cost four times as much.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from types import FrameType
from typing import Any

import keyfence_policies
import pytest
from keyfence_policies import labels as L
from keyfence_policies import scan
from keyfence_policies.pack import POLICY_NAMES, evaluate

from tests.policies.builders import CONFIG_MAP, DEPLOYMENT, HPA_V2, ROLE, ROLLOUT, SECRET, hpa_props, wrap

RULES_DIR = str(Path(keyfence_policies.__file__).resolve().parent)


def material(i: int) -> str:
    return f"CANARYKEY-linear-{i:06d}"


def facts(workloads: int) -> dict[str, Any]:
    """What keyfence check passes: every key's path and fingerprint, so every string is hashed."""
    entries = [
        {
            "mount": "secret",
            "path": f"kraken/s{i % 50}/p{i}",
            "fingerprint": hashlib.sha256(material(i).encode()).hexdigest(),
            "subaccount": f"s{i % 50}",
            "process": f"s{i % 50}/p{i}",
        }
        for i in range(workloads)
    ]
    return {"knownKeys": entries, "vaultVerified": False, "keyPrefixes": ["secret/kraken"]}


def stack(workloads: int) -> list[Any]:
    """Key-bearing Deployments, key Secrets and ConfigMaps; every 10th shares a key or copies one,
    every 50th has a Role reading its key, every 100th is autoscaled and rolled out by an Argo Rollout."""
    out = []
    for i in range(workloads):
        namespace, name = f"s{i % 50}", f"p{i}"
        key_path = "kraken/shared" if i % 10 == 0 else f"kraken/{namespace}/{name}"
        out.append(
            wrap(
                SECRET,
                {
                    "metadata": {
                        "name": f"{name}-key",
                        "namespace": namespace,
                        "labels": {L.EXCHANGE_KEY: "true", L.SUBACCOUNT: namespace},
                    }
                },
                f"{name}-key",
            )
        )
        pod = {
            "containers": [
                {"name": "c", "volumeMounts": [{"name": "k", "mountPath": "/k", "readOnly": True}]}
            ],
            "volumes": [{"name": "k", "secret": {"secretName": f"{name}-key"}}],
        }
        out.append(
            wrap(
                DEPLOYMENT,
                {
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "labels": {L.SUBACCOUNT: namespace},
                        "annotations": {L.KEY_PATH: key_path},
                    },
                    "spec": {"template": {"spec": pod}},
                },
                name,
            )
        )
        settings = {
            "settings.json": json.dumps({"name": name, "endpoint": f"https://api/{namespace}/{name}"})
        }
        if i % 10 == 5:
            settings["copy"] = f"KEY={material(i)}"
        out.append(
            wrap(
                CONFIG_MAP,
                {"metadata": {"name": f"{name}-cfg", "namespace": namespace}, "data": settings},
                f"{name}-cfg",
            )
        )
        if i % 50 == 0:
            rule = {
                "apiGroups": [""],
                "resources": ["secrets"],
                "resourceNames": [f"{name}-key"],
                "verbs": ["get"],
            }
            out.append(
                wrap(ROLE, {"metadata": {"name": f"r{i}", "namespace": namespace}, "rules": [rule]}, f"r{i}")
            )
        if i % 100 == 0:
            out.append(wrap(HPA_V2, hpa_props(namespace, name, name=f"h{i}"), f"h{i}"))
            rollout = {
                "metadata": {"name": f"ro{i}", "namespace": namespace},
                "spec": {"template": {"spec": pod}},
            }
            out.append(wrap(ROLLOUT, rollout, f"ro{i}"))
    return out


def lines_executed(resources: list[Any]) -> tuple[int, dict[str, int]]:
    """Lines of keyfence_policies run while every policy runs once, and the findings per policy."""
    count = 0

    def on_line(frame: FrameType, event: str, arg: object) -> Any:
        nonlocal count
        if event == "line":
            count += 1
        return on_line

    def on_call(frame: FrameType, event: str, arg: object) -> Any:
        return on_line if frame.f_code.co_filename.startswith(RULES_DIR) else None

    scan._SEEN.clear()  # each run hashes its own strings: the cache must not carry work across sizes
    configs = {
        policy: facts(sum(r.resource_type == DEPLOYMENT for r in resources)) for policy in POLICY_NAMES
    }
    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        findings = evaluate(resources, configs)
    finally:
        sys.settrace(previous)
    return count, {name: len(found) for name, found in findings.items()}


@pytest.mark.slow
def test_doubling_the_stack_doubles_the_work() -> None:
    small_lines, small_findings = lines_executed(stack(2000))
    large_lines, large_findings = lines_executed(stack(4000))
    # Findings scale too: the shared key has 200 then 400 holders, each reported once.
    assert {k: 2 * v for k, v in small_findings.items()} == large_findings
    assert small_findings["no-duplicate-key-assignment"] > 200 + 200 + 40  # shared keys, copies, roles
    assert small_findings["single-writer-per-key"] > 2000
    assert large_lines <= 2.1 * small_lines, (small_lines, large_lines)
