"""Policy settings that change what a plain LIST answers, against a real OpenBao (2.x).

OpenBao's ACL rules can carry ``pagination_limit`` and ``list_scan_response_keys_filter_path``.
Both reach a plain (unpaginated) ``LIST <mount>/metadata/<folder>/`` too: the limit cuts it to
its first entries without a word, the filter drops the keys the token may not see at the
filter's path. A capped listing must be a refusal (exit 2), and no claim or registration may
rest on a key or record being absent from a filtered one.
"""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from keyfence.cli.app import app
from keyfence.errors import EXIT_INVALID, RefusedError
from keyfence.keystore import plan_registration, register_key
from keyfence.keystore.claims import ClaimRefusedError, claim_key
from keyfence.material import KeyMaterial
from keyfence.vault import KV2Client, Ledger, VaultSettings, connect
from keyfence.vault.errors import KeyAccessDeniedError
from tests.keyfence.test_listing import new_material
from tests.keyfence.test_listing_holes import OTHER, STACK, register_many
from tests.openbao import OpenBao

pytestmark = pytest.mark.vault

LIMIT = 2


def capped(mount: str, folder: str, limit: int = LIMIT, *, api: str = "metadata") -> str:
    """A rule that may list ``folder`` but caps each listing at ``limit`` entries."""
    return (
        f'path "{mount}/{api}/{folder}/*" {{\n  capabilities = ["read", "list"]\n'
        f"  pagination_limit = {limit}\n}}\n"
    )


def hiding(mount: str, folder: str, hidden: str) -> str:
    """A rule whose plain LIST of ``folder`` leaves out ``hidden`` (a path of the mount) and nothing
    else: it shows the keys the token may read under ``<mount>/peek/``, a path that serves nothing."""
    template = f'{{{{ .path | replace \\"{mount}/metadata/\\" \\"{mount}/peek/\\" }}}}{{{{ .key }}}}'
    return (
        f'path "{mount}/metadata/{folder}/*" {{\n  capabilities = ["read", "list"]\n'
        f'  list_scan_response_keys_filter_path = "{template}"\n}}\n'
        f'path "{mount}/peek/*" {{ capabilities = ["read"] }}\n'
        f'path "{mount}/peek/{hidden}" {{ capabilities = ["deny"] }}\n'
    )


def test_a_capped_plain_listing_is_refused_not_cut(openbao: OpenBao, root: KV2Client, mount: str) -> None:
    """Unpaginated, OpenBao answers the first ``pagination_limit`` keys as if they were all."""
    register_many(root, mount, LIMIT + 3)
    token = openbao.token(capped(mount, "kraken"))
    with (
        connect(VaultSettings(addr=openbao.addr, token=token, timeout=10.0)) as client,
        pytest.raises(KeyAccessDeniedError, match="pagination_limit"),
    ):
        client.list_keys(mount, "kraken")
    assert len(root.list_keys(mount, "kraken")) == LIMIT + 3  # limit=-1 still lists everything


def test_keys_list_with_a_capped_listing_exits_2(openbao: OpenBao, root: KV2Client, mount: str) -> None:
    register_many(root, mount, LIMIT + 3)
    token = openbao.token(capped(mount, "kraken") + capped(mount, "keyfence/ledger"))
    env = {"VAULT_ADDR": openbao.addr, "VAULT_TOKEN": token}
    result = CliRunner(env=env).invoke(app, ["keys", "list", "--mount", mount, "--prefix", "kraken"])
    assert result.exit_code == EXIT_INVALID, result.output
    assert "pagination_limit" in result.output
    assert "Traceback" not in result.output


def test_a_capped_detailed_listing_falls_back_instead_of_ending_early(
    openbao: OpenBao, root: KV2Client, mount: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A page limit below ``LIST_PAGE`` makes OpenBao refuse the page (403): the listing is then
    "not available" (per-key reads), never a short, final page. At or above it, every page comes."""
    keys = register_many(root, mount, 5)
    below = openbao.token(capped(mount, "kraken", api="detailed-metadata"))
    with connect(VaultSettings(addr=openbao.addr, token=below, timeout=10.0)) as client:
        assert client.list_detailed_metadata(mount, "kraken/momentum") is None
    monkeypatch.setattr("keyfence.vault.kv.LIST_PAGE", LIMIT)
    at = openbao.token(capped(mount, "kraken", api="detailed-metadata"))
    with connect(VaultSettings(addr=openbao.addr, token=at, timeout=10.0)) as client:
        listing = client.list_detailed_metadata(mount, "kraken/momentum")
    assert listing is not None
    assert set(listing.keys) == {f"kraken/momentum/{name}" for name in keys}


def test_a_claim_hidden_from_the_ledger_listing_still_refuses_another_stack(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    """Claims rest on reading the record by fingerprint (and check-and-set), never on a listing:
    a record the token's LIST filter hides still stops a second stack."""
    keys = register_many(root, mount, 2)
    name, material = sorted(keys.items())[0]
    ledger = Ledger(root, mount)
    claim_key(ledger, material.fingerprint, f"kraken/momentum/{name}", OTHER, f"momentum/{name}")
    record = ledger.path_of(material.fingerprint)
    token = openbao.token(
        hiding(mount, "keyfence/ledger", record)
        + f'path "{mount}/data/keyfence/ledger/*" {{ capabilities = ["create", "read", "update"] }}\n'
    )
    with connect(VaultSettings(addr=openbao.addr, token=token, timeout=10.0)) as deploy:
        mine = Ledger(deploy, mount)
        assert material.fingerprint not in mine.fingerprints()  # the state under test
        with pytest.raises(ClaimRefusedError, match=f"claimed in the key ledger by stack {OTHER}"):
            claim_key(mine, material.fingerprint, f"kraken/momentum/{name}", STACK, f"momentum/{name}")
    held = ledger.read(material.fingerprint)
    assert held is not None and held.stack == OTHER


def test_a_copy_hidden_from_the_listing_is_still_refused_at_registration(
    openbao: OpenBao, root: KV2Client, mount: str
) -> None:
    """The duplicate scan lists the prefix, but the ledger record (created with check-and-set, by
    fingerprint) refuses a second path for one key even when the first is hidden from the LIST."""
    material: KeyMaterial = new_material()
    first = plan_registration(
        "momentum/a", venue="futures", permissions="general-full", mount=mount, prefix="kraken"
    )
    register_key(root, first, material)
    token = openbao.token(
        hiding(mount, "kraken", "kraken/momentum/a")
        + f'path "{mount}/data/kraken/*" {{ capabilities = ["create", "update"] }}\n'
        + f'path "{mount}/data/keyfence/ledger/*" {{ capabilities = ["create", "read", "update"] }}\n'
        + f'path "{mount}/metadata/keyfence/*" {{ capabilities = ["read", "list", "update"] }}\n'
    )
    second = plan_registration(
        "momentum/b", venue="futures", permissions="general-full", mount=mount, prefix="kraken"
    )
    with connect(VaultSettings(addr=openbao.addr, token=token, timeout=10.0)) as admin:
        assert "kraken/momentum/a" not in admin.list_keys(mount, "kraken")  # the state under test
        with pytest.raises(RefusedError, match=r"key ledger .*held by nobody"):
            register_key(admin, second, material)
    assert root.list_keys(mount, "kraken") == ["kraken/momentum/a"]
