"""``key-not-in-env``: key material reaches a process only as a read-only file.

Environment variables leak: they are inherited by every child process, printed by
crash handlers and ``env`` dumps, visible in ``/proc/<pid>/environ`` and in the pod
spec itself when written literally; and they never change without a restart. The key
is therefore mounted read-only from its Secret (keyfence uses /var/run/keyfence/key),
and a writable mount would let a compromised process swap the key under its peers. Nor
may key material be written to disk by the Kubernetes provider's render mode (``render``).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Iterator
from typing import Final

from . import render
from .config import PackConfig
from .identity import describe_key
from .labels import KEY_MOUNT_PATH
from .rule import Finding, Rule, each_key_bearing
from .workloads import StackIndex, Workload

NAME = "key-not-in-env"

# Names that say "this is a credential", matched on the name with separators removed.
_MATERIAL: Final = re.compile(r"SECRET|APIKEY|PRIVATEKEY|PASSWORD|PASSPHRASE|CREDENTIAL")
# Whole words that are credentials on their own but too short to match inside other words.
_MATERIAL_WORDS: Final = frozenset({"TOKEN", "OTP", "PRIVATE"})
# Variables that point at a file holding the key (the recommended way) rather than holding it.
_POINTER_SUFFIXES: Final = ("_FILE", "_PATH", "_DIR", "_DIRECTORY", "_FILENAME", "_LOCATION")


@functools.lru_cache(maxsize=4096)
def looks_like_key_material(name: str) -> bool:
    """True for names such as API_KEY, KRAKEN_API_SECRET, PRIVATE_KEY; false for API_SECRET_FILE."""
    upper = name.upper()
    if upper.endswith(_POINTER_SUFFIXES):
        return False
    words = [w for w in re.split(r"[^A-Z0-9]+", upper) if w]
    return bool(_MATERIAL.search("".join(words))) or any(w in _MATERIAL_WORDS for w in words)


def _literal_findings(workload: Workload, config: PackConfig) -> Iterator[Finding]:
    """Credential-named literals, on every workload: a key pasted into a pod spec is a key in env."""
    holds = f"holds {describe_key(workload, config)} and " if workload.key_bearing else ""
    for container in workload.containers:
        for env in container.node.get("env").items():
            name = env.get("name").text()
            value = env.get("value").text()
            if name and value and looks_like_key_material(name):
                yield Finding(
                    f"{workload.ref} {holds}sets environment variable {name} of {container.ref} to a literal "
                    "value that looks like key material (value not shown): whatever it is, it is written in "
                    "the pod spec for anyone who can read it, and leaks to child processes, logs and crash "
                    f"dumps. Remove it; an exchange key is mounted read-only at {KEY_MOUNT_PATH}, other "
                    "credentials come from a Secret.",
                    workload.urn,
                )
    for holding in workload.holdings:
        if holding.hit.how != "material" or holding.container is None:
            continue
        field = holding.hit.where[len(holding.container.node.path) :].lstrip(".")
        if not field.startswith(("env", "args", "command")):
            continue
        yield Finding(
            f"{workload.ref} writes the material of {holding.key.describe()} into {field} of "
            f"{holding.container.ref} (value not shown): a key in the pod spec or the environment leaks to "
            f"child processes, logs and crash dumps. Remove it; the key is mounted read-only at "
            f"{KEY_MOUNT_PATH} in its process's pod only.",
            workload.urn,
        )


def _workload_findings(workload: Workload, config: PackConfig) -> Iterator[Finding]:
    for ref in workload.key_refs:
        if ref.channel == "env":
            yield Finding(
                f"{workload.ref} reads key {ref.target.split(' ')[0]} {workload.namespace}/{ref.secret} into "
                f"environment variable {ref.variable} of {ref.container}: environment variables leak to "
                f"child processes, logs and crash dumps. Mount the Secret read-only (at {KEY_MOUNT_PATH}) "
                "and read the key from files.",
                workload.urn,
            )
        elif ref.channel == "envFrom":
            yield Finding(
                f"{workload.ref} loads key {ref.target.split(' ')[0]} {workload.namespace}/{ref.secret} into "
                f"the environment of {ref.container} (envFrom): environment variables leak to child "
                f"processes, logs and crash dumps. Mount the Secret read-only (at {KEY_MOUNT_PATH}) and "
                "read the key from files.",
                workload.urn,
            )
    key_volumes = workload.key_volumes()
    for container in workload.containers:
        for mount in container.node.get("volumeMounts").items():
            volume = mount.get("name").text()
            if volume is None or volume not in key_volumes:
                continue
            if mount.get("readOnly").flag() is not True:
                path = mount.get("mountPath").text() or "?"
                yield Finding(
                    f"{workload.ref} mounts key volume {volume!r} writable at {path} in {container.ref}: a "
                    "compromised process could replace the key. Set readOnly: true on the volumeMount.",
                    workload.urn,
                )


def check(index: StackIndex, config: PackConfig) -> Iterator[Finding]:
    """Report key Secrets read into env, credential literals, writable key mounts and rendered keys."""
    yield from each_key_bearing(index, NAME, lambda workload: _workload_findings(workload, config))
    for workload in index.workloads:
        yield from _literal_findings(workload, config)
    yield from render.check(index)


RULE = Rule(
    name=NAME,
    description="Exchange keys reach a process only as files of a read-only Secret volume: never through "
    "env, envFrom, arguments or literal key-like environment variables, no workload sets a "
    "credential-named variable to a literal value, and no Kubernetes provider in render mode "
    "(renderYamlToDirectory) writes key material to disk.",
    level="mandatory",
    check=check,
    remediation=f"Mount the key Secret read-only at {KEY_MOUNT_PATH} and read api_key/api_secret from files; "
    "render manifests only in the operator delivery modes.",
)
