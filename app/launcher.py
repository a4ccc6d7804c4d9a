"""The ``vae-explorer`` command.

``vae-explorer train|evaluate|export ...`` runs the headless engine and imports
no Qt; anything else opens the desktop program.
"""

from __future__ import annotations

import sys

HEADLESS = ("train", "evaluate", "export")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in HEADLESS:
        from vae_core.cli import main as cli_main

        return cli_main(argv)
    from . import main as gui_main

    return gui_main(argv)


if __name__ == "__main__":
    sys.exit(main())
