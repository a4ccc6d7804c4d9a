"""Latent codes as CSV: one row per example, the columns a spreadsheet or pandas reads as they are.

Columns: ``index`` (the example's position in the dataset), ``label`` (its
class name when names are given, else the class number; empty for an
example without a label), ``mu_1..mu_d`` (the mean of q(z|x)), then
``sigma_1..sigma_d`` (its standard deviation, exp(logvar / 2)) when log
variances are given and ``map_x, map_y`` (the position on a 2-D map) when a
layout is given.  Numbers are written with six significant digits (``%.6g``).

The text is made a block of rows at a time by one string formatting call
over precomputed columns, so a million rows take about a second.
"""

from __future__ import annotations

import os
from typing import Iterator, Optional, Sequence

import numpy as np

from .files import atomic_file

__all__ = ["latents_csv_header", "iter_latents_csv", "write_latents_csv"]

#: Rows formatted per block (bounds the memory a block's Python objects take).
_BLOCK_ROWS = 1 << 16


def latents_csv_header(d: int, with_sigma: bool, with_xy: bool) -> list[str]:
    """The column names of a latent CSV for ``d`` latent dimensions."""
    header = ["index", "label"] + [f"mu_{j + 1}" for j in range(d)]
    if with_sigma:
        header += [f"sigma_{j + 1}" for j in range(d)]
    if with_xy:
        header += ["map_x", "map_y"]
    return header


def _csv_field(text: str) -> str:
    """``text`` as one CSV field, quoted (and its quotes doubled) only when it needs it, as ``csv.writer`` does."""
    if any(c in text for c in ',"\r\n'):
        return '"' + text.replace('"', '""') + '"'
    return text


def _label_column(labels: np.ndarray, label_names: Optional[Sequence[str]]) -> np.ndarray:
    """The label field of every row (object array of str): the name, the number, or "" for -1 (no label)."""
    values, inverse = np.unique(labels, return_inverse=True)
    names = list(label_names) if label_names is not None else []
    texts = []
    for v in values.tolist():
        if v < 0:
            texts.append("")
        elif v < len(names):
            texts.append(_csv_field(str(names[v])))
        else:
            texts.append(str(int(v)))
    return np.array(texts, dtype=object)[inverse.reshape(-1)]


def _check_rows(name: str, arr: np.ndarray, n: int, width: Optional[int]) -> None:
    if arr.shape[0] != n or (width is not None and (arr.ndim != 2 or arr.shape[1] != width)):
        want = f"({n}, {width})" if width is not None else f"({n},)"
        raise ValueError(f"{name} must have shape {want} to match the latents, got {arr.shape}")


def iter_latents_csv(
    latents: np.ndarray,
    logvar: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
    label_names: Optional[Sequence[str]] = None,
    xy: Optional[np.ndarray] = None,
) -> Iterator[str]:
    """The CSV text (see the module docstring) in pieces: the header line, then blocks of whole rows.

    ``latents`` and ``logvar`` are (N, d), ``labels`` (N,) integers, ``xy``
    (N, 2).  Raises ValueError when the shapes do not agree.
    """
    mu = np.asarray(latents)
    if mu.ndim != 2:
        raise ValueError(f"latents must be an (N, d) array, got shape {mu.shape}")
    n, d = mu.shape
    sigma = None
    if logvar is not None:
        lv = np.asarray(logvar)
        _check_rows("logvar", lv, n, d)
        sigma = np.exp(0.5 * lv.astype(np.float64))
    label_col = None
    if labels is not None:
        lab = np.asarray(labels).reshape(-1)
        _check_rows("labels", lab, n, None)
        label_col = _label_column(lab.astype(np.int64), label_names)
    pos = None
    if xy is not None:
        pos = np.asarray(xy)
        _check_rows("xy", pos, n, 2)

    yield ",".join(latents_csv_header(d, sigma is not None, pos is not None)) + "\n"
    blocks = [mu] + ([sigma] if sigma is not None else []) + ([pos] if pos is not None else [])
    n_numbers = sum(b.shape[1] for b in blocks)
    row = "%d,%s" + ",%.6g" * n_numbers + "\n"
    for start in range(0, n, _BLOCK_ROWS):
        stop = min(n, start + _BLOCK_ROWS)
        cells = np.empty((stop - start, 2 + n_numbers), dtype=object)
        cells[:, 0] = np.arange(start, stop)
        cells[:, 1] = "" if label_col is None else label_col[start:stop]
        col = 2
        for b in blocks:
            cells[:, col:col + b.shape[1]] = b[start:stop].astype(np.float64)
            col += b.shape[1]
        yield (row * (stop - start)) % tuple(cells.ravel().tolist())


def write_latents_csv(
    path: str | os.PathLike,
    latents: np.ndarray,
    logvar: Optional[np.ndarray] = None,
    labels: Optional[np.ndarray] = None,
    label_names: Optional[Sequence[str]] = None,
    xy: Optional[np.ndarray] = None,
) -> int:
    """Write the latent CSV to ``path``; returns the number of rows written (the header not counted).

    The text goes to a temporary file that then replaces ``path``, so
    ``path`` is either the old file or the complete new one.  An OSError
    propagates after the temporary file is removed; shapes that do not agree
    raise ValueError before anything is written.
    """
    pieces = iter_latents_csv(latents, logvar, labels, label_names, xy)
    header = next(pieces)  # checks the shapes before a file is made
    with atomic_file(path, text=True) as f:
        f.write(header)
        for piece in pieces:
            f.write(piece)
    return int(np.shape(latents)[0])
