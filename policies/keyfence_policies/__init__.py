"""Pure rule functions and the shared contract (label keys, permissions) of keyfence's policy pack.

Every module here uses relative imports only, so the package works both as
``keyfence_policies`` whether installed with keyfence
or found on ``sys.path`` when the Pulumi CLI runs the pack folder on its own.
"""
