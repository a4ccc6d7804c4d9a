"""``History``: the per-step curves, per-epoch figures and setting changes of a run."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

STEP_FIELDS = ("step", "recon", "kl", "loss", "beta", "lr")
#: The per-step wall time column: seconds since the run began (NaN where unknown).
WALL_FIELD = "wall_s"


class History:
    """Everything a run has recorded: per-step curves, per-epoch figures, changes.

    The per-step values live in one growing float64 array (doubling, so
    appends are amortised O(1)); nothing is ever dropped.  Reading from
    another thread while the trainer appends is safe.

    Besides the ``STEP_FIELDS`` columns every step has a wall time
    (``WALL_FIELD``: seconds since the run began, continued across resumes;
    NaN for steps recorded without one, as in checkpoints written before
    the column existed).  It is kept apart from ``table()`` and from
    equality: two runs of the same steps are equal whatever their timing.
    ``to_dict`` carries it (rounded to milliseconds), so checkpoints keep it.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = np.zeros((1024, len(STEP_FIELDS) + 1), dtype=np.float64)
        self._n = 0
        self._epochs: list[dict[str, Any]] = []
        self._changes: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return self._n

    def append_step(self, step: int, recon: float, kl: float, loss: float, beta: float, lr: float,
                    wall_s: float = float("nan")) -> None:
        n = self._n
        if n == self._buf.shape[0]:
            bigger = np.zeros((2 * n, self._buf.shape[1]), dtype=np.float64)
            bigger[:n] = self._buf
            with self._lock:
                self._buf = bigger
        self._buf[n] = (step, recon, kl, loss, beta, lr, wall_s)
        self._n = n + 1

    def last_wall_time(self) -> float:
        """The wall time of the last step that has one (0.0 when none has)."""
        with self._lock:
            wall = self._buf[: self._n, -1]
            known = wall[np.isfinite(wall)]
        return float(known[-1]) if known.size else 0.0

    def wall_times(self, start: int = 0) -> np.ndarray:
        """A copy of the per-step wall times from index ``start`` on (seconds since the run began, NaN if unknown)."""
        with self._lock:
            return self._buf[start : self._n, -1].copy()

    def add_epoch(self, record: dict[str, Any]) -> None:
        with self._lock:
            self._epochs.append(dict(record))

    def add_change(self, step: int, name: str, old: Any, new: Any) -> None:
        with self._lock:
            self._changes.append({"step": int(step), "name": name, "old": old, "new": new})

    @property
    def epochs(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(e) for e in self._epochs]

    @property
    def changes(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(c) for c in self._changes]

    def arrays(self, start: int = 0) -> dict[str, np.ndarray]:
        """Copies of the per-step columns from index ``start`` on (for incremental plots)."""
        with self._lock:
            n = self._n
            block = self._buf[start:n].copy()
        out = {name: block[:, i].copy() for i, name in enumerate(STEP_FIELDS)}
        out["step"] = out["step"].astype(np.int64)
        return out

    def table(self) -> np.ndarray:
        """The per-step values as one (n, 6) float64 array (columns: STEP_FIELDS; no wall times)."""
        with self._lock:
            return self._buf[: self._n, : len(STEP_FIELDS)].copy()

    def to_dict(self, include_arrays: bool = True) -> dict[str, Any]:
        """Lists and figures as JSON types; the wall times always, the STEP_FIELDS columns when ``include_arrays``."""
        d: dict[str, Any] = {"epochs": self.epochs, "changes": self.changes, "n_steps": self._n}
        wall = self.wall_times()
        if np.isfinite(wall).any():
            # JSON has no NaN: unknown times are written as null.
            d[WALL_FIELD] = [round(float(w), 3) if np.isfinite(w) else None for w in wall]
        if include_arrays:
            d["steps"] = {k: v.tolist() for k, v in self.arrays().items()}
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], table: np.ndarray | None = None) -> "History":
        """Rebuild from ``to_dict()``; the per-step values come from ``d["steps"]`` or ``table``."""
        h = cls()
        h._epochs = [dict(e) for e in d.get("epochs", [])]
        h._changes = [dict(c) for c in d.get("changes", [])]
        if table is None and "steps" in d:
            cols = [np.asarray(d["steps"][k], dtype=np.float64) for k in STEP_FIELDS]
            table = np.stack(cols, axis=1) if cols[0].size else np.zeros((0, len(STEP_FIELDS)))
        if table is not None:
            table = np.asarray(table, dtype=np.float64).reshape(-1, len(STEP_FIELDS))
            n = int(table.shape[0])
            cap = max(1024, 1 << max(0, int(n - 1).bit_length()))
            h._buf = np.zeros((cap, len(STEP_FIELDS) + 1), dtype=np.float64)
            h._buf[:n, : len(STEP_FIELDS)] = table
            h._buf[:n, -1] = np.nan
            wall = d.get(WALL_FIELD)
            if wall is not None and len(wall) == n:
                h._buf[:n, -1] = np.array([np.nan if w is None else w for w in wall], dtype=np.float64)
            h._n = n
        return h

    def copy(self) -> "History":
        """An independent copy (appending to one does not change the other)."""
        h = History()
        with self._lock:
            h._buf = self._buf.copy()
            h._n = self._n
            h._epochs = [dict(e) for e in self._epochs]
            h._changes = [dict(c) for c in self._changes]
        return h

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, History):
            return NotImplemented
        return (
            np.array_equal(self.table(), other.table())
            and self.epochs == other.epochs
            and self.changes == other.changes
        )

    def __repr__(self) -> str:
        return f"History(steps={self._n}, epochs={len(self._epochs)}, changes={len(self._changes)})"
