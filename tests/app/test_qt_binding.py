"""The Qt binding must not corrupt reference counts when signals are emitted.

PySide6 6.12.0 dropped one reference to ``True`` on every ``Signal.emit``; a
program that emits a few thousand signals then aborts with "deallocating True".
This guards against installing such a release again.
"""

import sys
import threading

from PySide6 import QtCore


class _Emitter(QtCore.QObject):
    obj = QtCore.Signal(object)
    num = QtCore.Signal(int)
    trio = QtCore.Signal(int, object, object)


class _Receiver(QtCore.QObject):
    def __init__(self):
        super().__init__()
        self.count = 0

    @QtCore.Slot(object)
    def on_obj(self, v):
        self.count += 1

    @QtCore.Slot(int, object, object)
    def on_trio(self, a, b, c):
        self.count += 1


def test_emit_keeps_singleton_refcounts(qapp):
    e, r = _Emitter(), _Receiver()
    e.obj.connect(r.on_obj)
    e.trio.connect(r.on_trio, QtCore.Qt.QueuedConnection)
    before = [sys.getrefcount(x) for x in (True, False, None)]
    for _ in range(3000):
        e.num.emit(1)
        e.obj.emit(None)
        e.trio.emit(1, None, True)

    def from_thread():
        for _ in range(1000):
            e.trio.emit(2, None, False)

    t = threading.Thread(target=from_thread)
    t.start()
    t.join()
    qapp.processEvents()
    qapp.processEvents()
    after = [sys.getrefcount(x) for x in (True, False, None)]
    assert r.count == 7000
    # A broken binding shifts these by thousands; a few stray references are harmless.
    drift = [a - b for a, b in zip(after, before)]
    assert all(abs(d) < 100 for d in drift), f"Qt binding {QtCore.__version__} corrupts reference counts: {drift}"
