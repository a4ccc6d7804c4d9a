"""Selecting examples on the map and finding their neighbours in latent space.

* Lasso (``lassoAction``, L): a left drag on the map draws a polygon, and
  the examples inside it are selected when the button is released; with
  Ctrl held the drag is a box instead; Shift adds to the selection, Alt
  takes away from it.  The selected examples are drawn emphasised on the
  map (``LatentView.set_selection_mask``: one raster layer, as cheap at a
  million points as at a hundred).
* The selection panel (``selectionPanel``): how many are selected, their
  label histogram, the decode of their mean code, a grid of the first
  ``GRID_EXAMPLES`` of them, Export CSV (index, label, codes), Export PNG
  (the grid) and Clear.
* The neighbours panel (``neighboursPanel``): the k nearest examples of the
  selected example in latent space (not on the 2-D map), as a strip with
  their distances, also marked on the map.
* Search by image (``searchPanel``): an image file, opened or dropped on the
  panel, is resized like the dataset and encoded; its q(z|x) is drawn on the
  map (a star at the mean, the 1- and 2-sigma ellipses), beside its
  reconstruction and its nearest examples in latent space.
* Draw your own input (``drawPanel``, grey datasets): a canvas to draw on
  with the mouse; while the stroke grows the drawing is resized like the
  dataset and encoded (at most every ``DRAW_INTERVAL_MS``), and its
  posterior moves on the map beside its reconstruction.

The geometry and the neighbour search are in ``vae_core.selection``.  The
GUI thread only draws: every selection, summary, index build, search and
decode runs on this module's worker thread, newest request of each kind
first.  A selection is dropped with the codes it was made on (another
dataset, or no model).
"""

from __future__ import annotations

import math
import os
from typing import TYPE_CHECKING, Any, Callable

import numpy as np
import pyqtgraph as pg
from PySide6 import QtCore, QtGui, QtWidgets

from vae_core import explore as X
from vae_core import selection as S
from vae_core.data.images import IMAGE_EXTENSIONS, load_image_like
from vae_core.export import iter_latents_csv

from ..display import code_text, decoded_for_display, images_for_display
from ..widgets.decode_canvas import DecodeCanvas, ImageGrid
from ..widgets.latent_view import SELECTION_EDGE, class_colour
from ..worker import LatestWins
from .explore_docks import EXPORT_SCALE, GRID_PAD, _Dock, _place

if TYPE_CHECKING:
    from ..main_window import MainWindow

Slot = QtCore.Slot

#: Examples shown in the selection panel's grid (the first ones by index).
GRID_EXAMPLES = 256
#: Neighbours shown by default.
DEFAULT_K = 10
#: Colour of a searched (or drawn) input's posterior on the map.
QUERY_COLOUR = QtGui.QColor(0, 170, 200)
#: Side of the drawing canvas's image, in its own pixels, and the pen's width in them.
DRAW_SIDE = 112
DRAW_PEN = 10
#: At most one encode of a drawing in this many milliseconds while the stroke grows.
DRAW_INTERVAL_MS = 80
#: Pixels moved before another lasso vertex is added.
LASSO_STEP_PX = 3.0


def install(window: "MainWindow") -> "SelectionTools":
    """Add the lasso, the selection panel and the neighbours panel to ``window``."""
    return SelectionTools(window)


class LabelHistogram(QtWidgets.QWidget):
    """A small bar chart of counts per class, in the map's class colours, with the class names under it."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("selectionHistogram")
        self.setMinimumHeight(90)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed)
        self._counts = np.zeros(0, dtype=np.int64)
        self._names: list[str] = []

    def set_counts(self, counts: np.ndarray | None, names: list[str] | None) -> None:
        self._counts = np.zeros(0, dtype=np.int64) if counts is None else np.asarray(counts, dtype=np.int64)
        n = len(self._counts)
        self._names = [str(names[i]) if names is not None and i < len(names) else str(i) for i in range(n)]
        self.update()

    def counts(self) -> np.ndarray:
        return self._counts.copy()

    def paintEvent(self, _ev: QtGui.QPaintEvent) -> None:
        n = len(self._counts)
        if n == 0:
            return
        p = QtGui.QPainter(self)
        fm = p.fontMetrics()
        text_h = fm.height()
        area = QtCore.QRectF(self.rect()).adjusted(2, text_h + 2, -2, -text_h - 2)
        top = max(1, int(self._counts.max()))
        bw = area.width() / n
        for i, c in enumerate(self._counts):
            bh = area.height() * float(c) / top
            r = QtCore.QRectF(area.left() + i * bw + 1, area.bottom() - bh, max(1.0, bw - 2), bh)
            p.fillRect(r, class_colour(i))
            p.setPen(self.palette().color(QtGui.QPalette.ColorRole.WindowText))
            cell = QtCore.QRectF(area.left() + i * bw, area.bottom() + 1, bw, text_h)
            p.drawText(cell, int(QtCore.Qt.AlignmentFlag.AlignHCenter), fm.elidedText(self._names[i], QtCore.Qt.ElideRight, int(bw)))
            if c:
                above = QtCore.QRectF(area.left() + i * bw, r.top() - text_h, bw, text_h)
                p.drawText(above, int(QtCore.Qt.AlignmentFlag.AlignHCenter), str(int(c)))
        p.end()


class DrawCanvas(QtWidgets.QWidget):
    """A square grey image the user draws on with the left button (white on black); ``changed`` as it grows."""

    changed = QtCore.Signal()

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("drawCanvas")
        self.setMinimumSize(140, 140)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Expanding)
        self.setCursor(QtCore.Qt.CursorShape.CrossCursor)
        self._image = QtGui.QImage(DRAW_SIDE, DRAW_SIDE, QtGui.QImage.Format.Format_Grayscale8)
        self._image.fill(0)
        self._last: QtCore.QPointF | None = None
        self._strokes = 0

    def clear(self) -> None:
        self._image.fill(0)
        self._last = None
        self._strokes = 0
        self.update()
        self.changed.emit()

    def is_blank(self) -> bool:
        return self._strokes == 0

    def to_array(self) -> np.ndarray:
        """The drawing, (DRAW_SIDE, DRAW_SIDE) uint8."""
        img = self._image
        a = np.frombuffer(img.constBits(), dtype=np.uint8).reshape(img.height(), img.bytesPerLine())
        return a[:, : img.width()].copy()

    def scaled(self, w: int, h: int) -> np.ndarray:
        """The drawing resized to (h, w) uint8 (smoothly, as a photo is shrunk)."""
        img = self._image.scaled(w, h, QtCore.Qt.AspectRatioMode.IgnoreAspectRatio,
                                 QtCore.Qt.TransformationMode.SmoothTransformation)
        a = np.frombuffer(img.constBits(), dtype=np.uint8).reshape(img.height(), img.bytesPerLine())
        return a[:, :w].copy()

    def _square(self) -> QtCore.QRectF:
        side = min(self.width(), self.height())
        return QtCore.QRectF((self.width() - side) / 2, (self.height() - side) / 2, side, side)

    def _to_image(self, pos: QtCore.QPointF) -> QtCore.QPointF:
        r = self._square()
        return QtCore.QPointF((pos.x() - r.left()) * DRAW_SIDE / r.width(), (pos.y() - r.top()) * DRAW_SIDE / r.height())

    def _stroke_to(self, pos: QtCore.QPointF) -> None:
        p = QtGui.QPainter(self._image)
        p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        pen = QtGui.QPen(QtGui.QColor(255, 255, 255), DRAW_PEN, QtCore.Qt.PenStyle.SolidLine,
                         QtCore.Qt.PenCapStyle.RoundCap, QtCore.Qt.PenJoinStyle.RoundJoin)
        p.setPen(pen)
        q = self._to_image(pos)
        p.drawLine(self._last if self._last is not None else q, q)
        p.end()
        self._last = q
        self._strokes += 1
        self.update()
        self.changed.emit()

    def mousePressEvent(self, ev: QtGui.QMouseEvent) -> None:
        if ev.button() == QtCore.Qt.MouseButton.LeftButton:
            self._last = None
            self._stroke_to(ev.position())

    def mouseMoveEvent(self, ev: QtGui.QMouseEvent) -> None:
        if self._last is not None:
            self._stroke_to(ev.position())

    def mouseReleaseEvent(self, ev: QtGui.QMouseEvent) -> None:
        if ev.button() == QtCore.Qt.MouseButton.LeftButton and self._last is not None:
            self._stroke_to(ev.position())
            self._last = None

    def paintEvent(self, _ev: QtGui.QPaintEvent) -> None:
        p = QtGui.QPainter(self)
        r = self._square()
        p.drawImage(r, self._image)
        p.setPen(self.palette().color(QtGui.QPalette.ColorRole.Mid))
        p.drawRect(r.adjusted(0, 0, -1, -1))
        p.end()


class SelectionTools(QtCore.QObject):
    """The lasso on the map, the selection panel and the neighbours panel, kept up to date with the session."""

    def __init__(self, window: "MainWindow"):
        super().__init__(window)
        self.w = window
        self.s = window.session
        self.view = window.latent_view
        self._worker = LatestWins(self)
        self._gen = 0  # counts dropped codes: results computed on earlier codes are ignored
        self._sel_gen = 0  # counts cleared selections: selections asked for before a clear are ignored
        #: The selected examples (None: none), over the session's codes.
        self.mask: np.ndarray | None = None
        self.summary: S.SelectionSummary | None = None
        #: The neighbour index and the codes it was built on.
        self._index: tuple[np.ndarray, S.LatentIndex] | None = None
        self.neighbours: tuple[int, np.ndarray, np.ndarray] | None = None  # (example, indices, distances)
        #: The nearest-stored-codes placer (for maps without a formula) and the codes and map it was built on.
        self._placer: tuple[np.ndarray, np.ndarray, X.CodePlacer] | None = None
        #: The last encoded drawing's result (as ``search_result``).
        self.draw_result: dict | None = None
        #: The last searched image's result: path, input, code, reconstruction, map place, ellipses, neighbours.
        self.search_result: dict | None = None
        self._lasso: list[tuple[float, float]] = []
        self._lasso_mode = "replace"
        self._lasso_box = False
        self._lasso_last = QtCore.QPointF()
        self._build_layers()
        self._build_docks()
        self._build_actions()
        self._wire()
        self._sync_enabled()

    # ------------------------------------------------------------------ build
    def _build_layers(self) -> None:
        vb = self.view.view_box()
        pen = QtGui.QPen(SELECTION_EDGE, 1.5, QtCore.Qt.PenStyle.DashLine)
        pen.setCosmetic(True)
        self.lasso_item = QtWidgets.QGraphicsPathItem()
        self.lasso_item.setPen(pen)
        self.lasso_item.setBrush(QtGui.QColor(128, 128, 128, 40))
        self.lasso_item.setZValue(40)
        self.lasso_item.hide()
        self.query_ellipses = pg.PlotCurveItem(pen=pg.mkPen(QUERY_COLOUR, width=2), connect="finite")
        self.query_ellipses.setZValue(26)
        self.query_marker = pg.ScatterPlotItem(size=18, symbol="star", brush=pg.mkBrush(QUERY_COLOUR),
                                               pen=pg.mkPen("w", width=1))
        self.query_marker.setZValue(27)
        for it in (self.lasso_item, self.query_ellipses, self.query_marker):
            vb.addItem(it, ignoreBounds=True)

    def _build_docks(self) -> None:
        d = self.selection_dock = _Dock("Selection", "selectionPanel", self.w)
        self.w.addDockWidget(QtCore.Qt.RightDockWidgetArea, d)
        d.info.setObjectName("selectionInfo")
        d.info.setText("Press L (Explore ▸ Lasso select) and drag on the map. Ctrl: box, Shift: add, Alt: subtract.")
        self.histogram = LabelHistogram()
        d.layout_.addWidget(self.histogram)
        self.mean_canvas = DecodeCanvas()
        self.mean_canvas.setObjectName("selectionMeanCanvas")
        self.mean_canvas.setMinimumHeight(80)
        self.mean_canvas.set_hint("Decode of the selection's mean code")
        d.layout_.addWidget(self.mean_canvas, 1)
        self.selection_grid = ImageGrid()
        self.selection_grid.setObjectName("selectionGrid")
        d.add_content(self.selection_grid, 3)
        self.export_csv_button = d.add_export("selectionExportCsvButton", "Export CSV…", self._export_csv)
        self.export_png_button = d.add_export("selectionExportPngButton", "Export PNG…", self._export_png)
        self.clear_button = d.add_export("selectionClearButton", "Clear", self.clear_selection)
        d.finish()
        d.hide()

        n = self.neighbours_dock = _Dock("Neighbours", "neighboursPanel", self.w)
        self.w.addDockWidget(QtCore.Qt.RightDockWidgetArea, n)
        self.w.tabifyDockWidget(d, n)
        n.info.setObjectName("neighboursInfo")
        n.info.setText("Click an example on the map: its nearest examples in latent space appear here.")
        n.controls.addWidget(QtWidgets.QLabel("k"))
        self.k_spin = QtWidgets.QSpinBox()
        self.k_spin.setObjectName("neighboursKSpin")
        self.k_spin.setRange(1, 100)
        self.k_spin.setValue(DEFAULT_K)
        self.k_spin.valueChanged.connect(self._on_k)
        n.controls.addWidget(self.k_spin)
        n.controls.addStretch(1)
        self.neighbour_grid = ImageGrid()
        self.neighbour_grid.setObjectName("neighboursGrid")
        n.add_content(self.neighbour_grid)
        n.finish()
        n.hide()
        n.visibilityChanged.connect(self._on_neighbours_visibility)

        q = self.search_dock = _Dock("Search by image", "searchPanel", self.w)
        self.w.addDockWidget(QtCore.Qt.RightDockWidgetArea, q)
        self.w.tabifyDockWidget(d, q)
        q.info.setObjectName("searchInfo")
        q.info.setText("Open an image file, or drop one here: it is encoded and shown on the map with its "
                       "reconstruction and nearest examples.")
        self.search_open_button = QtWidgets.QPushButton("Open image…")
        self.search_open_button.setObjectName("searchOpenButton")
        self.search_open_button.clicked.connect(self._open_search_image)
        q.controls.addWidget(self.search_open_button)
        q.controls.addStretch(1)
        self.search_pair = ImageGrid()
        self.search_pair.setObjectName("searchPairGrid")
        q.add_content(self.search_pair, 1)
        self.search_grid = ImageGrid()
        self.search_grid.setObjectName("searchNeighboursGrid")
        q.add_content(self.search_grid, 1)
        q.finish()
        q.hide()
        q.widget().setAcceptDrops(True)
        q.widget().installEventFilter(self)
        q.visibilityChanged.connect(self._on_search_visibility)

        dr = self.draw_dock = _Dock("Draw your own input", "drawPanel", self.w)
        self.w.addDockWidget(QtCore.Qt.RightDockWidgetArea, dr)
        self.w.tabifyDockWidget(d, dr)
        dr.info.setObjectName("drawInfo")
        dr.info.setText("Draw with the mouse: the drawing is encoded as you draw, and its q(z|x) moves on the map.")
        clear_drawing = QtWidgets.QPushButton("Clear drawing")
        clear_drawing.setObjectName("drawClearButton")
        dr.controls.addWidget(clear_drawing)
        dr.controls.addStretch(1)
        row = QtWidgets.QWidget()
        lay = QtWidgets.QHBoxLayout(row)
        lay.setContentsMargins(0, 0, 0, 0)
        self.draw_canvas = DrawCanvas()
        lay.addWidget(self.draw_canvas, 1)
        self.draw_recon = DecodeCanvas()
        self.draw_recon.setObjectName("drawReconstructionCanvas")
        self.draw_recon.set_hint("The reconstruction of the drawing")
        lay.addWidget(self.draw_recon, 1)
        dr.add_content(row)
        dr.finish()
        dr.hide()
        clear_drawing.clicked.connect(self.draw_canvas.clear)
        self.draw_canvas.changed.connect(self._on_drawing_changed)
        self._draw_timer = QtCore.QTimer(self)
        self._draw_timer.setSingleShot(True)
        self._draw_timer.setInterval(DRAW_INTERVAL_MS)
        self._draw_timer.timeout.connect(self.encode_drawing)
        dr.visibilityChanged.connect(self._on_draw_visibility)
        self._sync_buttons()

    def _build_actions(self) -> None:
        menu = self.w.tools_menu
        menu.addSeparator()
        a = self.lasso_action = QtGui.QAction("&Lasso select", self.w)
        a.setObjectName("lassoAction")
        a.setCheckable(True)
        a.setShortcut(QtGui.QKeySequence("L"))
        a.setStatusTip("Drag on the map to select the examples inside; Ctrl: box, Shift: add, Alt: subtract")
        a.toggled.connect(self._on_lasso_toggled)
        menu.addAction(a)
        b = self.selection_panel_action = QtGui.QAction("Selection &panel", self.w)
        b.setObjectName("selectionPanelAction")
        b.triggered.connect(self.show_selection)
        menu.addAction(b)
        c = self.neighbours_action = QtGui.QAction("&Nearest neighbours", self.w)
        c.setObjectName("neighboursAction")
        c.setStatusTip("The nearest examples of the clicked example in latent space")
        c.triggered.connect(self.show_neighbours)
        menu.addAction(c)
        e = self.search_action = QtGui.QAction("Search by &image…", self.w)
        e.setObjectName("searchImageAction")
        e.setStatusTip("Encode an image file and show it on the map with its nearest examples")
        e.triggered.connect(self.show_search)
        menu.addAction(e)
        f = self.draw_action = QtGui.QAction("&Draw your own input", self.w)
        f.setObjectName("drawAction")
        f.setStatusTip("Draw an input with the mouse and watch its code move on the map (grey datasets)")
        f.triggered.connect(self.show_draw)
        menu.addAction(f)

    def _wire(self) -> None:
        s = self.s
        s.mapReady.connect(self._on_map)
        s.mapCleared.connect(self._on_map_cleared)
        s.modelForgotten.connect(self._on_model_forgotten)
        s.datasetLoaded.connect(self._on_dataset)
        s.exampleSelected.connect(self._on_example)
        s.selectionCleared.connect(self._on_example_cleared)
        s.stateChanged.connect(self._on_state)
        self._worker.done.connect(self._on_done)
        self._worker.failed.connect(self._on_failed)
        self.view.viewport().installEventFilter(self)

    def close(self) -> bool:
        """Stop the worker (the window closes); True when it ended in time."""
        return self._worker.close()

    # ---------------------------------------------------------------- helpers
    def _codes_ready(self) -> bool:
        s = self.s
        return (s.xy is not None and s.latents is not None and s.dataset is not None
                and len(s.xy) == len(s.latents) == s.dataset.n)

    def _sync_enabled(self) -> None:
        ready = self._codes_ready()
        for act in (self.lasso_action, self.neighbours_action):
            act.setEnabled(ready)
        can_search = ready and self.s.encoder is not None and self.s.decoder is not None
        self.search_action.setEnabled(can_search)
        self.search_open_button.setEnabled(can_search)
        grey = can_search and self.s.dataset.images.shape[1] == 1
        self.draw_action.setEnabled(grey)
        self.draw_action.setToolTip("Draw an input with the mouse and watch its code move on the map" if grey else
                                    "Draw your own input (needs a trained model on a grey dataset)")
        if not ready and self.lasso_action.isChecked():
            self.lasso_action.setChecked(False)

    def _sync_buttons(self) -> None:
        has = self.summary is not None and self.summary.count > 0
        for b in (self.export_csv_button, self.export_png_button, self.clear_button):
            b.setEnabled(has)

    def _submit(self, kind: str, job: Callable[[], Any]) -> None:
        gen = (self._gen, self._sel_gen)

        def run() -> tuple[tuple[int, int], Any]:
            return gen, job()

        self._worker.submit(kind, run)

    @Slot(str, object)
    def _on_done(self, kind: str, result: tuple[tuple[int, int], Any]) -> None:
        (gen, sel_gen), r = result
        if gen != self._gen or (kind == "select" and sel_gen != self._sel_gen):
            return  # asked for codes that are gone, or a selection cleared since
        if kind == "select":
            self._show_selection(r)
        elif kind == "neighbours":
            self._show_neighbours(r)
        elif kind == "search":
            self._show_search(r)
        elif kind == "draw":
            self._show_drawing(r)

    @Slot(str, str)
    def _on_failed(self, kind: str, text: str) -> None:
        what = {"select": "the selection", "neighbours": "the nearest neighbours"}.get(kind, "the searched image")
        if kind == "search":
            self.search_dock.info.setText(f"Could not search by this image: {text}")
        self.w.show_message("error", f"Could not compute {what}: {text}")

    # ------------------------------------------------------------------ lasso
    @Slot(bool)
    def _on_lasso_toggled(self, on: bool) -> None:
        vp = self.view.viewport()
        if on:
            vp.setCursor(QtCore.Qt.CursorShape.CrossCursor)
            self.show_selection()
        else:
            vp.unsetCursor()
            self._lasso = []
            self.lasso_item.hide()

    def eventFilter(self, obj: QtCore.QObject, ev: QtCore.QEvent) -> bool:
        """In lasso mode, left drags on the map draw the lasso (the map neither pans nor picks);
        an image file dropped on the search panel is searched."""
        Ev = QtCore.QEvent.Type
        t = ev.type()
        if obj is self.search_dock.widget():
            if t in (Ev.DragEnter, Ev.DragMove) and self._dropped_path(ev) is not None:
                ev.acceptProposedAction()
                return True
            if t == Ev.Drop:
                path = self._dropped_path(ev)
                if path is not None:
                    ev.acceptProposedAction()
                    self.search_image(path)
                    return True
            return False
        if not self.lasso_action.isChecked() or obj is not self.view.viewport():
            return False
        left = QtCore.Qt.MouseButton.LeftButton
        if t == Ev.MouseButtonPress and ev.button() == left:
            mods = ev.modifiers()
            Mod = QtCore.Qt.KeyboardModifier
            self._lasso_mode = ("subtract" if mods & Mod.AltModifier else
                                "add" if mods & Mod.ShiftModifier else "replace")
            self._lasso_box = bool(mods & Mod.ControlModifier)
            self._lasso_last = QtCore.QPointF(ev.position())
            self._lasso = [self.view.map_to_data(ev.position())]
            self._draw_lasso()
            return True
        if t == Ev.MouseMove and self._lasso:
            pos = ev.position()
            d = pos - self._lasso_last
            if math.hypot(d.x(), d.y()) >= LASSO_STEP_PX:
                self._lasso_last = QtCore.QPointF(pos)
                pt = self.view.map_to_data(pos)
                if self._lasso_box:
                    self._lasso = [self._lasso[0], pt]
                else:
                    self._lasso.append(pt)
                self._draw_lasso()
            return True
        if t == Ev.MouseButtonRelease and ev.button() == left and self._lasso:
            pt = self.view.map_to_data(ev.position())
            if self._lasso_box:
                self._lasso = [self._lasso[0], pt]
            elif self._lasso[-1] != pt:
                self._lasso.append(pt)
            shape, self._lasso = self._lasso, []
            self.lasso_item.hide()
            self.select_shape(shape, self._lasso_box, self._lasso_mode)
            return True
        return t in (Ev.MouseButtonDblClick, Ev.MouseButtonPress, Ev.MouseButtonRelease) and ev.button() == left

    def _lasso_polygon(self) -> list[tuple[float, float]]:
        if self._lasso_box and len(self._lasso) == 2:
            (ax, ay), (bx, by) = self._lasso
            return [(ax, ay), (bx, ay), (bx, by), (ax, by)]
        return list(self._lasso)

    def _draw_lasso(self) -> None:
        pts = self._lasso_polygon()
        path = QtGui.QPainterPath()
        if pts:
            path.moveTo(*pts[0])
            for p in pts[1:]:
                path.lineTo(*p)
            path.closeSubpath()
        self.lasso_item.setPath(path)
        self.lasso_item.show()

    # -------------------------------------------------------------- selection
    def select_shape(self, shape: list[tuple[float, float]], box: bool, mode: str) -> None:
        """Select the examples in a lasso polygon (or a box from two corners), joined to the selection by ``mode``."""
        if not self._codes_ready():
            return
        xy = self.s.xy
        old = self.mask
        poly = np.asarray(shape, dtype=np.float64)

        def new_mask() -> np.ndarray:
            if box:
                inside = S.points_in_box(xy, poly[0], poly[-1])
            else:
                inside = S.points_in_polygon(xy, poly)
            return S.combine(old, inside, mode)

        self._summarise(new_mask)

    def set_selection(self, mask: np.ndarray | None) -> None:
        """Select exactly the examples where ``mask`` is True (None or all False: clear)."""
        if mask is None or not np.any(mask):
            self.clear_selection()
            return
        m = np.asarray(mask, dtype=bool).copy()
        self._summarise(lambda: m)

    def _summarise(self, make_mask: Callable[[], np.ndarray]) -> None:
        """Compute the mask and everything the panel shows of it, on the worker."""
        s = self.s
        ds, latents, labels, decoder = s.dataset, s.latents, s.labels, s.decoder
        names = s.label_names
        n_classes = len(names) if names else (int(labels.max()) + 1 if labels is not None and len(labels) else 0)

        def job() -> dict:
            mask = make_mask()
            summary = S.selection_summary(mask, labels, n_classes if labels is not None else None, latents,
                                          max_examples=GRID_EXAMPLES)
            r: dict = {"mask": mask, "summary": summary, "grid": None, "mean": None}
            if summary.count:
                imgs = images_for_display(np.asarray(ds.images[summary.indices]))
                ncols = int(math.ceil(math.sqrt(len(imgs))))
                r["grid"] = (X.compose_grid(imgs, ncols, pad=GRID_PAD), -(-len(imgs) // ncols), ncols)
                if decoder is not None and summary.mean_code is not None and summary.mean_code.shape[0] == decoder.latent_dim:
                    r["mean"] = decoded_for_display(decoder.decode(summary.mean_code[None]))[0]
            return r

        self._submit("select", job)

    def _show_selection(self, r: dict) -> None:
        summary: S.SelectionSummary = r["summary"]
        if summary.count == 0:
            self.clear_selection()
            return
        self.mask, self.summary = r["mask"], summary
        if len(self.mask) == self.view.point_count():
            self.view.set_selection_mask(self.mask)
        self.histogram.set_counts(summary.histogram, self.s.label_names)
        n = self.mask.shape[0]
        shown = len(summary.indices)
        more = f" (the first {shown} shown)" if shown < summary.count else ""
        self.selection_dock.info.setText(f"{summary.count:,} of {n:,} examples selected{more}.")
        if r["grid"] is not None:
            self.selection_grid.set_grid(*r["grid"], pad=GRID_PAD)
        if r["mean"] is not None:
            self.mean_canvas.set_image(r["mean"])
            self.mean_canvas.set_caption("Decode of the mean code")
        else:
            self.mean_canvas.clear()
        self._sync_buttons()

    @Slot()
    def clear_selection(self) -> None:
        """Select nothing."""
        self._sel_gen += 1
        self._worker.discard("select")
        self.mask = None
        self.summary = None
        self.view.set_selection_mask(None)
        self.histogram.set_counts(None, None)
        self.selection_grid.clear()
        self.mean_canvas.clear()
        self.selection_dock.info.setText("Nothing selected. Press L and drag on the map; Ctrl: box, Shift: add, Alt: subtract.")
        self._sync_buttons()

    @Slot()
    def show_selection(self) -> None:
        self.selection_dock.show()
        self.selection_dock.raise_()

    # -------------------------------------------------------------- neighbours
    @Slot()
    def show_neighbours(self) -> None:
        self.neighbours_dock.show()
        self.neighbours_dock.raise_()
        if self.s.selected is None:
            self.w.show_message("warning", "Click an example on the map first: the neighbours are those of that example.")
        self.update_neighbours()

    def _index_maker(self) -> Callable[[], S.LatentIndex]:
        """A function giving the neighbour index of the current codes (built once, in the worker)."""
        latents = self.s.latents

        def index() -> S.LatentIndex:
            cached = self._index
            if cached is not None and cached[0] is latents:
                return cached[1]
            made = S.LatentIndex(latents).build()
            self._index = (latents, made)
            return made

        return index

    def update_neighbours(self) -> None:
        """Find the k nearest examples of the selected example in latent space (on the worker)."""
        i = self.s.selected
        if i is None or not self._codes_ready() or not (0 <= i < len(self.s.latents)):
            self._drop_neighbours()
            return
        k, ds, index = int(self.k_spin.value()), self.s.dataset, self._index_maker()

        def job() -> dict:
            idx, dist = index().query(int(i), k)
            imgs = images_for_display(np.asarray(ds.images[idx])) if len(idx) else None
            return {"example": int(i), "indices": idx, "distances": dist,
                    "grid": X.compose_grid(imgs, len(idx), pad=GRID_PAD) if imgs is not None else None}

        self._submit("neighbours", job)

    def _show_neighbours(self, r: dict) -> None:
        if r["example"] != self.s.selected or not self._codes_ready():
            return
        idx, dist = r["indices"], r["distances"]
        self.neighbours = (r["example"], idx, dist)
        if self.view.point_count() == len(self.s.xy):
            self.view.set_marked(idx)
        if r["grid"] is not None:
            self.neighbour_grid.set_grid(r["grid"], 1, len(idx), pad=GRID_PAD,
                                         col_labels=[f"#{j}\n{d:.3g}" for j, d in zip(idx, dist)])
        self.neighbours_dock.info.setText(
            f"The {len(idx)} nearest examples of #{r['example']} in latent space (Euclidean distance between mean codes).")

    def _drop_neighbours(self) -> None:
        self._worker.discard("neighbours")
        self.neighbours = None
        self.view.set_marked(None)
        self.neighbour_grid.clear()
        self.neighbours_dock.info.setText("Click an example on the map: its nearest examples in latent space appear here.")

    @Slot(int)
    def _on_k(self, _k: int) -> None:
        if self.neighbours_dock.is_open:
            self.update_neighbours()

    @Slot(bool)
    def _on_neighbours_visibility(self, _visible: bool) -> None:
        if not self.neighbours_dock.is_open:
            self.view.set_marked(None)
        elif self.neighbours is not None and self._codes_ready() and self.view.point_count() == len(self.s.xy):
            self.view.set_marked(self.neighbours[1])

    # ------------------------------------------------------- session → tools
    @Slot(str)
    def _on_state(self, _state: str) -> None:
        self._sync_enabled()

    @Slot(object)
    def _on_map(self, _m: Any) -> None:
        self._sync_enabled()
        if self.mask is not None:
            if not self._codes_ready() or len(self.mask) != len(self.s.xy):
                self.clear_selection()
            else:
                self.set_selection(self.mask)  # new codes: new positions, mean and decode
        if self.neighbours_dock.is_open and self.s.selected is not None:
            self.update_neighbours()
        r = self.search_result
        if r is not None and self._codes_ready() and self.s.encoder is not None and self.s.decoder is not None:
            x = r["x"]
            self._submit("search", self._query_job(lambda: x, r["name"]))  # the new model's code and place of it
        if self.draw_result is not None and self.draw_dock.is_open:
            self.encode_drawing()

    @Slot(str)
    def _on_map_cleared(self, _text: str) -> None:
        self._forget()

    @Slot()
    def _on_model_forgotten(self) -> None:
        self._forget()

    @Slot(object)
    def _on_dataset(self, _ds: Any) -> None:
        self._forget()

    def _forget(self) -> None:
        """The codes are gone: so are the selection, the neighbours and the index."""
        self._gen += 1
        self._worker.discard()
        self._index = None
        self._placer = None
        self.clear_selection()
        self._drop_neighbours()
        self._drop_search()
        self._drop_drawing()
        self._sync_enabled()

    @Slot(int, str, object, object)
    def _on_example(self, index: int, *_args: Any) -> None:
        if self.neighbours_dock.is_open and (self.neighbours is None or self.neighbours[0] != index):
            self.update_neighbours()

    @Slot()
    def _on_example_cleared(self) -> None:
        self._drop_neighbours()

    # ---------------------------------------------------------------- search
    @Slot()
    def show_search(self) -> None:
        self.search_dock.show()
        self.search_dock.raise_()
        self._open_search_image()

    @staticmethod
    def _dropped_path(ev: QtCore.QEvent) -> str | None:
        """The local image file a drag carries, or None."""
        md = ev.mimeData()
        if md is None or not md.hasUrls():
            return None
        for url in md.urls():
            path = url.toLocalFile()
            if path and path.lower().endswith(IMAGE_EXTENSIONS):
                return path
        return None

    @Slot()
    def _open_search_image(self) -> None:
        if not self.search_open_button.isEnabled():
            self.w.show_message("warning", "Train a model (or open a checkpoint) first: the search encodes with it.")
            return
        pattern = " ".join("*" + e for e in IMAGE_EXTENSIONS)
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self.w, "Search by image", self.w.last_directory(),
                                                        f"Images ({pattern})")
        if path:
            self.w.remember_directory(os.path.dirname(path))
            self.search_image(path)

    def _placer_maker(self) -> Callable[[], X.CodePlacer]:
        """A function giving the nearest-stored-codes placer of the current map (built once, in the worker)."""
        latents, xy = self.s.latents, self.s.xy

        def placer() -> X.CodePlacer:
            cached = self._placer
            if cached is not None and cached[0] is latents and cached[1] is xy:
                return cached[2]
            made = X.CodePlacer(latents, xy)
            self._placer = (latents, xy, made)
            return made

        return placer

    def search_image(self, path: str) -> None:
        """Encode the image file at ``path`` like an example of the dataset and show it (on the worker)."""
        s = self.s
        if not self._codes_ready() or s.encoder is None or s.decoder is None:
            self.w.show_message("warning", "Train a model (or open a checkpoint) first: the search encodes with it.")
            return
        ds = s.dataset
        shape, dtype = tuple(int(v) for v in ds.images.shape[1:]), ds.images.dtype
        self.search_dock.show()
        self.search_dock.raise_()
        self.search_dock.info.setText(f"Encoding {os.path.basename(path)}…")
        self._submit("search", self._query_job(lambda: load_image_like(path, shape, dtype), path))

    def _query_job(self, make_input: Callable[[], np.ndarray], name: str) -> Callable[[], dict]:
        """A worker job: encode the input, decode its mean, place it on the map and find its neighbours."""
        s = self.s
        encoder, decoder, proj = s.encoder, s.decoder, s.projection
        k, ds, index, placer = int(self.k_spin.value()), s.dataset, self._index_maker(), self._placer_maker()

        def job() -> dict:
            x = make_input()
            mu, lv = encoder.encode(x[None])
            mu, lv = np.asarray(mu, dtype=np.float32), np.asarray(lv, dtype=np.float32)
            recon = decoded_for_display(decoder.decode(mu))[0]
            try:
                proj.transform(mu)
                use = None
            except (NotImplementedError, ValueError):
                use = placer()
            centre = _place(mu, proj, use)[0]
            try:
                ell = X.posterior_ellipse(mu[0].astype(np.float64), lv[0].astype(np.float64), proj, placer=use, seed=0)
            except ValueError:
                ell = None
            idx, dist = index().query(mu[0], k)
            shown = images_for_display(x[None])[0]
            imgs = images_for_display(np.asarray(ds.images[idx])) if len(idx) else None
            return {"name": name, "x": x, "input": shown, "mu": mu[0], "logvar": lv[0], "recon": recon, "xy": centre,
                    "ellipses": ell, "indices": idx, "distances": dist,
                    "pair": X.compose_grid([shown, recon], 2, pad=GRID_PAD),
                    "grid": X.compose_grid(imgs, len(idx), pad=GRID_PAD) if imgs is not None else None}

        return job

    def _show_search(self, r: dict) -> None:
        if not self._codes_ready():
            return
        self.search_result = r
        self.search_pair.set_grid(r["pair"], 1, 2, pad=GRID_PAD, col_labels=["input", "reconstruction"])
        if r["grid"] is not None:
            self.search_grid.set_grid(r["grid"], 1, len(r["indices"]), pad=GRID_PAD,
                                      col_labels=[f"#{j}\n{d:.3g}" for j, d in zip(r["indices"], r["distances"])])
        self._draw_query(r)
        self.search_dock.info.setText(
            f"{os.path.basename(r['name'])}: its code μ = {code_text(r['mu'])}; on the map a star at μ and the 1σ and "
            f"2σ ellipses of q(z|x); below, its {len(r['indices'])} nearest examples in latent space.")

    def _draw_query(self, r: dict | None) -> None:
        """The posterior of a searched or drawn input on the map (None: remove it)."""
        if r is None:
            self.query_marker.setData([], [])
            self.query_ellipses.setData([], [])
            return
        x, y = (float(v) for v in r["xy"])
        self.query_marker.setData([x], [y])
        pts: list[np.ndarray] = []
        for centre, width, height, angle in (r["ellipses"] or []):
            t = np.linspace(0, 2 * np.pi, 65)
            a = np.deg2rad(angle)
            ex, ey = 0.5 * width * np.cos(t), 0.5 * height * np.sin(t)
            pts.append(np.c_[centre[0] + ex * np.cos(a) - ey * np.sin(a), centre[1] + ex * np.sin(a) + ey * np.cos(a)])
            pts.append(np.full((1, 2), np.nan))
        if pts:
            xy = np.vstack(pts)
            self.query_ellipses.setData(xy[:, 0], xy[:, 1])
        else:
            self.query_ellipses.setData([], [])

    def _drop_search(self) -> None:
        self._worker.discard("search")
        self.search_result = None
        self._sync_query()
        self.search_pair.clear()
        self.search_grid.clear()

    @Slot(bool)
    def _on_search_visibility(self, _visible: bool) -> None:
        self._sync_query()

    def _sync_query(self) -> None:
        """On the map: the drawing's posterior while its panel is open, else the searched image's, else none."""
        if self.draw_dock.is_open and self.draw_result is not None:
            self._draw_query(self.draw_result)
        elif self.search_dock.is_open and self.search_result is not None:
            self._draw_query(self.search_result)
        else:
            self._draw_query(None)

    # ------------------------------------------------------------------ draw
    @Slot()
    def show_draw(self) -> None:
        self.draw_dock.show()
        self.draw_dock.raise_()

    @Slot()
    def _on_drawing_changed(self) -> None:
        if self.draw_canvas.is_blank():
            self._drop_drawing()
        elif not self._draw_timer.isActive():
            self._draw_timer.start()  # not restarted by each move: a steady rate while the stroke grows

    @Slot()
    def encode_drawing(self) -> None:
        """Encode the drawing, resized like the dataset's images (on the worker)."""
        s = self.s
        if (self.draw_canvas.is_blank() or not self.draw_action.isEnabled() or not self._codes_ready()):
            return
        _c, h, w = (int(v) for v in s.dataset.images.shape[1:])
        grey = self.draw_canvas.scaled(w, h)[None]
        x = grey if s.dataset.images.dtype == np.uint8 else grey.astype(np.float32) / np.float32(255.0)
        self._submit("draw", self._query_job(lambda: x, "drawing"))

    def _show_drawing(self, r: dict) -> None:
        if not self._codes_ready() or self.draw_canvas.is_blank():
            return
        self.draw_result = r
        self.draw_recon.set_image(r["recon"])
        self.draw_recon.set_caption("Reconstruction")
        if self.draw_dock.is_open:
            self._draw_query(r)
        self.draw_dock.info.setText(f"The drawing's code μ = {code_text(r['mu'])}; on the map a star at μ and the "
                                    "1σ and 2σ ellipses of q(z|x).")

    def _drop_drawing(self) -> None:
        self._worker.discard("draw")
        self._draw_timer.stop()
        self.draw_result = None
        self._sync_query()
        self.draw_recon.clear()

    @Slot(bool)
    def _on_draw_visibility(self, _visible: bool) -> None:
        self._sync_query()

    # ---------------------------------------------------------------- exports
    @Slot()
    def _export_csv(self) -> None:
        if self.mask is None or not self._codes_ready():
            return
        path = self.w.explore_tools._ask_path("Export selection", "selection.csv", "CSV files (*.csv)", ".csv")
        if not path:
            return
        s, idx = self.s, np.flatnonzero(self.mask)
        self.w.explore_tools._write("the selection", path, lambda p: write_selection_csv(
            p, idx, s.latents, s.latent_logvar, s.labels, s.label_names))

    @Slot()
    def _export_png(self) -> None:
        arr = self.selection_grid.to_array()
        if arr is None:
            return
        path = self.w.explore_tools._ask_path("Export selection grid", "selection.png", "PNG images (*.png)", ".png")
        if path:
            self.w.explore_tools._write("the selection grid", path, lambda p: X.save_png(arr, p, scale=EXPORT_SCALE))


def write_selection_csv(path: str, indices: np.ndarray, latents: np.ndarray, logvar: np.ndarray | None,
                        labels: np.ndarray | None, label_names: list[str] | None) -> int:
    """Write the selected examples' rows of the latent CSV (``vae_core.export``'s columns); returns the rows written.

    The columns are those of the whole dataset's latent CSV (index, label,
    mu_1.., sigma_1..), and ``index`` is each example's index in the dataset.
    The text goes to ``path + ".part"``, which then replaces ``path``.
    """
    idx = np.asarray(indices, dtype=np.int64)
    pieces = iter_latents_csv(latents[idx], None if logvar is None else logvar[idx],
                              None if labels is None else labels[idx], label_names)
    header = next(pieces)
    tmp = path + ".part"
    rows = 0
    try:
        with open(tmp, "w", encoding="utf-8", newline="") as f:
            f.write(header)
            for piece in pieces:
                for line in piece.splitlines(keepends=True):
                    f.write(f"{int(idx[rows])},{line.split(',', 1)[1]}")
                    rows += 1
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return rows
