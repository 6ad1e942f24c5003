"""keyfence's Pulumi CrossGuard policy pack.

The Pulumi CLI runs this folder as a program (``__main__.py``); the rules live in
``keyfence_rules`` so that tests and the ``infra`` program can import them without
starting the pack's gRPC server.
"""
