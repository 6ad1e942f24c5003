"""The program the Pulumi CLI runs for ``--policy-pack policies/``: it serves the keyfence pack.

The CLI runs this folder with itself on ``sys.path``, hence the top-level
``keyfence_policies`` import. Nothing else belongs here but process set-up (the garbage
collector's thresholds): constructing ``PolicyPack``
starts the analyzer's gRPC server and never returns, so this file must never be
imported by tests or by the program.
"""

import gc

# mypy checks this file as ``policies.__main__``, where the top-level name does not resolve.
from keyfence_policies import sdk_adapter  # type: ignore[import-not-found,unused-ignore]
from keyfence_policies.pack import build_policies  # type: ignore[import-not-found,unused-ignore]
from keyfence_policies.scan import prepare  # type: ignore[import-not-found,unused-ignore]
from pulumi_policy import EnforcementLevel, PolicyPack

# AnalyzeStack deserialises the whole stack once per policy; with CPython's default
# thresholds the collector rescans those trees again and again, which made a large stack's
# analysis superlinear. Young collections every 500k allocations keep it linear; the trees
# are acyclic, so reference counting frees them anyway and memory stays bounded.
gc.set_threshold(max(gc.get_threshold()[0], 500_000), *gc.get_threshold()[1:])

# On the pulumi_policy versions it was checked against, parse the stack once for all six
# stack policies, and list each resource's searchable strings as it arrives; on any other,
# the SDK's public path runs unchanged.
sdk_adapter.install(prepare)

PolicyPack(
    name="keyfence",
    policies=build_policies(),
    enforcement_level=EnforcementLevel.MANDATORY,
    description="One exchange API key per trading process, one subaccount per strategy, keys mounted "
    "read-only with least-privilege rights.",
)
