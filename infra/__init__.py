"""The Pulumi program folder (``Pulumi.yaml``: ``main: infra/``): what ``pulumi up`` runs, and nothing else.

The program itself is the ``keyfence`` package; ``__main__.py`` calls it. ``infra.program``
remains for one release so wrapping programs written against it keep working.
"""
