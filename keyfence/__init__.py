"""keyfence: one exchange API key per process, one subaccount per strategy.

The package is laid out in the order data flows through a deployment: ``spec`` (the
fleet contract users edit) -> ``vault`` (the connection and the KV v2 client) -> ``keys``
(one verified key per process) -> ``fleet`` (the Kubernetes resources) -> ``program``
(what ``pulumi up`` runs). Beside it, the tooling: ``check`` (the hermetic policy check),
``keystore`` (key lifecycle in Vault), ``cli`` (the ``keyfence`` command), ``demo`` and
``devvault``. See docs/architecture.md.
"""
