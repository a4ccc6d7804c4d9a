"""The engine stays free of the GUI: checked in fresh interpreters."""

import json
import subprocess
import sys

import pytest

GUI = ("PySide6", "pyqtgraph", "superqt", "app")


def _modules_after(code: str) -> set[str]:
    out = subprocess.run(
        [sys.executable, "-c", code + "\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"],
        capture_output=True, text=True, check=True, timeout=120,
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _gui_modules(mods: set[str]) -> list[str]:
    return sorted(m for m in mods if m.split(".")[0] in GUI)


def test_import_vae_core_loads_no_gui():
    mods = _modules_after("import vae_core")
    assert _gui_modules(mods) == []
    assert "torch" not in mods, "import vae_core should stay cheap; torch loads on first use"


@pytest.mark.parametrize("module", ["vae_core.model", "vae_core.objectives", "vae_core.data", "vae_core.training", "vae_core.checkpoint", "vae_core.projection", "vae_core.cli"])
def test_engine_modules_load_no_gui(module):
    mods = _modules_after(f"import {module}")
    assert _gui_modules(mods) == []
    assert "umap" not in mods and "numba" not in mods, "umap must be imported lazily"
