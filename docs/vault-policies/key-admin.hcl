# keyfence-key-admin: the token behind `keyfence keys register|list|revoke`.
#
# Held by: the few people (or the provisioning job) who create keys on the exchange and load
# them into Vault -- never CI and never the cluster. It can write new key versions and destroy
# old ones, but it cannot read material back: the data path grants create/update, not read.
# `register` learns the current version and fingerprint from metadata.
#
# Defaults: KV v2 mount "secret", key prefix "kraken" (the fleet spec's vault.mount / vault.prefix).
# To adapt: replace "secret" with your mount and "kraken" with your prefix in every path below.
# A process whose spec sets an explicit `key:` outside <prefix>/ needs its own path rules here.

# Write a key version. `create` covers a new key (cas=0), `update` a new version of an existing
# one (cas=<current version>). A policy cannot demand the nested `options.cas` field; KV v2
# enforces check-and-set when cas_required=true on the key's metadata or on the mount
# (`bao write secret/config cas_required=true`).
path "secret/data/kraken/*" {
  capabilities = ["create", "update"]
}

# Read and list metadata (list, duplicate-fingerprint checks); write custom_metadata and
# cas_required on register (create/update; patch for `bao kv metadata patch`); delete all
# versions and the metadata of a key on revoke (delete).
path "secret/metadata/kraken/*" {
  capabilities = ["create", "read", "update", "patch", "delete", "list"]
}

# Revoke: permanently destroy specific versions of a key's material.
path "secret/destroy/kraken/*" {
  capabilities = ["update"]
}

# The key ledger: register creates a key's record first (cas=0: of two registrations of one key,
# exactly one wins); `keys release` and `keys list --repair` update records with the version read;
# rotate, revoke and --repair remove a record by writing a tombstone with the version read.
path "secret/data/keyfence/ledger/*" {
  capabilities = ["create", "read", "update"]
}

# List the ledger (`keys list`, `keys release`); mirror a record into its custom metadata after
# each write (update).
path "secret/metadata/keyfence/ledger/*" {
  capabilities = ["read", "list", "update"]
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

# `keys list` looks for copies of a key anywhere in the mount, not only under the prefix: list and
# read the metadata (never the data) of the whole mount.
path "secret/metadata/*" {
  capabilities = ["read", "list"]
}
