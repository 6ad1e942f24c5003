"""Policy config: defaults when absent, overrides merged, garbage explained (never raised)."""

from __future__ import annotations

from typing import Any

import pytest
from keyfence_policies import labels as L
from keyfence_policies.config import (
    REQUIRE_FINGERPRINT,
    SHARED_PROPERTIES,
    PackConfig,
    parse_config,
)
from keyfence_policies.kinds import DEFAULT_KEY_BEARING_KINDS
from keyfence_policies.permissions import ROLE_ALLOWANCES

WITH_FINGERPRINT = (*SHARED_PROPERTIES, REQUIRE_FINGERPRINT)


def test_absent_config_means_the_defaults() -> None:
    for raw in (None, {}, {"enforcementLevel": "advisory"}):
        parsed = parse_config(raw, WITH_FINGERPRINT)
        assert parsed.errors == ()
        assert parsed.config == PackConfig()
    config = PackConfig()
    assert config.labels.subaccount == L.SUBACCOUNT
    assert config.annotations.key_path == L.KEY_PATH
    assert config.key_bearing_kinds == frozenset(DEFAULT_KEY_BEARING_KINDS)
    assert config.require_fingerprint is True
    assert {r: dict(v) for r, v in config.role_allowances.items()} == {
        r: dict(v) for r, v in ROLE_ALLOWANCES.items()
    }


def test_a_partial_label_override_keeps_the_other_defaults() -> None:
    parsed = parse_config(
        {"labels": {"subaccount": "acme.io/strategy"}, "annotations": {"keyPath": "acme.io/vault"}}
    )
    assert parsed.errors == ()
    assert parsed.config.labels.subaccount == "acme.io/strategy"
    assert parsed.config.labels.role == L.ROLE
    assert parsed.config.annotations.key_path == "acme.io/vault"
    assert parsed.config.annotations.fingerprint == L.FINGERPRINT


def test_role_allowances_override_per_role_and_venue() -> None:
    parsed = parse_config({"roleAllowances": {"market-data": {"futures": ["general-read", "general-full"]}}})
    assert parsed.errors == ()
    allowances = parsed.config.role_allowances
    assert allowances["market-data"]["futures"] == {"general-read", "general-full"}
    assert allowances["market-data"]["spot"] == ROLE_ALLOWANCES["market-data"]["spot"]
    assert allowances["trader"] == ROLE_ALLOWANCES["trader"]


def test_a_new_role_can_be_added() -> None:
    parsed = parse_config({"roleAllowances": {"hedger": {"futures": ["general-full"]}}})
    assert parsed.errors == ()
    assert parsed.config.role_allowances["hedger"] == {"futures": frozenset({"general-full"})}


def test_key_bearing_kinds_and_require_fingerprint() -> None:
    parsed = parse_config(
        {"keyBearingKinds": ["Deployment", "CronJob"], "requireFingerprint": False}, WITH_FINGERPRINT
    )
    assert parsed.errors == ()
    assert parsed.config.key_bearing_kinds == {"Deployment", "CronJob"}
    assert parsed.config.require_fingerprint is False


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("garbage", "config must be an object"),
        (["labels"], "config must be an object"),
        ({"labels": "keyfence.io/subaccount"}, "labels must be an object"),
        ({"labels": {"subacount": "x"}}, "labels.subacount is not a known name"),
        ({"labels": {"subaccount": ""}}, "labels.subaccount must be a non-empty string"),
        ({"labels": {"subaccount": 7}}, "labels.subaccount must be a non-empty string"),
        ({"annotations": {"keyPath": None}}, "annotations.keyPath must be a non-empty string"),
        ({"roleAllowances": ["trader"]}, "roleAllowances must be an object"),
        ({"roleAllowances": {"trader": "general-full"}}, "roleAllowances.trader must be an object"),
        ({"roleAllowances": {"trader": {"margin": []}}}, "roleAllowances.trader.margin: unknown venue"),
        ({"roleAllowances": {"trader": {"futures": "general-full"}}}, "must be a list of permission ids"),
        (
            {"roleAllowances": {"trader": {"futures": ["general-ful"]}}},
            "unknown permission ids 'general-ful'",
        ),
        ({"keyBearingKinds": "Deployment"}, "keyBearingKinds must be a list of kinds"),
        ({"keyBearingKinds": {"Deployment": True}}, "keyBearingKinds must be a list of kinds"),
        ({"keyBearingKinds": ["Deployment", "Cronjob", 3]}, "unknown kinds 'Cronjob', 3"),
        ({"requireFingerprint": "false"}, "requireFingerprint must be true or false"),
        ({"requireFingerprints": False}, "unknown config property 'requireFingerprints'"),
    ],
)
def test_malformed_config_is_explained_and_never_raises(raw: Any, expected: str) -> None:
    parsed = parse_config(raw, WITH_FINGERPRINT)
    assert any(expected in error for error in parsed.errors), parsed.errors


def test_malformed_values_fall_back_to_safe_defaults() -> None:
    parsed = parse_config(
        {
            "labels": {"subaccount": 7, "role": "acme.io/role"},
            "keyBearingKinds": ["Deployment", "Cronjob"],
            "requireFingerprint": "no",
            "roleAllowances": {"trader": {"futures": ["general-full", "typo"]}},
        },
        WITH_FINGERPRINT,
    )
    config = parsed.config
    assert config.labels.subaccount == L.SUBACCOUNT
    assert config.labels.role == "acme.io/role"
    assert config.key_bearing_kinds == {"Deployment"}
    assert config.require_fingerprint is True
    assert config.role_allowances["trader"]["futures"] == {"general-full"}
    assert len(parsed.errors) == 4


def test_require_fingerprint_belongs_to_the_duplicate_policy_only() -> None:
    parsed = parse_config({"requireFingerprint": False})
    assert parsed.config.require_fingerprint is True
    assert any("unknown config property 'requireFingerprint'" in e for e in parsed.errors)
