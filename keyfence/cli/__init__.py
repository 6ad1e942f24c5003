"""The ``keyfence`` command: ``check`` and ``plan`` (``app``) and ``keys`` (``keys``)."""

from .app import main

__all__ = ["main"]
