# keyfence-ci-metadata: the token CI uses for `keyfence check` on pull requests.
#
# Held by: the pull-request workflow (repository secret VAULT_TOKEN_CI, or an AppRole/JWT login
# that yields this policy). Pull-request code runs with this token, so it must never reach key
# material: it may read and list KV v2 *metadata* only -- fingerprints, permissions, subaccount,
# versions -- and nothing under data/, destroy/, delete/ or undelete/.
#
# Defaults: KV v2 mount "secret", key prefix "kraken" (the fleet spec's vault.mount / vault.prefix).
# To adapt: replace "secret" with your mount and "kraken" with your prefix in every path below.
# A process whose spec sets an explicit `key:` outside <prefix>/ needs its own path rule here,
# in deploy.hcl and in key-admin.hcl.

# Read one key's metadata (custom_metadata carries the fingerprint) and list the prefix tree.
path "secret/metadata/kraken/*" {
  capabilities = ["read", "list"]
}

# The key ledger (README "The key ledger"): one record per key, {path, stack, process, claimed_at},
# no material. `keyfence check --stack NAME` reads it to report a key another stack holds.
path "secret/data/keyfence/ledger/*" {
  capabilities = ["read"]
}

# OpenBao: every key's metadata in one request per folder (LIST detailed-metadata), instead of one
# read per key. Optional: without it keyfence reads each key's metadata (HashiCorp Vault has no
# such endpoint). Metadata only, never data.
path "secret/detailed-metadata/kraken/*" {
  capabilities = ["list"]
}

# OpenBao: the whole key ledger in one request (LIST detailed-metadata); records whose mirror in
# metadata is current are not read one by one. Optional, as above.
path "secret/detailed-metadata/keyfence/ledger/*" {
  capabilities = ["list"]
}

# Deliberately absent: secret/data/kraken/* (the key material).
