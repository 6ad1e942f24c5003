"""Pure rule functions and the shared contract (label keys, permissions) of keyfence's policy pack.

Every module here uses relative imports only, so the package works both as
``policies.keyfence_rules`` (installed with keyfence) and as ``keyfence_rules``
(when the Pulumi CLI runs the pack folder on its own).
"""
