"""The package's lazy name table: every public name resolves, and nothing heavy loads before it is asked for."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys

import vae_core


def test_every_public_name_resolves_to_its_module():
    for name in vae_core.__all__:
        value = getattr(vae_core, name)
        module = vae_core._LAZY.get(name)
        if module is not None:
            assert value is getattr(importlib.import_module(f"vae_core.{module}"), name), name
    assert sorted(vae_core.__all__) == dir(vae_core)


def test_import_loads_no_torch_until_a_lazy_name_is_used():
    code = (
        "import sys, json, vae_core\n"
        "before = 'torch' in sys.modules\n"
        "vae_core.ModelConfig, vae_core.ConfigError\n"
        "still = 'torch' in sys.modules\n"
        "vae_core.Trainer\n"
        "print(json.dumps([before, still, 'torch' in sys.modules]))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, False, True]
