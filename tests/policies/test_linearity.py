"""The pack's work grows linearly with the stack: no pairwise comparison anywhere.

Wall-clock time is noise on a shared machine, so the test counts work instead: the
number of source lines executed inside ``keyfence_policies`` (a ``sys.settrace`` line
counter). A pairwise step would make a stack twice as large cost four times as much.
"""

from __future__ import annotations

import sys
from pathlib import Path
from types import FrameType
from typing import Any

import keyfence_policies
import pytest
from keyfence_policies import labels as L
from keyfence_policies.pack import evaluate

from tests.policies.builders import DEPLOYMENT, HPA_V2, SECRET, hpa_props, wrap

RULES_DIR = str(Path(keyfence_policies.__file__).resolve().parent)


def stack(workloads: int) -> list[Any]:
    """Key-bearing Deployments and their key Secrets; every 10th shares a key, every 100th is autoscaled."""
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
        if i % 100 == 0:
            out.append(wrap(HPA_V2, hpa_props(namespace, name, name=f"h{i}"), f"h{i}"))
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

    previous = sys.gettrace()
    sys.settrace(on_call)
    try:
        findings = evaluate(resources)
    finally:
        sys.settrace(previous)
    return count, {name: len(found) for name, found in findings.items()}


@pytest.mark.slow
def test_doubling_the_stack_doubles_the_work() -> None:
    small_lines, small_findings = lines_executed(stack(2000))
    large_lines, large_findings = lines_executed(stack(4000))
    # Findings scale too: the shared key has 200 then 400 holders, each reported once.
    assert {k: 2 * v for k, v in small_findings.items()} == large_findings
    assert small_findings["no-duplicate-key-assignment"] > 200
    assert small_findings["single-writer-per-key"] > 2000
    assert large_lines <= 2.1 * small_lines, (small_lines, large_lines)
