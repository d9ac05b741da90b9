"""``python -m fishersym …``: the same command line as the ``fishersym`` script (:func:`fishersym.cli.main`)."""
from __future__ import annotations

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
