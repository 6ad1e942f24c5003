# keyfence-deploy: the token `pulumi preview` / `pulumi up` run with.
#
# Held by: the deploy workflow (repository or environment secret VAULT_TOKEN_DEPLOY) or the
# in-cluster deployer's Kubernetes service account. The Pulumi program reads every fleet key's
# metadata and material to verify its fingerprint and to build the key Secrets, so this token
# can read key material -- and nothing more: it cannot write, delete or destroy any key. It also
# claims and releases keys in the key ledger (the keyfence:ledger:Claim resources).
#
# Defaults: KV v2 mount "secret", key prefix "kraken" (the fleet spec's vault.mount / vault.prefix).
# To adapt: replace "secret" with your mount and "kraken" with your prefix in every path below.
# A process whose spec sets an explicit `key:` outside <prefix>/ needs its own path rules here.

# Key material (api_key, api_secret) of every key under the prefix.
path "secret/data/kraken/*" {
  capabilities = ["read"]
}

# Metadata: fingerprint, permissions, subaccount, current version; list to enumerate keys.
path "secret/metadata/kraken/*" {
  capabilities = ["read", "list"]
}

# The key ledger: read every record in the pre-flight; create a record for a key registered before
# the ledger existed (cas=0) and claim or release one (update with the version read); remove an
# unclaimed record whose path no longer holds its key, when a claim is released (a tombstone
# written with the version read: never a delete, which could erase a claim made meanwhile).
path "secret/data/keyfence/ledger/*" {
  capabilities = ["create", "read", "update"]
}

# After each claim or release, mirror the record into its custom metadata (update).
path "secret/metadata/keyfence/ledger/*" {
  capabilities = ["update"]
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
