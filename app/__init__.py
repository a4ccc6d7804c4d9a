"""Latent Explorer's desktop program.  ``app.main(argv)`` runs it."""

from __future__ import annotations

__version__ = "0.1.0"


def main(argv: list[str] | None = None) -> int:
    from .program import main as _main

    return _main(argv)
