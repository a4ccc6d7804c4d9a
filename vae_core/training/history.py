"""``History``: the per-step curves, per-epoch figures and setting changes of a run."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

STEP_FIELDS = ("step", "recon", "kl", "loss", "beta", "lr")


class History:
    """Everything a run has recorded: per-step curves, per-epoch figures, changes.

    The per-step values live in one growing float64 array (doubling, so
    appends are amortised O(1)); nothing is ever dropped.  Reading from
    another thread while the trainer appends is safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buf = np.zeros((1024, len(STEP_FIELDS)), dtype=np.float64)
        self._n = 0
        self._epochs: list[dict[str, Any]] = []
        self._changes: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return self._n

    def append_step(self, step: int, recon: float, kl: float, loss: float, beta: float, lr: float) -> None:
        n = self._n
        if n == self._buf.shape[0]:
            bigger = np.zeros((2 * n, len(STEP_FIELDS)), dtype=np.float64)
            bigger[:n] = self._buf
            with self._lock:
                self._buf = bigger
        self._buf[n] = (step, recon, kl, loss, beta, lr)
        self._n = n + 1

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
        """The per-step values as one (n, 6) float64 array (columns: STEP_FIELDS)."""
        with self._lock:
            return self._buf[: self._n].copy()

    def to_dict(self, include_arrays: bool = True) -> dict[str, Any]:
        d: dict[str, Any] = {"epochs": self.epochs, "changes": self.changes, "n_steps": self._n}
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
            cap = max(1024, 1 << max(0, int(table.shape[0] - 1).bit_length()))
            h._buf = np.zeros((cap, len(STEP_FIELDS)), dtype=np.float64)
            h._buf[: table.shape[0]] = table
            h._n = int(table.shape[0])
        return h

    def copy(self) -> "History":
        """An independent copy (appending to one does not change the other)."""
        return History.from_dict(self.to_dict(include_arrays=False), self.table())

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
