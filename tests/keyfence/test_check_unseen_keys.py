"""``keyfence check`` never passes a stack while it could not see every key under the prefix.

The pack recognises a key's material pasted into a stack by the fingerprints of every key under
the prefix, the fleet's and the others (another strategy's). When the check cannot list them
(no 'list', or a policy's ``pagination_limit``, which OpenBao turns into a refusal) or read
their metadata, a pasted copy of another key would pass: the check exits 2 instead, naming the cause.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from keyfence.errors import EXIT_INVALID, EXIT_VIOLATION
from keyfence.keys import METADATA_FINGERPRINT, METADATA_SECRET_FINGERPRINT
from keyfence.material import KeyMaterial
from tests.keyfence.test_check_scenarios import SCENARIOS, check, seed, small_spec
from tests.keyfence.test_listing_policies import capped
from tests.openbao import OpenBao

pytestmark = pytest.mark.vault

LEDGER_READ = 'path "secret/data/keyfence/ledger/*" { capabilities = ["read"] }\n'


def pasted(spec_path: Path, api_secret: str) -> tuple[int, dict[str, Any], str]:
    """``keyfence check`` of the fleet plus a ConfigMap holding ``api_secret``."""
    config = ["--config", "scenario=pasted-config-map", "--config", f"pasted={api_secret}"]
    return check("--spec", str(spec_path), "--program", SCENARIOS, *config)


def _rules(prefix: str) -> dict[str, tuple[str, str]]:
    """Token rules that cannot list every key under ``prefix``, and what the message must name."""
    return {
        "pagination_limit": (capped("secret", prefix), "pagination_limit"),
        "no list": (f'path "secret/metadata/{prefix}/*" {{ capabilities = ["read"] }}\n', "'list'"),
        "no read": (
            f'path "secret/metadata/{prefix}/*" {{ capabilities = ["read", "list"] }}\n'
            f'path "secret/metadata/{prefix}/basis/*" {{ capabilities = ["list"] }}\n',
            f"secret/{prefix}/basis/executor",
        ),
    }


@pytest.mark.parametrize("how", ["full", "pagination_limit", "no list", "no read"])
def test_a_pasted_copy_of_another_key_is_never_passed_unseen(
    openbao: OpenBao,
    vault_env: dict[str, str],
    vault_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    how: str,
) -> None:
    spec_path = small_spec(tmp_path, vault_prefix, ["general-full"])
    seed(openbao, spec_path, vault_prefix)
    other = KeyMaterial(f"CANARYKEY-{vault_prefix}-other", f"CANARYSECRET-{vault_prefix}-other-0123456789")
    meta = {METADATA_FINGERPRINT: other.fingerprint, METADATA_SECRET_FINGERPRINT: other.secret_fingerprint}
    openbao.put_key(f"{vault_prefix}/basis/executor", other.api_key, other.api_secret, custom_metadata=meta)
    if how != "full":
        rule, named = _rules(vault_prefix)[how]
        monkeypatch.setenv("VAULT_TOKEN", openbao.token(rule + LEDGER_READ))
    code, report, out = pasted(spec_path, other.api_secret)
    assert "CANARY" not in out
    assert "Traceback" not in out
    if how == "full":
        assert code == EXIT_VIOLATION, out
        assert any(v["policy"] == "no-duplicate-key-assignment" for v in report["violations"])
        return
    assert code == EXIT_INVALID, out
    assert named in out
    if how == "no read":
        assert "cannot read the metadata of every key under" in out
    else:
        assert f"cannot list the keys under secret/{vault_prefix}" in out


@pytest.mark.parametrize("token", ["root", "metadata only"])
def test_a_key_without_fingerprints_the_check_cannot_fingerprint_is_no_pass(
    openbao: OpenBao,
    vault_env: dict[str, str],
    vault_prefix: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    token: str,
) -> None:
    """A key stored by hand, without fingerprints in its metadata: a token that may read its material
    fingerprints it (and the copy is caught); one that may not cannot recognise any copy of it."""
    spec_path = small_spec(tmp_path, vault_prefix, ["general-full"])
    seed(openbao, spec_path, vault_prefix)
    other = KeyMaterial(f"CANARYKEY-{vault_prefix}-bare", f"CANARYSECRET-{vault_prefix}-bare-0123456789")
    openbao.put_key(f"{vault_prefix}/basis/executor", other.api_key, other.api_secret, custom_metadata={})
    if token != "root":
        rule = f'path "secret/metadata/{vault_prefix}/*" {{ capabilities = ["read", "list"] }}\n'
        monkeypatch.setenv("VAULT_TOKEN", openbao.token(rule + LEDGER_READ))
    code, _, out = pasted(spec_path, other.api_secret)
    assert "CANARY" not in out and "Traceback" not in out
    if token == "root":
        assert code == EXIT_VIOLATION, out
        return
    assert code == EXIT_INVALID, out
    assert f"secret/{vault_prefix}/basis/executor" in out and "keyfence keys register" in out
