"""How the program shows things: images in display layout and numbers, shapes and codes as text.

Pure functions of numpy arrays and plain values, no Qt and no engine: the
session, the tools and the widgets all format the same way.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

#: How the live settings are named in markers on the loss curves.
SETTING_NAMES = {"beta": "β", "lr": "lr", "warmup": "warm-up", "warmup_epochs": "warm-up epochs",
                 "free_bits": "free bits"}
#: The marker of a divergence that the trainer rolled back.
ROLLBACK_MARKER = "diverged: rolled back"
#: A latent dimension is *active* when both hold: its held-out KL is at least
#: ACTIVE_KL nats (it carries information about x) and its posterior means
#: vary over the data with a variance above ACTIVE_VARIANCE (they tell the
#: examples apart; Burda et al. 2016).  Every view counts active units with
#: ``active_dims``.  With ACTIVE_KL at 0.05 nats, a model whose total KL is
#: below 0.05 nats has no active unit: "no active unit" is the one test of a
#: collapsed posterior.
ACTIVE_KL = 0.05
ACTIVE_VARIANCE = 0.01


def active_dims(kl_per_dim: np.ndarray, mean_codes: np.ndarray | None = None) -> np.ndarray:
    """Which latent dimensions are active (see ACTIVE_KL), as a bool array (d,).

    ``kl_per_dim``: held-out KL of each dimension (nats per example, NaN
    counts as none); ``mean_codes``: the posterior means of the examples
    (N, d), when known; without them only the KL decides.
    """
    kl = np.asarray(kl_per_dim, dtype=np.float64).reshape(-1)
    active = kl >= ACTIVE_KL
    if mean_codes is not None:
        mu = np.asarray(mean_codes)
        if mu.ndim == 2 and mu.shape[1] == len(kl) and len(mu) > 1:
            active &= np.var(mu, axis=0, dtype=np.float64) > ACTIVE_VARIANCE
    return active


def images_for_display(images: np.ndarray) -> np.ndarray:
    """(N, C, H, W) -> (N, H, W) for one channel, (N, H, W, 3) for colour (views where possible)."""
    if images.ndim != 4:
        return images
    c = images.shape[1]
    if c == 1:
        return images[:, 0]
    if c == 3:
        return images.transpose(0, 2, 3, 1)
    return images[:, :3].transpose(0, 2, 3, 1)


def image_for_display(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> (H, W) or (H, W, 3) float32, scaled to [0, 1] when uint8, clipped to [0, 1]."""
    shown = images_for_display(np.asarray(image)[None])[0]
    if shown.dtype == np.uint8:
        return shown.astype(np.float32) / 255.0
    return np.clip(shown, 0.0, 1.0).astype(np.float32, copy=False)


def decoded_for_display(images: np.ndarray) -> np.ndarray:
    """Decoder output (M, C, H, W) -> (M, H, W[, 3]) float32 in [0, 1], a contiguous copy."""
    return np.ascontiguousarray(np.clip(images_for_display(images), 0.0, 1.0), dtype=np.float32)


def shape_text(shape: Sequence[int]) -> str:
    """(1, 28, 28) -> "28x28 grey", (3, 64, 64) -> "64x64 RGB"."""
    c, h, w = (int(v) for v in shape)
    kind = "grey" if c == 1 else ("RGB" if c == 3 else f"{c}-channel")
    return f"{h}x{w} {kind}"


def format_value(v: Any) -> str:
    """A setting's value as a marker shows it: 0.001 -> "1e-03", 4.0 -> "4", "linear" as is."""
    if isinstance(v, float):
        if v != 0 and (abs(v) < 1e-2 or abs(v) >= 1e4):
            return f"{v:.0e}"
        return f"{v:g}"
    return str(v)


def change_marker(name: str, old: Any, new: Any) -> str:
    """The loss curves' marker text of a live change, e.g. "β 1 → 4"."""
    if name == "rollback":
        return ROLLBACK_MARKER
    return f"{SETTING_NAMES.get(name, name)} {format_value(old)} → {format_value(new)}"


def history_markers(changes: Sequence[dict]) -> list[tuple[int, str]]:
    """(step, text) markers of a history's recorded changes, in order."""
    out = []
    for c in changes:
        if "name" in c and "old" in c:
            out.append((int(c["step"]), change_marker(c["name"], c["old"], c.get("new"))))
        elif "text" in c:
            out.append((int(c["step"]), str(c["text"])))
    return out


def code_text(z: np.ndarray, show: int = 4) -> str:
    """A latent code as "(+0.12, -1.30)"; longer than ``show`` dims: the first three and the count."""
    z = np.asarray(z).reshape(-1)
    if len(z) <= show:
        return "(" + ", ".join(f"{v:+.2f}" for v in z) + ")"
    return "(" + ", ".join(f"{v:+.2f}" for v in z[:3]) + f", … {len(z)} dims)"


def example_title(index: int, labels: np.ndarray | None, label_names: Sequence[str] | None) -> str:
    """"#17 · 3": an example's index and, when the data are labelled, its class name."""
    name = ""
    if labels is not None and label_names and 0 <= index < len(labels):
        lab = int(labels[index])
        name = str(label_names[lab]) if 0 <= lab < len(label_names) else str(lab)
    return f"#{index}" + (f" · {name}" if name else "")


def format_duration(seconds: float) -> str:
    """``0:42``, ``12:05``, ``1:02:03``; "–" for an unknown (NaN, infinite or negative) duration."""
    if not math.isfinite(seconds) or seconds < 0:
        return "–"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{secs:02d}"
    return f"{minutes}:{secs:02d}"


@dataclass(frozen=True)
class HistoryView:
    """A run's record as the loss curves draw it: per-step columns, held-out epochs, markers."""

    steps: np.ndarray
    recon: np.ndarray
    kl: np.ndarray
    loss: np.ndarray
    epochs: list[tuple[int, float, float, float]]  # step, recon, KL, -ELBO (held out)
    markers: list[tuple[int, str]]
    wall_s: np.ndarray | None = None  # seconds since the run began, per step (None: not recorded)

    @property
    def empty(self) -> bool:
        return len(self.steps) == 0 and not self.epochs


def history_view(history: Any | None) -> HistoryView:
    """The curves of a ``vae_core.training.History`` (None: an empty view)."""
    if history is None:
        z = np.zeros(0)
        return HistoryView(z, z, z, z, [], [])
    arr = history.arrays()
    epochs = [(int(e["step"]), float(e["test_recon"]), float(e["test_kl"]), -float(e["test_elbo"]))
              for e in history.epochs]
    wall = history.wall_times()
    return HistoryView(np.asarray(arr["step"], dtype=np.float64), arr["recon"], arr["kl"], arr["loss"], epochs,
                       history_markers(history.changes), wall if np.isfinite(wall).any() else None)
