# ---- momentum/risk: policy 'keyfence-momentum.risk' (vault policy write keyfence-momentum.risk <this block>)
# keyfence-momentum.risk: vault-secrets-operator reads the key of momentum/risk, nothing else.
path "secret/data/kraken/momentum/risk-v2" {
  capabilities = ["read"]
}
# Kubernetes-auth role:
#   vault write auth/kubernetes/role/keyfence-momentum.risk \
#       bound_service_account_names=risk \
#       bound_service_account_namespaces=momentum \
#       audience=vault \
#       token_policies=keyfence-momentum.risk token_ttl=10m token_max_ttl=10m
