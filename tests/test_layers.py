"""The layers stay apart: checked in fresh interpreters and on the app's source.

The engine loads no GUI module; the app imports no torch (it reaches models
through ``vae_core.inference``, which does) and loading its window does not
load torch at all, so the window opens before the engine's heavy imports.
"""

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

GUI = ("PySide6", "pyqtgraph", "app")
APP = Path(__file__).resolve().parents[1] / "app"


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


@pytest.mark.parametrize("module", ["vae_core.model", "vae_core.objectives", "vae_core.data", "vae_core.training",
                                    "vae_core.checkpoint", "vae_core.projection", "vae_core.inference",
                                    "vae_core.export", "vae_core.cli"])
def test_engine_modules_load_no_gui(module):
    mods = _modules_after(f"import {module}")
    assert _gui_modules(mods) == []
    assert "umap" not in mods and "numba" not in mods, "umap must be imported lazily"


def _torch_imports(path: Path) -> list[int]:
    """The line numbers in ``path`` that import torch (anywhere: module level or inside functions)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(n == "torch" or n.startswith("torch.") for n in names):
            found.append(node.lineno)
    return found


def test_no_module_of_the_app_imports_torch():
    files = sorted(APP.rglob("*.py"))
    assert len(files) > 10
    offenders = [f"{f.relative_to(APP.parent)}:{line}" for f in files for line in _torch_imports(f)]
    assert offenders == [], f"the app must reach models through vae_core.inference: {offenders}"


def test_the_scan_finds_torch_imports_anywhere(tmp_path):
    fake = tmp_path / "fake.py"
    fake.write_text("import numpy\ndef f():\n    from torch import nn\n    import os, torch.nn.functional\n"
                    "from .torch import x\n")
    assert _torch_imports(fake) == [3, 4]


def test_opening_the_window_modules_loads_no_torch():
    code = ("import os; os.environ.setdefault('QT_QPA_PLATFORM', 'offscreen')\n"
            "import app.program, app.main_window, app.session, app.recovery, app.screenshot\n"
            "import app.tools.explore_docks, app.tools.monitor")
    mods = _modules_after(code)
    assert "app.main_window" in mods
    assert "torch" not in mods, "the window's modules must not load torch (it loads in the background)"
    assert "umap" not in mods and "numba" not in mods


def test_the_headless_commands_of_the_program_load_no_qt():
    code = ("from app.program import main\n"
            "try:\n    main(['train', '--help'])\nexcept SystemExit as exc:\n    assert exc.code == 0\n")
    mods = _modules_after(code)
    assert "vae_core.cli" in mods
    assert _gui_modules(mods) == ["app", "app.program"], "vae-explorer train|evaluate|export runs without Qt"
