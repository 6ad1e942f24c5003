"""``make bench``: keyfence at fleet scale against the Pulumi SDK's own floor.

One concept per module: :mod:`bench.fleet` generates synthetic fleets, :mod:`bench.seed`
stores their keys in OpenBao, :mod:`bench.plan` writes what the check declares as a plan and
:mod:`bench.bare` is the bare Pulumi program (the floor) that registers it with nothing of
keyfence in its process, :mod:`bench.stages` times each stage of keyfence, :mod:`bench.memory`
measures the check's and the pack's peak memory and the check's GC time in a
process of its own, :mod:`bench.report` renders the
table and the JSON, :mod:`bench.worker` times one size in a fresh interpreter (:mod:`bench.child`
starts those), and :mod:`bench.run` ties them together for ``python -m bench``.
"""
