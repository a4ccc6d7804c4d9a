import os

# Qt must run headless in tests; this has to happen before anything imports Qt.
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("LATENT_EXPLORER_NO_WARMUP", "1")

import gc  # noqa: E402

import pytest  # noqa: E402


@pytest.fixture(autouse=True)
def _collect_when_automatic_collection_is_off():
    """The program's window turns automatic garbage collection off; tests that run after it still get their memory back."""
    yield
    if not gc.isenabled():
        gc.collect()


@pytest.fixture(autouse=True)
def _isolated_settings(tmp_path_factory, monkeypatch):
    """Keep QSettings (recent files, window layout) and caches out of the user's home."""
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(home / "cache"))
    try:
        from PySide6 import QtCore
    except ImportError:  # engine-only environments
        return
    QtCore.QSettings.setPath(QtCore.QSettings.IniFormat, QtCore.QSettings.UserScope, str(home / "config"))
