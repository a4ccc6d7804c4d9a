"""The app's source of truth, one job a module.

* ``session``: the state machine, the model and training, what the views show;
* ``map``: the latent map's projection, its background fits and redraws;
* ``io``: loading datasets and checkpoints, saving checkpoints, exporting codes.
"""

from .io import LoadedCheckpoint, Loader
from .map import LARGE_MAP, MAP_INTERVAL_S, MAP_MODES, UMAP_MAX_WAIT_S, LatentMap, MapView
from .session import EMPTY, IDLE, LOADING, PAUSED, TRAINED, TRAINING, EpochSummary, Session

__all__ = [
    "EMPTY", "IDLE", "LOADING", "PAUSED", "TRAINED", "TRAINING",
    "EpochSummary", "LARGE_MAP", "LatentMap", "LoadedCheckpoint", "Loader", "MAP_INTERVAL_S", "MAP_MODES",
    "MapView", "Session", "UMAP_MAX_WAIT_S",
]
