"""Procedurally generated dSprites-style shapes (square, ellipse, heart) with their generating factors."""

from __future__ import annotations

import math

import numpy as np

from ..errors import DatasetError
from .spec import _STREAM_SHAPES, MAX_SHAPES, MAX_SIZE, ProgressFn, _allocate, _as_int, _report, _rng

SHAPE_NAMES = ("square", "ellipse", "heart")

# Radius (in units where the frame spans [-1, 1]) of the circle holding a
# shape of scale 1.  Each shape is drawn inside a unit circle in its own frame.
_SHAPE_MAX_RADIUS = 0.5
_SQUARE_HALF_SIDE = 0.70  # circumradius 0.99
_ELLIPSE_AXES = (1.0, 0.5)
# The heart is the classic union of a square of side 1 standing on a corner
# and two discs of diameter 1 on its upper edges.  Its smallest holding circle
# has radius 0.892 around (0, 0.185); heart units are shape units times that.
_HEART_DISC_CENTRE = 0.5 / math.sqrt(2.0)
_HEART_RADIUS = 0.892
_HEART_CENTER_Y = 0.185


def make_shapes(
    n: int, size: int = 32, seed: int = 0, progress: ProgressFn | None = None
) -> tuple[np.ndarray, np.ndarray, dict[str, np.ndarray]]:
    """dSprites-style white shapes on black.

    Returns ``(images, labels, factors)``: images uint8 (n, 1, size, size),
    the coverage of each pixel by the shape in 1/255 steps (255 = covered;
    divide by 255 for [0, 1]), with anti-aliased edges; labels int64 in
    {0: square, 1: ellipse, 2: heart}; factors float32 arrays "scale" (0.5 to
    1, relative size), "rotation" (radians, 0 to 2 pi), "x" and "y" (centre
    of the shape as a fraction of the image width/height from the left/top
    edge).  Each shape lies wholly inside the frame, at least a pixel from
    its edges.  The factors are drawn first, then the images are drawn in
    chunks (the result does not depend on the chunking), reporting
    ``progress(fraction, text)``; the array is allocated once, after
    checking that it fits in memory.
    """
    n = _as_int(n, "n")
    size = _as_int(size, "size")
    if n < 0 or n > MAX_SHAPES:
        raise DatasetError(f"shapes: n must be between 0 and {MAX_SHAPES}, got {n}")
    if not 8 <= size <= MAX_SIZE:
        raise DatasetError(f"shapes: size must be between 8 and {MAX_SIZE} pixels, got {size}")

    rng = _rng(_as_int(seed, "seed"), _STREAM_SHAPES)
    labels = rng.integers(0, len(SHAPE_NAMES), n).astype(np.int64)
    scale = rng.uniform(0.5, 1.0, n)
    rotation = rng.uniform(0.0, 2.0 * np.pi, n)
    radius = scale * _SHAPE_MAX_RADIUS
    reach = 1.0 - radius - 3.0 / size  # keep a pixel and a half of margin
    cx = rng.uniform(-reach, reach)
    cy = rng.uniform(-reach, reach)

    images = _allocate(
        (n, 1, size, size), np.uint8, "shapes", advice="choose fewer shapes or a smaller image size"
    )
    images.fill(0)
    coords = ((np.arange(size, dtype=np.float32) + 0.5) * (2.0 / size) - 1.0).astype(np.float32)
    centre_col = (cx + 1.0) * (size / 2.0)
    centre_row = (cy + 1.0) * (size / 2.0)
    # Each shape is drawn only in a square window around it (its holding
    # circle plus the anti-aliasing band), about a quarter of the frame.
    win = min(size, int(math.ceil(_SHAPE_MAX_RADIUS * size)) + 4)
    steps = np.arange(win)
    per = max(1, (1 << 20) // (win * win))
    for start in range(0, n, per):
        stop = min(n, start + per)
        chunk_labels = labels[start:stop]
        for kind in range(len(SHAPE_NAMES)):
            ids = start + np.flatnonzero(chunk_labels == kind)
            if ids.size == 0:
                continue
            col0 = np.clip(np.floor(centre_col[ids] - win / 2.0).astype(np.int64), 0, size - win)
            row0 = np.clip(np.floor(centre_row[ids] - win / 2.0).astype(np.int64), 0, size - win)
            cols = col0[:, None] + steps  # (B, win)
            rows = row0[:, None] + steps
            patch = _render_shapes(
                kind, cx[ids], cy[ids], radius[ids], rotation[ids], coords[cols], coords[rows], size
            )
            patch *= np.float32(255.0)
            np.rint(patch, out=patch)
            images[ids[:, None, None], 0, rows[:, :, None], cols[:, None, :]] = patch
        _report(progress, stop / n, f"drawing shapes ({stop}/{n})")

    factors = {
        "scale": scale.astype(np.float32),
        "rotation": rotation.astype(np.float32),
        "x": ((cx + 1.0) / 2.0).astype(np.float32),
        "y": ((cy + 1.0) / 2.0).astype(np.float32),
    }
    return images, labels, factors


def _box_distance(x: np.ndarray, y: np.ndarray, half: float) -> np.ndarray:
    """Signed Euclidean distance to an axis-aligned square of half-side ``half``."""
    qx = np.abs(x) - np.float32(half)
    qy = np.abs(y) - np.float32(half)
    outside = np.hypot(np.maximum(qx, 0.0), np.maximum(qy, 0.0))
    inside = np.minimum(np.maximum(qx, qy), 0.0)
    return outside + inside


def _render_shapes(
    kind: int,
    cx: np.ndarray,
    cy: np.ndarray,
    radius: np.ndarray,
    rotation: np.ndarray,
    xs: np.ndarray,
    ys: np.ndarray,
    size: int,
) -> np.ndarray:
    """Coverage (B, H, W) of B shapes of one kind at pixel centres ``xs`` (B, W) and ``ys`` (B, H).

    Edges are anti-aliased over about one pixel.
    """
    f32 = np.float32
    cos = np.cos(rotation).astype(f32)[:, None, None]
    sin = np.sin(rotation).astype(f32)[:, None, None]
    inv_r = (1.0 / radius).astype(f32)[:, None, None]
    dx = (xs[:, None, :] - cx.astype(f32)[:, None, None]) * inv_r  # (B, 1, W)
    dy = (ys[:, :, None] - cy.astype(f32)[:, None, None]) * inv_r  # (B, H, 1)
    # Pixel coordinates in the shape's own frame, where its holding circle is
    # the unit circle; image rows grow downwards, so "up" is -py.
    px = dx * cos + dy * sin
    py = dy * cos - dx * sin
    # One pixel expressed in shape units, per example.
    pixel = (2.0 / size) * inv_r

    # Signed distance to the border (negative inside), in shape units.
    if kind == 0:
        dist = _box_distance(px, py, _SQUARE_HALF_SIDE)
    elif kind == 1:
        # First-order distance to the ellipse f = (x/a)^2 + (y/b)^2 - 1 = 0,
        # f / |grad f|; accurate within the pixel or so that matters here.
        a2, b2 = f32(_ELLIPSE_AXES[0] ** 2), f32(_ELLIPSE_AXES[1] ** 2)
        f = px * px / a2 + py * py / b2 - 1.0
        gx = px / a2
        gy = py / b2
        grad = 2.0 * np.sqrt(gx * gx + gy * gy)
        np.maximum(grad, f32(1e-6), out=grad)
        dist = f / grad
    else:
        k = f32(_HEART_RADIUS)
        hx = np.abs(px) * k  # the heart is mirror-symmetric
        hy = f32(_HEART_CENTER_Y) - py * k
        r2 = f32(1.0 / math.sqrt(2.0))
        square = _box_distance((hx + hy) * r2, (hy - hx) * r2, 0.5)
        disc = np.hypot(hx - f32(_HEART_DISC_CENTRE), hy - f32(_HEART_DISC_CENTRE)) - f32(0.5)
        dist = np.minimum(square, disc)
        dist /= k
    # Coverage falls from 1 to 0 across one pixel centred on the border.
    dist /= pixel
    out = f32(0.5) - dist
    np.clip(out, 0.0, 1.0, out=out)
    return out
