"""Cyclic garbage holding Qt objects is freed on the GUI thread, never in a worker thread."""

from __future__ import annotations

import gc
import threading

from PySide6 import QtCore, QtWidgets

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
