"""Entry point for ``pulumi preview`` / ``pulumi up``: the whole program is ``keyfence.program``."""

import sys
from pathlib import Path

if __package__ in (None, ""):
    # Pulumi runs this folder as a script with infra/ first on sys.path; put the project root
    # there instead, so `keyfence` imports from the checkout even when it is not installed.
    sys.path[0] = str(Path(__file__).resolve().parent.parent)

from keyfence.program import main

main()
