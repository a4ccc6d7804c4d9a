"""Cyclic garbage holding Qt objects is freed on the GUI thread, never in a worker thread."""

from __future__ import annotations

import gc
import threading

from PySide6 import QtWidgets

from app.main_window import MainWindow


class _Holder(QtWidgets.QWidget):
    died_in: list[str] = []

    def __init__(self):
        super().__init__()
        self.me = self  # a reference cycle: only the cyclic collector frees it
        self.destroyed.connect(lambda *_: None)

    def __del__(self):
        _Holder.died_in.append(threading.current_thread().name)


def test_window_turns_off_automatic_collection_and_collects_on_the_gui_thread(qtbot):
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    assert not gc.isenabled()
    gc.collect()
    _Holder.died_in.clear()
    h = _Holder()
    del h

    kept = []

    def churn():
        # Enough live container allocations to trigger several automatic collections if they were on.
        kept.extend([i] for i in range(20_000))

    t = threading.Thread(target=churn, name="worker")
    t.start()
    t.join()
    assert _Holder.died_in == []  # nothing was collected in the worker thread
    qtbot.waitUntil(lambda: bool(_Holder.died_in), timeout=5000)  # the GUI thread's timer collects it
    assert _Holder.died_in == [threading.main_thread().name]


def test_objects_of_an_import_burst_are_frozen_instead_of_scanned(qtbot, monkeypatch):
    import sys
    import types

    from app import main_window

    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    collector = main_window._gui_gc
    assert collector is not None
    collector.check()  # settle: nothing imported since
    before = gc.get_freeze_count()
    # Modules imported by another thread since the last check, with what they made.
    made = [[i] for i in range(5000)]
    for i in range(main_window.IMPORT_BURST_MODULES):
        monkeypatch.setitem(sys.modules, f"_burst_probe_{i}", types.ModuleType(f"_burst_probe_{i}"))
    collector.check()
    assert gc.get_freeze_count() >= before + len(made), "the burst's objects are frozen"
    # Without new imports the next check collects as usual: a fresh cycle is freed.
    _Holder.died_in.clear()
    h = _Holder()
    del h
    kept = [[i] for i in range(2000)]  # enough allocations for a collection to be due
    collector.check()
    assert _Holder.died_in == [threading.main_thread().name]
    del kept
