"""The program the Pulumi CLI runs for ``--policy-pack policies/``: it serves the keyfence pack.

The CLI runs this folder with itself on ``sys.path``, hence the top-level
``keyfence_rules`` import. Nothing else belongs here: constructing ``PolicyPack``
starts the analyzer's gRPC server and never returns, so this file must never be
imported by tests or by the program.
"""

# mypy checks this file as ``policies.__main__``, where the top-level name does not resolve.
from keyfence_rules.pack import build_policies  # type: ignore[import-not-found,unused-ignore]
from pulumi_policy import EnforcementLevel, PolicyPack

PolicyPack(
    name="keyfence",
    policies=build_policies(),
    enforcement_level=EnforcementLevel.MANDATORY,
    description="One exchange API key per trading process, one subaccount per strategy, keys mounted "
    "read-only with least-privilege rights.",
)
