"""Widgets that paint small images (decoded samples, reconstructions, grids) large.

Images arrive as numpy arrays, (H, W) grey or (H, W, 3) RGB, float in [0, 1].
They are converted once to a uint8 ``QImage`` and painted nearest-neighbour
scaled into the largest rectangle that keeps their aspect ratio, so a 28x28
digit stays crisp at any size. No pyqtgraph here: one ``drawImage`` per paint.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

__all__ = [
    "DecodeCanvas",
    "ImageGrid",
    "ImagePair",
    "array_to_qimage",
    "as_image_array",
    "paint_image",
]

EMPTY_DECODE_HINT = "Click or drag on the latent map to decode a point"
HEADINGS = ("Original", "Reconstruction")
#: Shorter headings, tried in turn where the long ones do not fit.
SHORT_HEADINGS = (("Original", "Recon."), ("Orig.", "Recon."), ("x", "x̂"))
#: From this zoom on an image is drawn at a whole number of screen pixels per pixel (at most a fifth unused).
WHOLE_ZOOM_FROM = 5.0
#: The caption under a decoded image wraps onto at most this many lines.
CAPTION_LINES = 3
#: Row labels of a grid shrink to at most this size (points) before some are left out.
MIN_LABEL_POINTS = 6.5


def as_image_array(arr) -> np.ndarray:
    """Return ``arr`` as a float32 image of shape (H, W) or (H, W, 3) in [0, 1].

    Accepts (H, W), (H, W, 1), (H, W, 3) and (H, W, 4) (alpha dropped); uint8
    input is rescaled from 0..255. NaN becomes 0, values outside [0, 1] are
    clipped.
    """
    a = np.asarray(arr)
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    else:
        a = a.astype(np.float32, copy=True)
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    elif a.ndim == 3 and a.shape[2] == 4:
        a = a[:, :, :3]
    if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] != 3):
        raise ValueError(f"expected an image of shape (H, W) or (H, W, 3), got {a.shape}")
    np.nan_to_num(a, copy=False, nan=0.0, posinf=1.0, neginf=0.0)
    np.clip(a, 0.0, 1.0, out=a)
    return a


def array_to_qimage(arr) -> QtGui.QImage:
    """Convert an image array (see :func:`as_image_array`) to a QImage that owns its pixels."""
    a = as_image_array(arr)
    u8 = np.ascontiguousarray((a * 255.0 + 0.5).astype(np.uint8))
    h, w = u8.shape[:2]
    if u8.ndim == 2:
        img = QtGui.QImage(u8.data, w, h, u8.strides[0], QtGui.QImage.Format.Format_Grayscale8)
    else:
        img = QtGui.QImage(u8.data, w, h, u8.strides[0], QtGui.QImage.Format.Format_RGB888)
    # The QImage above borrows the numpy buffer; copy() detaches it.
    return img.copy()


def fit_rect(bounds: QtCore.QRectF, width: int, height: int) -> QtCore.QRectF:
    """Largest rectangle with aspect ``width:height`` centred in ``bounds``.

    From a zoom of WHOLE_ZOOM_FROM on, the rectangle snaps to a whole zoom,
    so every source pixel becomes the same number of screen pixels; below
    it the image fills the space (a small image snapped to 1x or 2x would
    leave most of a large dock empty).
    """
    if width <= 0 or height <= 0 or bounds.width() <= 0 or bounds.height() <= 0:
        return QtCore.QRectF()
    scale = min(bounds.width() / width, bounds.height() / height)
    if scale >= WHOLE_ZOOM_FROM:
        scale = float(int(scale))
    w, h = width * scale, height * scale
    x = bounds.x() + (bounds.width() - w) / 2.0
    y = bounds.y() + (bounds.height() - h) / 2.0
    return QtCore.QRectF(round(x), round(y), w, h)


def paint_image(painter: QtGui.QPainter, bounds: QtCore.QRectF, image: QtGui.QImage,
                frame: QtGui.QColor | None = None) -> QtCore.QRectF:
    """Paint ``image`` nearest-neighbour scaled into the largest aspect-correct rect in ``bounds``.

    Returns the rectangle the image occupies. A one-pixel ``frame`` is drawn
    around it when given, so a black image stays visible on a dark background.
    """
    target = fit_rect(bounds, image.width(), image.height())
    if target.isEmpty():
        return target
    painter.save()
    painter.setRenderHint(QtGui.QPainter.RenderHint.SmoothPixmapTransform, False)
    painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing, False)
    painter.drawImage(target, image)
    if frame is not None:
        painter.setPen(QtGui.QPen(frame, 1))
        painter.setBrush(QtCore.Qt.BrushStyle.NoBrush)
        painter.drawRect(target.adjusted(-1, -1, 0, 0))
    painter.restore()
    return target


def _frame_colour(palette: QtGui.QPalette) -> QtGui.QColor:
    return palette.color(QtGui.QPalette.ColorRole.Mid)


def _hint_colour(palette: QtGui.QPalette) -> QtGui.QColor:
    return palette.color(QtGui.QPalette.ColorRole.PlaceholderText)


def _text_colour(palette: QtGui.QPalette) -> QtGui.QColor:
    return palette.color(QtGui.QPalette.ColorRole.WindowText)


def _paint_hint(painter: QtGui.QPainter, rect: QtCore.QRectF, text: str, palette: QtGui.QPalette):
    painter.save()
    painter.setPen(_hint_colour(palette))
    flags = QtCore.Qt.AlignmentFlag.AlignCenter | QtCore.Qt.TextFlag.TextWordWrap
    painter.drawText(rect.adjusted(12, 12, -12, -12), int(flags), text)
    painter.restore()


def label_step(sizes: Sequence[float], cell: float) -> int:
    """Draw every k-th of labels of these ``sizes`` (pixels) over cells ``cell`` pixels apart so none overlap: k."""
    biggest = max(sizes, default=0.0)
    if cell <= 0 or biggest <= cell:
        return 1
    return int(np.ceil(biggest / cell))


class DecodeCanvas(QtWidgets.QWidget):
    """One decoded image, painted as large as fits, with a caption line under it."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("decodeCanvas")
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding,
                           QtWidgets.QSizePolicy.Policy.Expanding)
        self._array: np.ndarray | None = None
        self._qimage: QtGui.QImage | None = None
        self._caption = ""
        self._hint = EMPTY_DECODE_HINT
        self._version = 0

    # --- public API -----------------------------------------------------------------

    @QtCore.Slot(object)
    def set_image(self, arr) -> None:
        """Show ``arr``: (H, W) or (H, W, 3) float in [0, 1] (clipped)."""
        a = as_image_array(arr)
        self._array = a
        self._qimage = array_to_qimage(a)
        self._version += 1
        self.update()

    def image(self) -> np.ndarray | None:
        """The last image set (clipped float32 copy), or None."""
        return self._array

    def image_version(self) -> int:
        """Increments on every :meth:`set_image`; lets callers see that a new image arrived."""
        return self._version

    @QtCore.Slot(str)
    def set_caption(self, text: str) -> None:
        self._caption = text or ""
        self.update()

    def caption(self) -> str:
        return self._caption

    def set_hint(self, text: str) -> None:
        """Text shown while there is no image."""
        self._hint = text
        self.update()

    @QtCore.Slot()
    def clear(self) -> None:
        self._array = None
        self._qimage = None
        self._caption = ""
        self.update()

    def image_rect(self) -> QtCore.QRectF:
        """Where the image is painted, in widget coordinates (empty when no image)."""
        if self._qimage is None:
            return QtCore.QRectF()
        return fit_rect(self._image_area(), self._qimage.width(), self._qimage.height())

    # --- Qt -------------------------------------------------------------------------

    def sizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(300, 330)

    def minimumSizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(96, 120)

    def _caption_height(self) -> int:
        """Room for the caption, wrapped to the widget's width (up to CAPTION_LINES lines)."""
        fm = self.fontMetrics()
        if not self._caption:
            return fm.height() + 8
        flags = int(QtCore.Qt.AlignmentFlag.AlignCenter | QtCore.Qt.TextFlag.TextWordWrap)
        needed = fm.boundingRect(QtCore.QRect(0, 0, max(10, self.width() - 8), 10_000), flags, self._caption).height()
        return min(needed, CAPTION_LINES * fm.lineSpacing()) + 8

    def _image_area(self) -> QtCore.QRectF:
        r = QtCore.QRectF(self.rect()).adjusted(6, 6, -6, -6)
        r.setBottom(r.bottom() - self._caption_height())
        return r

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        p = QtGui.QPainter(self)
        pal = self.palette()
        if self._qimage is None:
            _paint_hint(p, QtCore.QRectF(self.rect()), self._hint, pal)
            p.end()
            return
        paint_image(p, self._image_area(), self._qimage, _frame_colour(pal))
        if self._caption:
            height = self._caption_height()
            cap = QtCore.QRectF(4, self.height() - height - 2, self.width() - 8, height)
            p.setPen(_text_colour(pal))
            p.drawText(cap, int(QtCore.Qt.AlignmentFlag.AlignCenter | QtCore.Qt.TextFlag.TextWordWrap), self._caption)
        p.end()


class ImagePair(QtWidgets.QWidget):
    """An original image and its reconstruction, side by side, with a title line."""

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("reconPair")
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding,
                           QtWidgets.QSizePolicy.Policy.Preferred)
        self._arrays: tuple[np.ndarray, np.ndarray] | None = None
        self._images: tuple[QtGui.QImage, QtGui.QImage] | None = None
        self._title = ""
        self._hint = "Click a point on the latent map to see an example and its reconstruction"
        self._version = 0

    @QtCore.Slot(object, object, str)
    def set_pair(self, original, reconstruction, title: str = "") -> None:
        a, b = as_image_array(original), as_image_array(reconstruction)
        self._arrays = (a, b)
        self._images = (array_to_qimage(a), array_to_qimage(b))
        self._title = title or ""
        self._version += 1
        self.update()

    def pair(self) -> tuple[np.ndarray, np.ndarray] | None:
        return self._arrays

    def title(self) -> str:
        return self._title

    def image_version(self) -> int:
        return self._version

    def set_hint(self, text: str) -> None:
        self._hint = text
        self.update()

    @QtCore.Slot()
    def clear(self) -> None:
        self._arrays = None
        self._images = None
        self._title = ""
        self.update()

    def headings(self) -> tuple[str, str]:
        """The two headings as drawn: the longest pair that fits over the half-width columns."""
        fm = self.fontMetrics()
        half = (self.width() - 8 - 8.0) / 2.0
        for pair in (HEADINGS, *SHORT_HEADINGS):
            if max(fm.horizontalAdvance(h) for h in pair) <= half:
                return pair
        return SHORT_HEADINGS[-1]

    def sizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(320, 200)

    def minimumSizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(140, 90)

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        p = QtGui.QPainter(self)
        pal = self.palette()
        if self._images is None:
            _paint_hint(p, QtCore.QRectF(self.rect()), self._hint, pal)
            p.end()
            return
        fm = self.fontMetrics()
        line = fm.height() + 4
        r = QtCore.QRectF(self.rect()).adjusted(4, 4, -4, -4)
        p.setPen(_text_colour(pal))
        if self._title:
            title = fm.elidedText(self._title, QtCore.Qt.TextElideMode.ElideRight, int(r.width()))
            p.drawText(QtCore.QRectF(r.x(), r.y(), r.width(), line),
                       int(QtCore.Qt.AlignmentFlag.AlignCenter), title)
            r.setTop(r.top() + line)
        gap = 8.0
        half = (r.width() - gap) / 2.0
        headings = self.headings()
        for i, (img, heading) in enumerate(zip(self._images, headings)):
            x = r.x() + i * (half + gap)
            p.setPen(_text_colour(pal))
            p.drawText(QtCore.QRectF(x, r.y(), half, line),
                       int(QtCore.Qt.AlignmentFlag.AlignCenter), heading)
            paint_image(p, QtCore.QRectF(x, r.y() + line, half, r.height() - line),
                        img, _frame_colour(pal))
        p.end()


class ImageGrid(QtWidgets.QWidget):
    """A grid of images (latent traversals, prior samples, interpolation strips).

    The grid arrives tiled (``vae_core.explore.compose_grid``: ``nrows`` x
    ``ncols`` tiles ``pad`` pixels apart); optional row labels are painted to
    the left of each row and column labels above each column; they are not
    part of :meth:`to_array` or :meth:`save_png`.
    """

    def __init__(self, parent: QtWidgets.QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("imageGrid")
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding,
                           QtWidgets.QSizePolicy.Policy.Expanding)
        self._grid: np.ndarray | None = None
        self._qimage: QtGui.QImage | None = None
        self._nrows = 0
        self._ncols = 0
        self._pad = 2
        self._row_labels: list[str] = []
        self._col_labels: list[str] = []
        self._shown_cols: list[int] = []
        self._column_px = 0.0
        self._hint = ""
        self._version = 0

    def set_grid(self, grid, nrows: int, ncols: int, pad: int = 0, row_labels: Sequence[str] | None = None,
                 col_labels: Sequence[str] | None = None) -> None:
        """Show a tiled ``grid`` (H, W) or (H, W, 3) in [0, 1] of ``nrows`` x ``ncols`` tiles ``pad`` apart."""
        self._grid = as_image_array(grid)
        if self._grid.size == 0:
            self.clear()
            return
        self._pad = int(pad)
        self._qimage = array_to_qimage(self._grid)
        self._ncols = max(1, int(ncols))
        self._nrows = max(1, int(nrows))
        self._row_labels = [str(s) for s in row_labels] if row_labels is not None else []
        self._col_labels = [str(s) for s in col_labels] if col_labels is not None else []
        self._version += 1
        self.updateGeometry()
        self.update()

    def to_array(self) -> np.ndarray | None:
        """The composed grid, (H, W) or (H, W, 3) float32 in [0, 1], or None when empty."""
        return None if self._grid is None else self._grid.copy()

    def save_png(self, path, scale: int = 1) -> bool:
        """Save the composed grid as PNG, optionally enlarged by an integer factor (nearest)."""
        if self._qimage is None:
            return False
        img = self._qimage
        scale = max(1, int(scale))
        if scale > 1:
            img = img.scaled(img.width() * scale, img.height() * scale,
                             QtCore.Qt.AspectRatioMode.IgnoreAspectRatio,
                             QtCore.Qt.TransformationMode.FastTransformation)
        return bool(img.save(str(path), "PNG"))

    def grid_shape(self) -> tuple[int, int]:
        return (self._nrows, self._ncols)

    def image_version(self) -> int:
        return self._version

    def set_hint(self, text: str) -> None:
        self._hint = text
        self.update()

    @QtCore.Slot()
    def clear(self) -> None:
        self._grid = None
        self._qimage = None
        self._nrows = self._ncols = 0
        self._row_labels = []
        self._col_labels = []
        self.update()

    def sizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(400, 300)

    def minimumSizeHint(self) -> QtCore.QSize:
        return QtCore.QSize(80, 60)

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:
        p = QtGui.QPainter(self)
        pal = self.palette()
        if self._qimage is None:
            if self._hint:
                _paint_hint(p, QtCore.QRectF(self.rect()), self._hint, pal)
            p.end()
            return
        fm = self.fontMetrics()
        r = QtCore.QRectF(self.rect()).adjusted(4, 4, -4, -4)
        left = max((fm.horizontalAdvance(s) for s in self._row_labels), default=0)
        if left:
            left += 8
        top = fm.height() + 4 if self._col_labels else 0
        area = QtCore.QRectF(r.x() + left, r.y() + top, r.width() - left, r.height() - top)
        target = paint_image(p, area, self._qimage, _frame_colour(pal))
        if target.isEmpty():
            p.end()
            return
        p.setPen(_text_colour(pal))
        label_x = target.x() - left
        sy = target.height() / self._qimage.height()
        sx = target.width() / self._qimage.width()
        tile_h = (self._qimage.height() + self._pad) / max(1, self._nrows)
        tile_w = (self._qimage.width() + self._pad) / max(1, self._ncols)
        row_px = tile_h * sy
        column_font = p.font()
        row_fm = fm
        if self._row_labels and fm.height() > row_px:
            # Short rows: a smaller font first (down to MIN_LABEL_POINTS), then every k-th label.
            font = QtGui.QFont(column_font)
            points = font.pointSizeF() if font.pointSizeF() > 0 else 9.0
            font.setPointSizeF(max(MIN_LABEL_POINTS, points * row_px / fm.height()))
            p.setFont(font)
            row_fm = QtGui.QFontMetrics(font)
        row_every = label_step([row_fm.height()] * len(self._row_labels), row_px)
        for i, text in enumerate(self._row_labels[: self._nrows]):
            if i % row_every:
                continue
            y0 = target.y() + i * tile_h * sy
            p.drawText(QtCore.QRectF(label_x, y0 - row_fm.height(), left - 6,
                                     (tile_h - self._pad) * sy + 2 * row_fm.height()),
                       int(QtCore.Qt.AlignmentFlag.AlignRight | QtCore.Qt.AlignmentFlag.AlignVCenter),
                       text)
        p.setFont(column_font)
        col_every = label_step([fm.horizontalAdvance(t) + 6 for t in self._col_labels], tile_w * sx)
        self._column_px = tile_w * sx
        self._shown_cols = []
        for j, text in enumerate(self._col_labels[: self._ncols]):
            if j % col_every:
                continue
            self._shown_cols.append(j)
            cx = target.x() + (j + 0.5) * tile_w * sx - 0.5 * self._pad * sx
            w = tile_w * sx * col_every
            p.drawText(QtCore.QRectF(cx - w / 2, target.y() - top, w, top), int(QtCore.Qt.AlignmentFlag.AlignCenter), text)
        p.end()

    def shown_column_labels(self) -> list[int]:
        """Indices of the column labels drawn at the last paint (the others would have overlapped)."""
        return list(self._shown_cols)

    def column_pixels(self) -> float:
        """How far apart the columns were on screen at the last paint."""
        return self._column_px
