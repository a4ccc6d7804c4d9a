"""Checkpoints: one safetensors file with JSON metadata; never pickle.

The file holds, as tensors: the model weights (``model/...``), the optimizer's
tensor state (``optim/<param>/<key>``), the trainer's generator states as
uint8 tensors (``rng/...``), the shuffled order of the current epoch
(``position/perm``, only mid-epoch), the per-step history (``history/steps``,
float64 (n, 6), columns as ``training.STEP_FIELDS``) and the last latents
(``latents/mu``, ``latents/logvar``, ``latents/labels``).  The safetensors
metadata key ``latent_explorer`` holds a JSON object with everything else:
format name and version, configs, dataset spec, settings, epoch, step,
position within the epoch, the optimizer's non-tensor state, history lists,
creation time and library versions.

Files are written atomically (temp file in the same directory, fsync,
``os.replace``): a failed or interrupted save leaves any previous file intact.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .config import ModelConfig, TrainConfig
from .distributed import World
from .files import atomic_file
from .errors import CheckpointError, ConfigError
from .model import VAE, resolve_device, vae_from_state
from .training import History, Trainer, TrainControl, TrainerState

FORMAT = "latent-explorer-checkpoint"
FORMAT_VERSION = 1
METADATA_KEY = "latent_explorer"
_MAX_HEADER = 256 * 1024 * 1024


def _versions() -> dict[str, str]:
    out = {"torch": torch.__version__, "numpy": np.__version__, "python": platform.python_version()}
    try:
        import safetensors

        out["safetensors"] = safetensors.__version__
    except Exception:  # pragma: no cover - safetensors is a dependency
        pass
    try:
        from importlib.metadata import version

        out["latent_explorer"] = version("latent-explorer")
    except Exception:
        out["latent_explorer"] = "unknown"
    return out


def _shape_text(shape: Any) -> str:
    return "x".join(str(int(s)) for s in shape)


# ---------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` so that the file is either the old one or the complete new one (raises OSError)."""
    with atomic_file(path) as f:
        f.write(data)


# ---------------------------------------------------------------------------
# Saving
# ---------------------------------------------------------------------------


def _state_tensors_and_meta(state: TrainerState) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A trainer's state as this format's flat tensors and JSON metadata (see the module docstring)."""
    tensors: dict[str, torch.Tensor] = {f"model/{k}": v for k, v in state.model.items()}
    opt_meta: dict[str, Any] = {"param_groups": state.optimizer["param_groups"], "state": {}}
    for pid, st in state.optimizer["state"].items():
        plain = {}
        for key, value in st.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim/{pid}/{key}"] = value
            else:
                plain[key] = value
        opt_meta["state"][str(pid)] = {
            "keys": list(st),
            "tensors": [k for k, v in st.items() if isinstance(v, torch.Tensor)],
            "values": plain,
        }
    for name, rng_state in state.rng.items():
        tensors[f"rng/{name}"] = rng_state
    if state.perm is not None:
        tensors["position/perm"] = state.perm
    table = state.history.table()
    if table.shape[0]:
        tensors["history/steps"] = torch.from_numpy(table)
    if state.latents is not None and state.latent_logvar is not None:
        tensors["latents/mu"] = torch.from_numpy(np.ascontiguousarray(state.latents))
        tensors["latents/logvar"] = torch.from_numpy(np.ascontiguousarray(state.latent_logvar))
    meta = {
        "epoch": state.epoch,
        "step": state.step,
        "position": {
            "batch": state.batch,
            "n_train": state.n_train,
            "epoch_loss_sum": state.epoch_loss_sum,
            "epoch_count": state.epoch_count,
        },
        "settings": state.settings,
        "optimizer": opt_meta,
        "rng_device": state.rng_device,
        "history": state.history.to_dict(include_arrays=False),
    }
    return tensors, meta


def _trainer_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> TrainerState:
    """Inverse of ``_state_tensors_and_meta``; raises KeyError, TypeError or ValueError on a malformed file."""
    model = {k[len("model/"):]: v for k, v in tensors.items() if k.startswith("model/")}
    opt_meta = meta["optimizer"]
    opt_state: dict[int, dict[str, Any]] = {}
    for pid, st in opt_meta["state"].items():
        tensor_keys = set(st["tensors"])
        opt_state[int(pid)] = {
            key: tensors[f"optim/{pid}/{key}"] if key in tensor_keys else st["values"][key]
            for key in st.get("keys", [*st["values"], *st["tensors"]])
        }
    pos = meta["position"]
    table = tensors.get("history/steps")
    mu = tensors.get("latents/mu")
    logvar = tensors.get("latents/logvar")
    return TrainerState(
        model=model,
        optimizer={"state": opt_state, "param_groups": opt_meta["param_groups"]},
        rng={name: tensors[f"rng/{name}"] for name in ("shuffle", "noise", "binarize")},
        rng_device=str(meta.get("rng_device", "cpu")),
        epoch=int(meta["epoch"]),
        step=int(meta["step"]),
        batch=int(pos["batch"]),
        perm=tensors.get("position/perm"),
        n_train=int(pos["n_train"]),
        epoch_loss_sum=float(pos["epoch_loss_sum"]),
        epoch_count=int(pos["epoch_count"]),
        settings=dict(meta["settings"]),
        history=History.from_dict(meta["history"], None if table is None else table.numpy()),
        latents=None if mu is None or logvar is None else mu.numpy(),
        latent_logvar=None if mu is None or logvar is None else logvar.numpy(),
    )


def checkpoint_bytes(trainer: Trainer) -> bytes:
    """The checkpoint of ``trainer`` as the bytes of a safetensors file."""
    from safetensors.torch import save

    tensors, state = _state_tensors_and_meta(trainer.get_state())
    labels = trainer.labels
    if "latents/mu" in tensors and labels is not None:
        tensors["latents/labels"] = torch.from_numpy(np.ascontiguousarray(labels))
    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "versions": _versions(),
        "model_config": trainer.model_config.to_dict(),
        "train_config": trainer.train_config.to_dict(),
        "dataset": dataset_record(trainer),
        **state,
    }
    return save(tensors, metadata={METADATA_KEY: json.dumps(meta)})


def dataset_record(trainer: Trainer) -> dict[str, Any]:
    """What a checkpoint (and a run folder's config) says about the trainer's dataset, as JSON types.

    The spec it was loaded from (as a dict), its name, class names, image
    shape and number of examples.
    """
    dataset = trainer.dataset
    spec = getattr(dataset, "spec", None)
    if spec is None:
        spec_dict: dict[str, Any] = {}
    elif hasattr(spec, "to_dict"):
        spec_dict = spec.to_dict()
    else:
        spec_dict = dict(spec)
    label_names = getattr(dataset, "label_names", None)
    return {
        "spec": spec_dict,
        "name": str(getattr(dataset, "name", "")),
        "label_names": None if label_names is None else [str(s) for s in label_names],
        "input_shape": list(trainer.model_config.input_shape),
        "n": trainer.n_examples,
    }


def save_checkpoint(trainer: Trainer, path: str | os.PathLike) -> Path:
    """Write ``trainer``'s complete state to ``path`` atomically.

    Call it from the thread that runs ``trainer.run()`` (between events) or
    when training is not running.  Raises CheckpointError when the file
    cannot be written; an existing file is then left as it was.
    """
    path = Path(path)
    data = checkpoint_bytes(trainer)
    try:
        atomic_write_bytes(path, data)
    except OSError as exc:
        raise CheckpointError(f"could not write checkpoint {path}: {exc.strerror or exc}") from exc
    return path


# ---------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """A loaded checkpoint.  ``tensors`` and ``meta`` are the raw state."""

    path: str
    model_config: ModelConfig
    train_config: TrainConfig
    dataset_spec: dict[str, Any]
    dataset_name: str
    label_names: list[str] | None
    history: History
    latents: np.ndarray | None
    latent_logvar: np.ndarray | None
    labels: np.ndarray | None
    epoch: int
    step: int
    settings: dict[str, Any]
    created: str
    versions: dict[str, str]
    meta: dict[str, Any] = field(repr=False)
    tensors: dict[str, torch.Tensor] = field(repr=False)

    @property
    def model_state(self) -> dict[str, torch.Tensor]:
        return {k[len("model/"):]: v for k, v in self.tensors.items() if k.startswith("model/")}

    def build_model(self) -> VAE:
        """An eval-mode VAE on the CPU with the saved weights (no dataset needed)."""
        try:
            return vae_from_state(self.model_config, self.model_state)
        except RuntimeError as exc:
            raise CheckpointError(f"checkpoint {self.path}: the weights do not fit the model config: {exc}") from exc


def _fail(path: Any, problem: str) -> CheckpointError:
    return CheckpointError(f"cannot open checkpoint {path}: {problem}")


def read_metadata(data: bytes, path: Any = "<bytes>") -> tuple[dict[str, Any], dict[str, Any]]:
    """(safetensors header, our metadata) of a checkpoint's bytes, checked; raises CheckpointError."""
    n = int.from_bytes(data[:8], "little") if len(data) >= 8 else 0
    looks_safetensors = 0 < n <= _MAX_HEADER and data[8:9] == b"{"
    # A pickle starts with 0x80 and a zip (torch.save) with PK; a safetensors header
    # length whose lowest byte is 0x80 starts the same way, so the header decides.
    if not looks_safetensors and (data[:4] == b"PK\x03\x04" or data[:1] == b"\x80"):
        raise _fail(
            path,
            "this is a pickle / torch.save file, not a Latent Explorer checkpoint "
            "(pickle files are never opened because loading them can run code)",
        )
    if len(data) < 8:
        raise _fail(path, "not a safetensors file (the file is too short; truncated?)")
    if not looks_safetensors:
        raise _fail(path, "not a safetensors file (no valid header)")
    if 8 + n > len(data):
        raise _fail(path, "the file is truncated (its header is incomplete)")
    try:
        header = json.loads(data[8 : 8 + n].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise _fail(path, f"corrupt safetensors header ({exc})") from exc
    if not isinstance(header, dict):
        raise _fail(path, "corrupt safetensors header")
    end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            end = max(end, int(info["data_offsets"][1]))
        except (TypeError, KeyError, IndexError, ValueError) as exc:
            raise _fail(path, f"corrupt safetensors header (entry {name!r})") from exc
    if 8 + n + end > len(data):
        raise _fail(path, f"the file is truncated ({len(data)} bytes, {8 + n + end} expected)")
    metadata = header.get("__metadata__") or {}
    raw = metadata.get(METADATA_KEY) if isinstance(metadata, dict) else None
    if raw is None:
        raise _fail(path, "not a Latent Explorer checkpoint (a safetensors file without Latent Explorer metadata)")
    try:
        meta = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _fail(path, f"corrupt Latent Explorer metadata ({exc})") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise _fail(path, "not a Latent Explorer checkpoint (unknown metadata format)")
    version = meta.get("format_version")
    if not isinstance(version, int):
        raise _fail(path, "corrupt Latent Explorer metadata (no format version)")
    if version > FORMAT_VERSION:
        raise _fail(
            path,
            f"it was made by a newer version of Latent Explorer (checkpoint format {version}, "
            f"this version reads up to {FORMAT_VERSION}); please update",
        )
    return header, meta


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read and check a checkpoint; raises CheckpointError naming the file and the problem."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as exc:
        raise _fail(path, exc.strerror or str(exc)) from exc
    return checkpoint_from_bytes(data, path)


def checkpoint_from_bytes(data: bytes, path: str | os.PathLike = "<bytes>") -> Checkpoint:
    """The checkpoint held in ``data`` (a file's bytes, read by the caller), checked; ``path`` names it in errors.

    Raises CheckpointError naming ``path`` and the problem.
    """
    from safetensors.torch import load

    _, meta = read_metadata(data, path)
    try:
        tensors = load(data)
    except Exception as exc:  # safetensors raises its own error types
        raise _fail(path, f"corrupt tensor data ({exc})") from exc
    try:
        model_config = ModelConfig.from_dict(meta["model_config"])
        train_config = TrainConfig.from_dict(meta["train_config"])
        ds = meta["dataset"]
        table = tensors.get("history/steps")
        history = History.from_dict(meta["history"], None if table is None else table.numpy())
        epoch = int(meta["epoch"])
        step = int(meta["step"])
        missing = [k for k in ("optimizer", "position", "settings") if k not in meta]
        if missing:
            raise KeyError(missing[0])
    except (KeyError, TypeError, ValueError, ConfigError) as exc:
        raise _fail(path, f"incomplete or invalid metadata ({type(exc).__name__}: {exc})") from exc
    if not any(k.startswith("model/") for k in tensors):
        raise _fail(path, "it holds no model weights")

    def arr(key: str) -> np.ndarray | None:
        t = tensors.get(key)
        return None if t is None else t.numpy()

    return Checkpoint(
        path=str(path),
        model_config=model_config,
        train_config=train_config,
        dataset_spec=dict(ds.get("spec") or {}),
        dataset_name=str(ds.get("name", "")),
        label_names=ds.get("label_names"),
        history=history,
        latents=arr("latents/mu"),
        latent_logvar=arr("latents/logvar"),
        labels=arr("latents/labels"),
        epoch=epoch,
        step=step,
        settings=dict(meta["settings"]),
        created=str(meta.get("created", "")),
        versions=dict(meta.get("versions") or {}),
        meta=meta,
        tensors=tensors,
    )


def check_dataset_fits(ckpt: Checkpoint, dataset: Any) -> None:
    """Raise CheckpointError unless ``dataset``'s images have the shape the checkpoint's model takes."""
    shape = tuple(int(s) for s in dataset.input_shape)
    if shape != tuple(ckpt.model_config.input_shape):
        raise CheckpointError(
            f"checkpoint {ckpt.path} expects {_shape_text(ckpt.model_config.input_shape)} images, "
            f"dataset {getattr(dataset, 'name', '?')!r} has {_shape_text(shape)}"
        )


def restore_trainer(
    ckpt: Checkpoint | str | os.PathLike,
    dataset: Any,
    control: TrainControl | None = None,
    device: Any = None,
    world: World | None = None,
) -> Trainer:
    """A trainer that continues exactly where the checkpoint left off, on ``dataset``.

    The dataset must have the checkpoint's image shape.  On a dataset with a
    different number of training examples a checkpoint saved mid-epoch
    restarts that epoch from its first batch.  A checkpoint trained on a
    CUDA device continues on the CPU where CUDA is not available and no
    ``device`` is given (``trainer.train_config.device`` then says "cpu"); one
    trained in mixed precision ("bf16") continues in float32 where the device
    is not a CUDA GPU (``trainer.train_config.precision`` then says "fp32").  With
    ``world`` the trainer is one rank of a data-parallel run on the world's
    device (every rank restores the same checkpoint); a checkpoint continues
    the same on any number of processes, whatever number wrote it.
    """
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    check_dataset_fits(ckpt, dataset)
    config = ckpt.train_config
    if world is not None and world.size > 1:
        device = world.device
    if device is None and resolve_device(config.device).type == "cuda" and not torch.cuda.is_available():
        config = config.replace(device="cpu")
    if config.precision != "fp32" and resolve_device(str(device or config.device)).type != "cuda":
        config = config.replace(precision="fp32")
    trainer = Trainer(ckpt.model_config, config, dataset, control=control, device=device, world=world)
    try:
        trainer.set_state(_trainer_state(ckpt.tensors, ckpt.meta))
    except (KeyError, ValueError, RuntimeError, TypeError, IndexError) as exc:
        raise CheckpointError(
            f"checkpoint {ckpt.path} is incomplete or does not fit its model ({type(exc).__name__}: {exc})"
        ) from exc
    return trainer
