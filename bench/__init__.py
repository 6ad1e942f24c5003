"""``make bench``: keyfence at fleet scale against the Pulumi SDK's own floor.

One concept per module: :mod:`bench.fleet` generates synthetic fleets, :mod:`bench.seed`
stores their keys in OpenBao, :mod:`bench.floor` is the bare Pulumi program the figures are
compared with, :mod:`bench.stages` times each stage of keyfence, :mod:`bench.memory`
measures the check's peak memory in a process of its own, :mod:`bench.report` renders the
table and the JSON, :mod:`bench.worker` times one size in a fresh interpreter (:mod:`bench.child`
starts those), and :mod:`bench.run` ties them together for ``python -m bench``.
"""
