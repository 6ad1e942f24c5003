# keyfence-deploy: the token `pulumi preview` / `pulumi up` run with.
#
# Held by: the deploy workflow (repository or environment secret VAULT_TOKEN_DEPLOY) or the
# in-cluster deployer's Kubernetes service account. The Pulumi program reads every fleet key's
# metadata and material to verify its fingerprint and to build the key Secrets, so this token
# can read key material -- and nothing more: it cannot write, delete or destroy any key.
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
