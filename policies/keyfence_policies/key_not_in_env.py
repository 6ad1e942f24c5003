"""``key-not-in-env``: key material reaches a process only as a read-only file.

Environment variables leak: they are inherited by every child process, printed by
crash handlers and ``env`` dumps, visible in ``/proc/<pid>/environ`` and in the pod
spec itself when written literally; and they never change without a restart. The key
is therefore mounted read-only from its Secret (keyfence uses /var/run/keyfence/key),
and a writable mount would let a compromised process swap the key under its peers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Final

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


def looks_like_key_material(name: str) -> bool:
    """True for names such as API_KEY, KRAKEN_API_SECRET, PRIVATE_KEY; false for API_SECRET_FILE."""
    upper = name.upper()
    if upper.endswith(_POINTER_SUFFIXES):
        return False
    words = [w for w in re.split(r"[^A-Z0-9]+", upper) if w]
    return bool(_MATERIAL.search("".join(words))) or any(w in _MATERIAL_WORDS for w in words)


def _workload_findings(workload: Workload, config: PackConfig) -> Iterator[Finding]:
    key = describe_key(workload, config)
    for ref in workload.key_refs:
        if ref.channel == "env":
            yield Finding(
                f"{workload.ref} reads key Secret {workload.namespace}/{ref.secret} into environment "
                f"variable {ref.variable} of {ref.container}: environment variables leak to child "
                f"processes, logs and crash dumps. Mount the Secret read-only (at {KEY_MOUNT_PATH}) and "
                "read the key from files.",
                workload.urn,
            )
        elif ref.channel == "envFrom":
            yield Finding(
                f"{workload.ref} loads key Secret {workload.namespace}/{ref.secret} into the environment of "
                f"{ref.container} (envFrom): environment variables leak to child processes, logs and crash "
                f"dumps. Mount the Secret read-only (at {KEY_MOUNT_PATH}) and read the key from files.",
                workload.urn,
            )
    key_volumes = workload.key_volumes()
    for container in workload.containers:
        for env in container.node.get("env").items():
            name = env.get("name").text()
            value = env.get("value").text()
            if name and value and looks_like_key_material(name):
                yield Finding(
                    f"{workload.ref} holds {key} and sets environment variable {name} of {container.ref} to "
                    "a literal value that looks like key material (value not shown). Remove it: the key is "
                    f"mounted read-only at {KEY_MOUNT_PATH}.",
                    workload.urn,
                )
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
    """Report key Secrets read into env, key-like literal env vars, and writable key mounts."""
    yield from each_key_bearing(index, NAME, lambda workload: _workload_findings(workload, config))


RULE = Rule(
    name=NAME,
    description="Exchange keys reach a process only as files of a read-only Secret volume: never through "
    "env, envFrom or literal key-like environment variables.",
    level="mandatory",
    check=check,
    remediation=f"Mount the key Secret read-only at {KEY_MOUNT_PATH} and read api_key/api_secret from files.",
)
