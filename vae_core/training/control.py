"""``TrainControl``: steer a running trainer from another thread; ``validate_settings`` checks what may change live."""

from __future__ import annotations

import math
import threading
from typing import Any

from ..config import LIVE_SETTINGS, WARMUPS
from ..errors import ConfigError


def validate_settings(changes: dict[str, Any]) -> dict[str, Any]:
    """Check and normalise live-settable values; raise ConfigError on a bad one."""
    out: dict[str, Any] = {}
    for name, value in changes.items():
        if name not in LIVE_SETTINGS:
            raise ConfigError(f"cannot change {name!r} during training; settable: {', '.join(LIVE_SETTINGS)}")
        if name == "warmup":
            if value not in WARMUPS:
                raise ConfigError(f"warmup must be one of {WARMUPS}, got {value!r}")
            out[name] = str(value)
            continue
        if name == "warmup_epochs":
            try:
                v = int(value)
            except (TypeError, ValueError) as exc:
                raise ConfigError(f"warmup_epochs must be an integer, got {value!r}") from exc
            if v != value or v < 1:
                raise ConfigError(f"warmup_epochs must be an integer of at least 1, got {value!r}")
            out[name] = v
            continue
        try:
            v = float(value)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{name} must be a number, got {value!r}") from exc
        if not math.isfinite(v):
            raise ConfigError(f"{name} must be finite, got {value!r}")
        if name == "lr" and not v > 0:
            raise ConfigError(f"learning rate must be positive, got {value!r}")
        if name in ("beta", "free_bits") and v < 0:
            raise ConfigError(f"{name} must be >= 0, got {value!r}")
        out[name] = v
    return out


class TrainControl:
    """Steers a running trainer from another thread.

    ``pause``/``resume``/``stop`` and ``set`` may be called from any thread at
    any time; the trainer acts on them at the next batch boundary.  ``stop``
    takes effect within one batch and also wakes a paused trainer.  The stop
    request stays set (``run`` keeps returning at once) until ``reset()``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._wake.set()
        self._paused = False
        self._stopped = False
        self._changes: dict[str, Any] = {}
        # Read by the trainer once per batch without the lock: True when there is
        # anything to look at (a pause, stop or change request).
        self.pending = False

    def pause(self) -> None:
        with self._lock:
            self._paused = True
            self._wake.clear()
            self.pending = True

    def resume(self) -> None:
        with self._lock:
            self._paused = False
            self._wake.set()
            self.pending = True

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            self._wake.set()
            self.pending = True

    def reset(self) -> None:
        """Clear a stop and a pause so that the trainer can be run again."""
        with self._lock:
            self._stopped = False
            self._paused = False
            self._wake.set()
            self.pending = bool(self._changes)

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def stopped(self) -> bool:
        return self._stopped

    def set(self, **changes: Any) -> None:
        """Request new values for beta, lr, warmup, warmup_epochs or free_bits.

        Values are validated here (ConfigError on a bad one, and then nothing
        is changed); the trainer applies them at the next batch boundary.
        """
        checked = validate_settings(changes)
        with self._lock:
            self._changes.update(checked)
            self.pending = True

    def pending_changes(self) -> dict[str, Any]:
        with self._lock:
            return dict(self._changes)

    # -- used by the trainer ---------------------------------------------
    def _take(self) -> tuple[dict[str, Any], bool, bool]:
        """(changes, paused, stopped), clearing the changes; a stop stays pending until reset."""
        with self._lock:
            changes, self._changes = self._changes, {}
            self.pending = self._stopped
            return changes, self._paused, self._stopped

    def _wait(self, timeout: float) -> None:
        self._wake.wait(timeout)
