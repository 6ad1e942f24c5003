"""keyfence's Pulumi program and command line: fleet spec -> Vault keys -> Kubernetes resources."""
