"""``python -m app``: the ``vae-explorer`` command."""

import sys

from .program import main

sys.exit(main())
