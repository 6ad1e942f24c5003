"""A ledger record whose current version is gone, or whose data keyfence cannot use: what each
reader says, and that the way out it names exists.

Such a record is an error, never "no record" (tests/keyfence/test_listing_holes.py); these tests
hold the error to its word: the fix it names must be possible in that state, and an operation
that already wrote must not report a failure because of an unrelated record.
"""

from __future__ import annotations

import os
import shlex
import subprocess

import pytest
from typer.testing import CliRunner

from keyfence.cli.app import app
from keyfence.devvault import find_bao
from keyfence.errors import EXIT_OK, EXIT_VIOLATION, KeyVerificationError, VaultError
from keyfence.keys import resolve_keys
from keyfence.keystore import plan_registration, register_key
from keyfence.keystore.claims import claim_key, release_process
from keyfence.keystore.inputs import Placement
from keyfence.keystore.inventory import inventory
from keyfence.vault import KV2Client, Ledger
from keyfence.vault.errors import VaultRequestError
from tests.keyfence.test_listing import new_material, spec_for
from tests.keyfence.test_listing_holes import OTHER, STACK, register_many
from tests.openbao import OpenBao

pytestmark = pytest.mark.vault


def _removed_as_told(openbao: OpenBao, ledger: Ledger, fingerprint: str, message: str, version: int) -> None:
    """Run the tombstone command the message names, word for word, with the real CLI: the record
    then reads as none, so the way out works in the record's state."""
    record = ledger.path_of(fingerprint)
    told = f"bao kv put -mount={ledger.mount} -cas={version} {record} removed=true"
    assert told in message
    done = subprocess.run(
        [find_bao(), *shlex.split(told)[1:]],
        env={**os.environ, "BAO_ADDR": openbao.addr, "BAO_TOKEN": openbao.root_token},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert ledger.read(fingerprint) is None


def _gone(openbao: OpenBao, ledger: Ledger, fingerprint: str, version: int, how: str) -> None:
    kv = openbao.client.secrets.kv.v2
    path = ledger.path_of(fingerprint)
    if how == "delete":
        kv.delete_latest_version_of_secret(path=path, mount_point=ledger.mount)
    else:
        kv.destroy_secret_versions(path=path, versions=[version], mount_point=ledger.mount)


@pytest.mark.parametrize("how", ["delete", "destroy"])
def test_the_way_out_of_a_gone_record_fits_its_state(
    openbao: OpenBao, root: KV2Client, mount: str, how: str
) -> None:
    """A deleted version can be undeleted (the message names which); a destroyed one cannot, so
    the message must not send the user to 'bao kv undelete', which would do nothing."""
    keys = register_many(root, mount, 2)
    target, mine = sorted(keys)
    ledger = Ledger(root, mount)
    claimed = claim_key(
        ledger, keys[target].fingerprint, f"kraken/momentum/{target}", OTHER, f"momentum/{target}"
    )
    claimed = claim_key(ledger, claimed.fingerprint, claimed.path, OTHER, "momentum/renamed")
    assert claimed.version == 3
    _gone(openbao, ledger, claimed.fingerprint, claimed.version, how)
    record = ledger.path_of(claimed.fingerprint)
    with pytest.raises(VaultRequestError) as caught:
        ledger.read(claimed.fingerprint)
    message = str(caught.value)
    if how == "delete":
        assert f"bao kv undelete -mount={mount} -versions=3 {record}" in message
        assert f"'bao read {mount}/config'" in message  # a delete_version_after deletes the next one too
    else:
        assert "undelete" not in message and "destroyed" in message
    # The check says the same, with the spec's line.
    with pytest.raises(KeyVerificationError) as checked:
        resolve_keys(spec_for(mount, target, mine), root, "check", STACK)
    [line] = checked.value.problems
    assert line.startswith("fleet.yaml:")
    assert f"bao kv put -mount={mount} -cas=3 {record} removed=true" in line
    _removed_as_told(openbao, ledger, claimed.fingerprint, message, 3)


def test_a_rotation_is_not_reported_failed_for_the_old_keys_gone_record(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    """The new version is written before the old key's record is retired: a record that cannot be
    read then is a warning naming it, not an error for a rotation that took place."""
    old = register_many(root, mount, 1)["p0"]
    ledger = Ledger(root, mount)
    record = ledger.read(old.fingerprint)
    assert record is not None
    _gone(openbao, ledger, old.fingerprint, record.version, "delete")
    plan = plan_registration(
        "momentum/p0", venue="futures", permissions="general-full", mount=mount, prefix="kraken", rotate=True
    )
    new = new_material()
    done = register_key(root, plan, new)
    assert done.version == 2 and done.fingerprint == new.fingerprint
    [warning] = done.warnings
    assert ledger.ref(old.fingerprint) in warning and "bao kv undelete" in warning
    assert old.api_key not in warning and old.api_secret not in warning
    stored = root.read_metadata(mount, "kraken/momentum/p0")
    assert stored.current_version == 2


def test_a_record_without_a_usable_path_names_a_fix_that_works(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    """The message used to send the user to 'keys list --repair', which stops at that very record."""
    old = register_many(root, mount, 1)["p0"]
    ledger = Ledger(root, mount)
    record = ledger.path_of(old.fingerprint)
    openbao.put_data(record, {"path": "", "stack": OTHER, "process": "momentum/p0"}, mount=mount)
    with pytest.raises(VaultRequestError) as caught:
        ledger.read(old.fingerprint)
    message = str(caught.value)
    with pytest.raises(VaultError) as listed:
        inventory(root, Placement(mount, "kraken"), repair=True)
    # 'keys list --repair' stops here, so the message must not send the user back to it to remove it.
    [problem] = listed.value.problems
    assert f"bao kv put -mount={mount} -cas=2 {record} removed=true" in problem
    assert "remove it with 'keyfence keys list --repair'" not in problem
    _removed_as_told(openbao, ledger, old.fingerprint, message, 2)
    # Then --repair writes the key's record again, as the message says.
    inventory(root, Placement(mount, "kraken"), repair=True)
    again = ledger.read(old.fingerprint)
    assert again is not None and again.path == "kraken/momentum/p0"


@pytest.mark.parametrize("how", ["delete", "destroy"])
def test_revoke_of_a_key_whose_record_is_gone_is_refused_and_force_revokes_it(
    openbao: OpenBao, root: KV2Client, mount: str, vault_env: dict[str, str], how: str
) -> None:
    """Whether a stack claims the key cannot be told: refused as a claimed key is (exit 1, naming the
    record and its way out), and --force, there for exactly that, revokes it (a leaked key must go)."""
    material = register_many(root, mount, 1)["p0"]
    ledger = Ledger(root, mount)
    claimed = claim_key(ledger, material.fingerprint, "kraken/momentum/p0", OTHER, "momentum/p0")
    _gone(openbao, ledger, claimed.fingerprint, claimed.version, how)
    runner = CliRunner()
    args = ["keys", "revoke", "momentum/p0", "--mount", mount, "--yes"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == EXIT_VIOLATION, refused.output
    assert ledger.ref(claimed.fingerprint) in refused.output and "--force" in refused.output
    assert root.read_metadata(mount, "kraken/momentum/p0").current_version == 1
    forced = runner.invoke(app, [*args, "--force"])
    assert forced.exit_code == EXIT_OK, forced.output
    assert forced.output.startswith(f"revoked {mount}/kraken/momentum/p0")
    assert root.list_keys(mount, "kraken") == []
    assert material.api_key not in refused.output + forced.output


def test_release_is_not_blocked_by_another_keys_gone_record(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    """``keys release`` of one process frees its claim though another key's record cannot be read;
    releasing the key whose record is gone says why it cannot, and how out."""
    keys = register_many(root, mount, 2)
    ledger = Ledger(root, mount)
    claims = {
        name: claim_key(ledger, keys[name].fingerprint, f"kraken/momentum/{name}", OTHER, f"momentum/{name}")
        for name in ("p0", "p1")
    }
    _gone(openbao, ledger, claims["p0"].fingerprint, claims["p0"].version, "delete")
    [freed] = release_process(root, ledger, "momentum/p1", "kraken/momentum/p1", OTHER)
    assert (freed.fingerprint, freed.stack) == (keys["p1"].fingerprint, OTHER)
    after = ledger.read(keys["p1"].fingerprint)
    assert after is not None and not after.claimed
    with pytest.raises(VaultError) as blocked:
        release_process(root, ledger, "momentum/p0", "kraken/momentum/p0", OTHER, force=True)
    [problem] = blocked.value.problems
    assert ledger.ref(claims["p0"].fingerprint) in problem and "bao kv undelete" in problem
