"""The keyfence rules as Pulumi ``StackValidationPolicy`` objects.

``__main__.py`` hands :func:`build_policies` to ``PolicyPack``; tests and harnesses
use :func:`run_rule` / :func:`evaluate` to get the same findings without the SDK's
gRPC server. Every validation is wrapped so that nothing it meets (garbage props,
garbage config, a bug) can raise: a raised exception would abort the whole pack
run, so it is reported as a violation of the policy instead (failing closed).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from pulumi_policy import (
    EnforcementLevel,
    Policy,
    PolicyConfigSchema,
    ReportViolation,
    Severity,
    StackValidationArgs,
    StackValidationPolicy,
)

from . import duplicate_keys, hardened, key_not_in_env, least_privilege, single_writer, subaccount_tag
from .config import SHARED_PROPERTIES, parse_config, schema_properties
from .names import POLICY_NAMES
from .rule import Finding, Rule
from .sdk_adapter import derived
from .workloads import build_index

RULES: Final[tuple[Rule, ...]] = (
    duplicate_keys.RULE,
    single_writer.RULE,
    subaccount_tag.RULE,
    least_privilege.RULE,
    key_not_in_env.RULE,
    hardened.RULE,
)
"""The pack's rules, in the order they run and report."""

if tuple(rule.name for rule in RULES) != POLICY_NAMES:
    raise RuntimeError("keyfence_policies.names.POLICY_NAMES must list the pack's rules, in order")

_LEVELS: Final = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY}
_SEVERITIES: Final = {"mandatory": Severity.HIGH, "advisory": Severity.MEDIUM}


def policy_names() -> list[str]:
    """The names of the pack's policies, in order."""
    return list(POLICY_NAMES)


def rule_named(name: str) -> Rule:
    """The rule of a policy name; ``KeyError`` for a name that is not in the pack."""
    for rule in RULES:
        if rule.name == name:
            return rule
    raise KeyError(name)


def accepted_properties(rule: Rule) -> tuple[str, ...]:
    """The config properties a rule's policy declares in its schema."""
    return (*SHARED_PROPERTIES, *rule.flags)


def config_schema(rule: Rule) -> PolicyConfigSchema:
    """The JSON schema of a rule's config (the Pulumi CLI validates and fills defaults from it)."""
    return PolicyConfigSchema(properties=schema_properties(flags=rule.flags))


def run_rule(rule: Rule, resources: Iterable[object], config: object = None) -> list[Finding]:
    """Every finding of one rule on a stack's resources; never raises.

    ``resources`` are ``PolicyResource`` objects (anything with ``resource_type``,
    ``props``, ``urn`` and ``name`` will do) and ``config`` the policy's config dict.
    """
    findings: list[Finding] = []
    try:
        parsed = parse_config(config, accepted_properties(rule))
        findings.extend(
            Finding(f"invalid policy config for {rule.name}: {error}", None) for error in parsed.errors
        )
        # One index per stack and config, shared by the policies when the SDK adapter parsed the
        # stack once (sdk_adapter.SharedResources); built afresh otherwise.
        index = derived(resources, parsed.config, lambda: build_index(resources, parsed.config))
        findings.extend(rule.check(index, parsed.config))
    except Exception as exc:  # a crash would turn a mandatory check into a pack failure
        findings.append(
            Finding(
                f"{rule.name} could not evaluate the stack ({type(exc).__name__}: {exc}). This is a bug in "
                "the keyfence policy pack; the stack counts as non-compliant until it is fixed.",
                None,
            )
        )
    return findings


def evaluate(
    resources: Iterable[object], configs: Mapping[str, object] | None = None
) -> dict[str, list[Finding]]:
    """Findings of every policy, keyed by policy name (``configs`` maps a policy name to its config)."""
    items = list(resources)
    configs = configs or {}
    return {rule.name: run_rule(rule, items, configs.get(rule.name)) for rule in RULES}


def _validation(rule: Rule) -> Callable[[StackValidationArgs, ReportViolation], None]:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        try:
            resources = args.resources
            config = args.get_config()
        except Exception as exc:  # the SDK's args themselves are unreadable: fail closed
            report_violation(f"{rule.name} could not read the stack ({type(exc).__name__}: {exc}).", None)
            return
        for finding in run_rule(rule, resources, config):
            report_violation(finding.message, finding.urn)

    validate.__name__ = f"validate_{rule.name.replace('-', '_')}"
    return validate


def build_policy(rule: Rule) -> Policy:
    """One rule as a ``StackValidationPolicy`` (stack-wide: key-bearing-ness needs every resource)."""
    return StackValidationPolicy(
        name=rule.name,
        description=rule.description,
        validate=_validation(rule),
        enforcement_level=_LEVELS[rule.level],
        config_schema=config_schema(rule),
        severity=_SEVERITIES[rule.level],
        remediation_steps=rule.remediation,
    )


def build_policies() -> list[Policy]:
    """The policies of the keyfence pack, for ``PolicyPack(policies=...)``."""
    return [build_policy(rule) for rule in RULES]
