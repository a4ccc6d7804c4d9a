"""Latent Explorer's desktop program.  ``app.program.main`` runs it (the ``vae-explorer`` command)."""

from __future__ import annotations

__version__ = "0.1.0"
