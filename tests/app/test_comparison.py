"""The comparison window, offscreen, on tiny checkpoints trained on digits for one epoch."""

from __future__ import annotations

import csv
import threading
import time

import numpy as np
import pytest
import shiboken6
from PySide6 import QtCore, QtGui, QtWidgets

from app.main_window import MainWindow
from app.tools.comparison import ComparedRun, ComparisonWindow, open_comparison
from vae_core.checkpoint import save_checkpoint
from vae_core.compare import PRIOR_RADII, TABLE_ROWS
from vae_core.config import ModelConfig, TrainConfig
from vae_core.data import load_dataset
from vae_core.training import Trainer

from helpers import press, release

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")

TIMEOUT_MS = 90000


def _train(spec, path, beta: float, latent_dim: int, seed: int = 0) -> str:
    ds = load_dataset(spec)
    model = ModelConfig(input_shape=ds.input_shape, latent_dim=latent_dim, hidden_dims=(32,))
    config = TrainConfig(epochs=1, batch_size=128, beta=beta, seed=seed, device="cpu", num_threads=1)
    trainer = Trainer(model, config, ds)
    list(trainer.run())
    save_checkpoint(trainer, path)
    return str(path)


@pytest.fixture(scope="module")
def ckpts(tmp_path_factory):
    d = tmp_path_factory.mktemp("runs")
    return {
        "AE": _train("digits", d / "ae.ckpt", beta=0.0, latent_dim=2),
        "VAE": _train("digits", d / "vae.ckpt", beta=1.0, latent_dim=2, seed=1),
        "VAE3": _train("digits", d / "vae3.ckpt", beta=1.0, latent_dim=3),
        # digits shrunk to 6x6: a model that cannot take the 8x8 images
        "small": _train({"source": "digits", "size": 6}, d / "small.ckpt", beta=1.0, latent_dim=2),
    }


@pytest.fixture
def win(qtbot):
    w = MainWindow(restore=False)
    qtbot.addWidget(w)
    w.resize(900, 600)
    w.show()
    qtbot.waitExposed(w)
    yield w
    for cw in list(getattr(w, "comparison_windows", [])):
        cw.close()
    w.session.shutdown(3000)


def find(w, cls, name):
    obj = w.findChild(cls, name)
    assert obj is not None, f"no {cls.__name__} named {name}"
    return obj


def opened(qtbot, win, runs) -> ComparisonWindow:
    cw = open_comparison(win, runs)
    qtbot.waitUntil(lambda: cw.done, timeout=TIMEOUT_MS)
    return cw


def row_of(key: str) -> int:
    return next(i for i, r in enumerate(TABLE_ROWS) if r.key == key)


def test_three_runs_side_by_side(qtbot, win, ckpts, tmp_path, monkeypatch):
    with qtbot.waitSignal(win.session.datasetLoaded, timeout=60000):
        win.load_initial_dataset("digits")
    ds = win.session.dataset
    history_before = win.session.history
    runs = [ComparedRun("AE", ckpts["AE"]), ComparedRun("VAE", ckpts["VAE"]), ComparedRun("VAE3", ckpts["VAE3"])]
    cw = opened(qtbot, win, runs)
    assert cw.objectName() == "comparisonWindow"
    assert cw.windowTitle() == "Compare runs — AE, VAE, VAE3"
    assert cw.isWindow() and cw in win.comparison_windows
    assert cw.dataset is ds  # every model takes the main window's images: its data are used
    assert cw.messages == []

    maps = [find(cw, QtWidgets.QWidget, f"compareMap{k}") for k in range(3)]
    assert cw.findChild(QtWidgets.QWidget, "compareMap3") is None
    held_out = np.sort(np.asarray(ds.test_idx))
    for m in maps:
        assert m.n_points() == len(held_out)
        np.testing.assert_array_equal(m.indices(), held_out)  # the same examples in every map
        assert m.circle_labels() == ["1σ", "2σ"]
        assert m.prior()[1] == PRIOR_RADII
    assert maps[0].axis_labels() == ("z1", "z2")
    assert maps[2].axis_labels()[0].startswith("PC1")  # three latent dims: PCA

    # Linked selection by a real click on the second map.
    index = int(held_out[7])
    x, y = maps[1].position_of(index)
    with qtbot.waitSignal(cw.exampleSelected, timeout=3000) as sig:
        press(maps[1], x, y)
        release(maps[1], x, y)
    picked = sig.args[0]
    assert cw.selected == picked
    assert maps[1].position_of(picked) is not None
    assert [m.highlighted() for m in maps] == [picked] * 3
    recon = find(cw, QtWidgets.QWidget, "compareReconstructions")
    qtbot.waitUntil(lambda: recon.grid_shape() == (1, 4), timeout=10000)  # the original and three reconstructions

    cw.select_example(index)
    assert [m.highlighted() for m in maps] == [index] * 3

    # The table: a column per run, the ELBO filled with a number.
    table = find(cw, QtWidgets.QTableWidget, "compareTable")
    assert table.columnCount() == 3
    assert [table.horizontalHeaderItem(k).text() for k in range(3)] == ["AE", "VAE", "VAE3"]
    elbo_row = row_of("elbo")
    for k in range(3):
        value = float(table.item(elbo_row, k).text())
        assert value == pytest.approx(cw.figures()[k].elbo, abs=0.01)
        assert table.item(elbo_row, k).toolTip() == TABLE_ROWS[elbo_row].tooltip
    assert table.isRowHidden(row_of("mig"))  # digits have no ground-truth factors

    # At 1280 x 800 the maps share the top row and the table shows every column whole.
    cw.resize(1280, 800)  # the offscreen screen is smaller: the window opened at its size
    qtbot.waitUntil(lambda: cw.size() == QtCore.QSize(1280, 800), timeout=2000)
    qtbot.wait(50)
    assert all(m.width() > 300 and m.height() > 250 for m in maps)
    assert len({m.geometry().top() for m in maps}) == 1
    assert not table.horizontalScrollBar().isVisible()

    # The same prior draws: equal for equal latent dims, the same first column otherwise.
    z = cw.prior_codes()
    np.testing.assert_array_equal(z["AE"], z["VAE"])
    assert z["VAE3"].shape == (16, 3)
    np.testing.assert_array_equal(z["VAE3"][:, :2], z["AE"])
    for k in range(3):
        assert find(cw, QtWidgets.QWidget, f"comparePriorSamples{k}").grid_shape() == (4, 4)

    curves = find(cw, QtWidgets.QWidget, "compareCurves")
    assert curves.legend_names() == ["AE", "VAE", "VAE3"]
    assert "ELBO" in curves.axis_labels()[1] and "nats" in curves.axis_labels()[1]
    _, _, ex, ey = curves.run_data("VAE")
    assert len(ex) == 1 and ey[0] == pytest.approx(-cw.figures()[1].elbo, rel=0.05)

    interp = find(cw, QtWidgets.QWidget, "compareInterpolation")
    qtbot.waitUntil(lambda: interp.grid_shape() == (3, 10), timeout=10000)
    a, b = cw.pair
    assert ds.labels[a] != ds.labels[b]
    version = interp.image_version()
    qtbot.mouseClick(find(cw, QtWidgets.QPushButton, "compareEndBButton"), QtCore.Qt.LeftButton)
    assert cw.pair == (a, index)
    qtbot.waitUntil(lambda: interp.image_version() > version, timeout=10000)
    qtbot.mouseClick(find(cw, QtWidgets.QPushButton, "compareNewPairButton"), QtCore.Qt.LeftButton)
    assert cw.pair != (a, index)

    # Export: the window as one PNG, the table as CSV.
    png = tmp_path / "comparison.png"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", lambda *a, **k: (str(png), ""))
    qtbot.mouseClick(find(cw, QtWidgets.QPushButton, "compareExportPngButton"), QtCore.Qt.LeftButton)
    image = QtGui.QImage(str(png))
    assert not image.isNull() and image.width() >= cw.width() - 1
    out = tmp_path / "table.csv"
    monkeypatch.setattr(QtWidgets.QFileDialog, "getSaveFileName", lambda *a, **k: (str(out), ""))
    qtbot.mouseClick(find(cw, QtWidgets.QPushButton, "compareExportCsvButton"), QtCore.Qt.LeftButton)
    rows = list(csv.reader(out.open()))
    assert rows[0] == ["figure", "AE", "VAE", "VAE3"]
    assert any(r[0] == TABLE_ROWS[elbo_row].label and r[1] for r in rows)
    assert cw.messages == []

    bad = tmp_path / "no such folder" / "table.csv"
    assert not cw.save_csv(str(bad))
    assert str(bad) in cw.messages[-1]

    assert win.session.history is history_before  # the main window's run is left alone
    cw.close()
    assert cw not in win.comparison_windows


def test_a_model_of_other_images_is_left_out(qtbot, win, ckpts):
    # No data in the main window: the first run's own data are read.
    assert win.session.dataset is None
    runs = [ComparedRun("VAE", ckpts["VAE"]), ComparedRun("tiny images", ckpts["small"]),
            ComparedRun("AE", ckpts["AE"])]
    cw = opened(qtbot, win, runs)
    assert cw.dataset is not None and tuple(cw.dataset.input_shape) == (1, 8, 8)
    assert len(cw.messages) == 1
    assert "tiny images" in cw.messages[0] and ckpts["small"] in cw.messages[0]
    assert find(cw, QtWidgets.QLabel, "compareMessages").isVisible()
    assert cw.windowTitle() == "Compare runs — VAE, AE"
    assert find(cw, QtWidgets.QTableWidget, "compareTable").columnCount() == 2
    assert cw.findChild(QtWidgets.QWidget, "compareMap2") is None
    assert find(cw, QtWidgets.QWidget, "compareMap1").n_points() > 0
    assert win.session.dataset is None and win.session.history is None


def test_unreadable_checkpoint_and_closing_with_the_main_window(qtbot, win, ckpts, tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    cw = open_comparison(win, [ComparedRun("VAE", ckpts["VAE"]), ComparedRun("broken", str(broken))])
    qtbot.waitUntil(lambda: bool(cw.messages), timeout=TIMEOUT_MS)
    assert "broken" in cw.messages[0] and str(broken) in cw.messages[0]
    qtbot.waitUntil(lambda: cw.done, timeout=TIMEOUT_MS)
    assert "nothing to compare" in cw.messages[-1]
    assert find(cw, QtWidgets.QWidget, "compareMap0").n_points() > 0

    second = open_comparison(win, [ComparedRun("VAE", ckpts["VAE"]), ComparedRun("AE", ckpts["AE"])])
    assert second.isVisible()
    win.close_without_asking()  # the main window closes while the second comparison is at work
    qtbot.waitUntil(lambda: cw.is_closed and second.is_closed, timeout=5000)
    assert win.comparison_windows == []
    qtbot.wait(50)  # a closed comparison window is deleted


def test_two_to_four_runs(win, ckpts):
    with pytest.raises(ValueError):
        open_comparison(win, [ComparedRun("VAE", ckpts["VAE"])])
    with pytest.raises(ValueError):
        open_comparison(win, [ComparedRun(str(i), ckpts["VAE"]) for i in range(5)])


def test_runs_are_scored_on_their_own_data_and_told_apart_by_name(qtbot, win, ckpts):
    # The window shows digits binarised: images of the same size, but not the data the runs learnt.
    with qtbot.waitSignal(win.session.datasetLoaded, timeout=60000):
        win.session.load_dataset({"source": "digits", "binarize": "static"})
    shown = win.session.dataset
    cw = opened(qtbot, win, [ComparedRun("VAE", ckpts["AE"]), ComparedRun("VAE", ckpts["VAE"])])
    assert cw.dataset is not shown and cw.dataset.spec.binarize == "none"
    names = [r.name for r in cw.runs]
    assert names == ["VAE (ae.ckpt)", "VAE (vae.ckpt)"]
    table = find(cw, QtWidgets.QTableWidget, "compareTable")
    assert [table.horizontalHeaderItem(c).text() for c in range(table.columnCount())] == names


def test_closing_while_jobs_run_returns_at_once(qtbot, win, ckpts, monkeypatch):
    import vae_core.compare

    real_compare_run = vae_core.compare.compare_run
    figures_started, figures_ended = [], []

    def slow_compare_run(*args, **kwargs):
        figures_started.append(time.monotonic())
        time.sleep(3.0)  # an IWAE batch: not cancellable mid-call
        try:
            return real_compare_run(*args, **kwargs)
        finally:
            figures_ended.append(time.monotonic())

    monkeypatch.setattr(vae_core.compare, "compare_run", slow_compare_run)
    cw = open_comparison(win, [ComparedRun("AE", ckpts["AE"]), ComparedRun("VAE", ckpts["VAE"])])
    qtbot.waitUntil(lambda: len(figures_started) == 2 and all(r.views is not None for r in cw.active),
                    timeout=TIMEOUT_MS)

    # A reconstruction that fails after a while is running on the decoding thread when the window closes.
    recon_started, recon_ended = threading.Event(), threading.Event()

    def slow_failing_encode(image):
        recon_started.set()
        time.sleep(3.0)
        recon_ended.set()
        raise RuntimeError("late failure")

    monkeypatch.setattr(cw.active[0].opened.encoder, "encode", slow_failing_encode)
    cw.select_example(int(cw.examples[0]))
    qtbot.waitUntil(recon_started.is_set, timeout=5000)
    messages = cw.messages

    t0 = time.monotonic()
    assert cw.close()
    assert time.monotonic() - t0 < 0.5
    assert cw.is_closed and not cw.isVisible()
    assert cw not in win.comparison_windows
    assert win.isVisible()  # the main window stays
    assert shiboken6.isValid(cw)  # kept while its jobs run

    qtbot.waitUntil(lambda: not shiboken6.isValid(cw), timeout=15000)
    assert recon_ended.is_set() and len(figures_ended) == 2  # deleted only once every job had ended
    assert messages == []  # the late failure and the late figures were not shown


def test_a_stale_failure_is_not_shown(qtbot, win, ckpts, monkeypatch):
    cw = opened(qtbot, win, [ComparedRun("AE", ckpts["AE"]), ComparedRun("VAE", ckpts["VAE"])])
    assert cw.messages == []
    encoder = cw.active[0].opened.encoder
    real_encode = encoder.encode
    first_started = threading.Event()
    calls = []

    def encode(image):
        calls.append(1)
        if len(calls) == 1:  # the first request fails, after the second was made
            first_started.set()
            time.sleep(0.5)
            raise RuntimeError("stale failure")
        return real_encode(image)

    monkeypatch.setattr(encoder, "encode", encode)
    recon = find(cw, QtWidgets.QWidget, "compareReconstructions")
    version = recon.image_version()
    cw.select_example(int(cw.examples[0]))
    qtbot.waitUntil(first_started.is_set, timeout=5000)
    cw.select_example(int(cw.examples[1]))  # the newer request, which succeeds
    qtbot.waitUntil(lambda: recon.image_version() > version, timeout=10000)
    assert len(calls) == 2
    assert cw.messages == []

    # The newest request's own failure is shown.
    def failing(image):
        raise RuntimeError("current failure")

    monkeypatch.setattr(encoder, "encode", failing)
    cw.select_example(int(cw.examples[2]))
    qtbot.waitUntil(lambda: bool(cw.messages), timeout=10000)
    assert "reconstructions" in cw.messages[-1] and "current failure" in cw.messages[-1]
    assert recon.image_version() > version


def test_the_main_window_closing_waits_for_a_closed_windows_job(qtbot, win, ckpts, monkeypatch):
    cw = opened(qtbot, win, [ComparedRun("AE", ckpts["AE"]), ComparedRun("VAE", ckpts["VAE"])])
    started, ended = threading.Event(), threading.Event()

    def slow_encode(image):
        started.set()
        time.sleep(1.0)
        ended.set()
        raise RuntimeError("late failure")

    monkeypatch.setattr(cw.active[0].opened.encoder, "encode", slow_encode)
    cw.select_example(int(cw.examples[0]))
    qtbot.waitUntil(started.is_set, timeout=5000)
    cw.close()  # returns at once, the job still running
    assert not ended.is_set() and shiboken6.isValid(cw)
    win.close_without_asking()  # the program is ending: its close waits (a bounded time) for the job
    assert ended.is_set()
    qtbot.waitUntil(lambda: not shiboken6.isValid(cw), timeout=5000)
