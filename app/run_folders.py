"""The window's run folders: where a run trained here writes its own, what writes it, and the list of them.

A run started from the window writes the same run folder as
``vae-explorer train --run-dir`` (``vae_core.runs``): ``config.json``,
``events.jsonl`` and ``latest.ckpt``, so every run, wherever it trained, can
be followed, listed and opened the same way.  Each new model gets a folder
``<root>/<dataset>-<YYYYMMDD-HHMMSS>``; training the same model further
continues its folder.  ``RunRecorder`` writes one from the training thread;
``list_runs`` reads the newest folders of a root (on a worker thread: it
reads every event).

Nothing here imports the engine at import time: ``vae_core.runs`` brings
torch with it, and only the threads that write or read run folders need it.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vae_core.runs import RunWriter
    from vae_core.training import Trainer

#: Overrides where runs trained in the window write their folders.
ENV_RUNS = "LATENT_EXPLORER_RUNS"
#: File > Runs lists this many of the newest run folders.
MAX_LISTED = 20
#: The files that make a folder a run folder (``vae_core.runs.CONFIG`` and ``EVENTS``).
RUN_FILES = ("config.json", "events.jsonl")
#: A run folder's newest checkpoint (``vae_core.runs.LATEST``).
LATEST_CHECKPOINT = "latest.ckpt"


def runs_root(data_dir: Path | None) -> Path | None:
    """Where runs trained in the window go: ``$LATENT_EXPLORER_RUNS``, else ``data_dir/runs``; None for neither."""
    env = os.environ.get(ENV_RUNS)
    if env:
        return Path(env)
    return None if data_dir is None else Path(data_dir) / "runs"


def _slug(name: str) -> str:
    """A dataset's name as part of a folder name: letters, digits, '.', '_' and '-' only."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-.")[:48] or "run"


def new_run_dir(root: str | os.PathLike, dataset_name: str, now: float | None = None) -> str:
    """A folder name for a new run that no folder in ``root`` has yet: ``digits-20261214-153012`` (``-2``, ...)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(time.time() if now is None else now))
    base = Path(root) / f"{_slug(dataset_name)}-{stamp}"
    path, k = base, 2
    while path.exists():
        path = base.with_name(f"{base.name}-{k}")
        k += 1
    return str(path)


class RunRecorder:
    """Writes one training run's folder from the thread that trains (through ``vae_core.runs.RunWriter``).

    ``recorded(events)`` passes the trainer's events through: each is
    written after the loop that consumes it has handled it (an epoch's
    checkpoint is saved after its views were told), and the folder is
    finished (``latest.ckpt`` saved, the file closed) when the events end.
    A folder that cannot be written ends the recording, never the training:
    ``report`` gets a message for the user, once.
    """

    def __init__(self, directory: str, trainer: "Trainer", resumed_from: str | None,
                 report: Callable[[str], None]) -> None:
        self.directory: str = directory
        self._report: Callable[[str], None] = report
        self._writer: RunWriter | None = None
        from vae_core.distributed import process_info
        from vae_core.runs import RunWriter

        try:
            writer = RunWriter(directory, trainer)
        except Exception as exc:  # OSError, or an engine error: either way the run goes on unrecorded
            self._give_up(exc)
            return
        self._writer = writer
        self._guarded(lambda w: w.start([process_info(0, trainer.device)], resumed_from=resumed_from))

    @property
    def recording(self) -> bool:
        return self._writer is not None

    def recorded(self, events: Iterable[Any]) -> Iterator[Any]:
        """Yield ``events``, writing each after it was handled; finish the folder at their end."""
        try:
            for ev in events:
                yield ev
                self._guarded(lambda w: w.record(ev))
        finally:
            self._guarded(lambda w: w.finish())  # finish closes the file whether or not its save succeeds
            self._writer = None

    def _guarded(self, call: Callable[["RunWriter"], Any]) -> None:
        writer = self._writer
        if writer is None:
            return
        try:
            call(writer)
        except Exception as exc:
            writer.close()
            self._writer = None
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        self._report(f"The run folder {self.directory} could not be written ({why}); training goes on "
                     "without it, so this run cannot be followed or listed in File ▸ Runs.")


@dataclass(frozen=True)
class RunEntry:
    """A run folder as File ▸ Runs lists it."""

    directory: str
    status: str | None  # the run's last status ("started", "finished", ...), None before any
    epochs: int  # epochs completed
    dataset: str
    updated: float | None  # Unix time of the newest event
    checkpoint: str | None  # its latest.ckpt, None before the first one
    title: str | None = None  # the name the run was given (``vae_core.runs.set_run_name``), None without one

    @property
    def name(self) -> str:
        """The run's name: the one it was given, else its folder's."""
        return self.title or os.path.basename(self.directory.rstrip(os.sep)) or self.directory

    def label(self) -> str:
        """"digits-20261214-153012 · finished · 3 epochs · 14 Dec 15:31"."""
        parts = [self.name, self.status or "no status yet", f"{self.epochs} epoch{'s' if self.epochs != 1 else ''}"]
        if self.updated is not None:
            parts.append(_dt.datetime.fromtimestamp(self.updated).strftime("%d %b %H:%M"))
        return " · ".join(parts)


def _newest_first(root: Path) -> list[tuple[float, Path]]:
    """(time of the last change, folder) of every run folder in ``root``, newest first."""
    found = []
    try:
        names = os.listdir(root)
    except OSError:
        return []
    for name in names:
        folder = root / name
        times = []
        for file in RUN_FILES:
            try:
                times.append(os.stat(folder / file).st_mtime)
            except OSError:
                pass
        if times:
            found.append((max(times), folder))
    return sorted(found, key=lambda item: item[0], reverse=True)


def list_runs(root: str | os.PathLike, limit: int = MAX_LISTED) -> list[RunEntry]:
    """The ``limit`` most recently changed run folders of ``root`` (read with ``read_run``), newest first."""
    from vae_core.runs import read_run

    entries = []
    for changed, folder in _newest_first(Path(root))[:limit]:
        try:
            record = read_run(folder)
        except OSError:
            continue
        epochs = [int(e["epoch"]) for e in record.events if e.get("kind") == "epoch" and isinstance(e.get("epoch"), int)]
        dataset = ""
        if record.config is not None and isinstance(record.config.get("dataset"), dict):
            dataset = str(record.config["dataset"].get("name", ""))
        entries.append(RunEntry(str(folder), record.status, max(epochs, default=0), dataset,
                                record.updated if record.updated is not None else changed,
                                None if record.checkpoint is None else str(record.checkpoint),
                                record.name if record.name != folder.name else None))
    return entries


# ---------------------------------------------------------------------------
# The Runs panel's rows
# ---------------------------------------------------------------------------

#: How a run's last status reads in the Runs panel.
STATUS_TEXT = {"started": "training", "resumed": "training", "paused": "paused", "stopped": "stopped",
               "finished": "finished", "diverged": "diverged"}


@dataclass(frozen=True)
class RunSummary:
    """One row of the Runs panel: a run folder, or a checkpoint file that has none.

    ``key`` identifies the row: the folder for a run folder, the file for a
    plain checkpoint.  Figures that are not known are None; ``error`` says
    why a folder or file could not be read (its row stays, with what is known).
    """

    key: str
    directory: str | None
    checkpoint: str | None  # the file Reopen and Compare use (a folder's latest.ckpt), None before one exists
    name: str
    dataset: str = ""
    status: str | None = None  # the last status event ("started", "finished", ...); None without one
    epochs: int = 0
    beta: float | None = None
    latent_dim: int | None = None
    elbo: float | None = None  # held-out ELBO of the last epoch, nats per example
    updated: float | None = None  # Unix time of the newest event (a checkpoint: its file's modification time)
    error: str | None = None

    @property
    def is_folder(self) -> bool:
        return self.directory is not None

    @property
    def path(self) -> str:
        """The folder, or the file: what the row's tooltip names."""
        return self.directory if self.directory is not None else self.key

    def status_text(self) -> str:
        if self.error is not None:
            return "unreadable"
        if self.directory is None:
            return "checkpoint"
        if self.status is None:
            return "no status yet"
        return STATUS_TEXT.get(self.status, self.status)


def same_path(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    return os.path.normcase(os.path.abspath(a)) == os.path.normcase(os.path.abspath(b))


def is_run_folder(path: str | os.PathLike) -> bool:
    """A folder holding a run's ``config.json`` or ``events.jsonl``."""
    return os.path.isdir(path) and any(os.path.isfile(os.path.join(path, f)) for f in RUN_FILES)


def run_folder_of(checkpoint: str | os.PathLike) -> str | None:
    """The run folder whose ``latest.ckpt`` ``checkpoint`` is, None for any other file."""
    path = os.path.abspath(checkpoint)
    if os.path.basename(path) != LATEST_CHECKPOINT:
        return None
    folder = os.path.dirname(path)
    return folder if is_run_folder(folder) else None


def _float(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) != float("inf") else None


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _why(exc: Exception) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)


def summarize_run(directory: str | os.PathLike) -> RunSummary:
    """The Runs panel's row of a run folder (reads the whole folder: call it off the GUI thread).

    Beta is the training config's, or the newest live change of it; the
    ELBO is the last epoch event's held-out figure.  Raises FileNotFoundError
    when ``directory`` is no run folder.
    """
    from vae_core.runs import read_run

    folder = os.path.abspath(directory)
    record = read_run(folder)
    config = record.config or {}
    model = config.get("model_config") if isinstance(config.get("model_config"), dict) else {}
    train = config.get("train_config") if isinstance(config.get("train_config"), dict) else {}
    data = config.get("dataset") if isinstance(config.get("dataset"), dict) else {}
    beta = _float(train.get("beta"))
    epochs, elbo = 0, None
    for ev in record.events:
        kind = ev.get("kind")
        if kind == "epoch":
            epoch = _int(ev.get("epoch"))
            if epoch is not None and epoch >= epochs:
                epochs, elbo = epoch, _float(ev.get("test_elbo"))
        elif kind == "change" and ev.get("name") == "beta":
            beta = _float(ev.get("new"))
    updated = record.updated
    if updated is None:
        times = [t for t in (_mtime(os.path.join(folder, f)) for f in RUN_FILES) if t is not None]
        updated = max(times, default=None)
    error = None if record.config is not None else f"{os.path.join(folder, RUN_FILES[0])} is missing or unreadable"
    return RunSummary(key=folder, directory=folder,
                      checkpoint=None if record.checkpoint is None else str(record.checkpoint),
                      name=record.name, dataset=str(data.get("name", "")), status=record.status,
                      epochs=epochs, beta=beta, latent_dim=_int(model.get("latent_dim")), elbo=elbo,
                      updated=updated, error=error)


def _mtime(path: str) -> float | None:
    try:
        return os.stat(path).st_mtime
    except OSError:
        return None


def checkpoint_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """A checkpoint's Latent Explorer metadata, read from its header alone (not its weights).

    Raises CheckpointError naming the file and the problem.
    """
    import json

    from vae_core.checkpoint import FORMAT, METADATA_KEY
    from vae_core.errors import CheckpointError

    try:
        with open(path, "rb") as f:
            head = f.read(8)
            n = int.from_bytes(head, "little") if len(head) == 8 else 0
            if not 0 < n <= 256 * 1024 * 1024:
                raise CheckpointError(f"cannot open checkpoint {path}: not a safetensors file (no valid header)")
            raw = f.read(n)
    except OSError as exc:
        raise CheckpointError(f"cannot open checkpoint {path}: {_why(exc)}") from exc
    try:
        header = json.loads(raw.decode("utf-8"))
        meta = json.loads(header["__metadata__"][METADATA_KEY])
    except (UnicodeDecodeError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"cannot open checkpoint {path}: not a Latent Explorer checkpoint "
                              f"(its header has no readable Latent Explorer metadata)") from exc
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"cannot open checkpoint {path}: not a Latent Explorer checkpoint (unknown metadata format)")
    return meta


def summarize_checkpoint(path: str | os.PathLike, name: str | None = None) -> RunSummary:
    """The Runs panel's row of a checkpoint file without a run folder (its header only; off the GUI thread).

    A file that cannot be read gives a row with ``error`` set.
    """
    from vae_core.errors import CheckpointError

    file = os.path.abspath(path)
    shown = name or os.path.splitext(os.path.basename(file))[0]
    updated = _mtime(file)
    try:
        meta = checkpoint_metadata(file)
    except CheckpointError as exc:
        return RunSummary(key=file, directory=None, checkpoint=file, name=shown, updated=updated, error=str(exc))
    model = meta.get("model_config") if isinstance(meta.get("model_config"), dict) else {}
    train = meta.get("train_config") if isinstance(meta.get("train_config"), dict) else {}
    data = meta.get("dataset") if isinstance(meta.get("dataset"), dict) else {}
    history = meta.get("history") if isinstance(meta.get("history"), dict) else {}
    epochs = [e for e in history.get("epochs") or [] if isinstance(e, dict)]
    return RunSummary(key=file, directory=None, checkpoint=file, name=shown, dataset=str(data.get("name", "")),
                      epochs=_int(meta.get("epoch")) or 0, beta=_float(train.get("beta")),
                      latent_dim=_int(model.get("latent_dim")),
                      elbo=_float(epochs[-1].get("test_elbo")) if epochs else None, updated=updated)


@dataclass(frozen=True)
class RunListing:
    """What the Runs panel reads on its worker: every row, newest first, and the remembered paths that are gone."""

    runs: list[RunSummary]
    gone: list[str]
    error: str | None = None  # the runs folder could not be listed: why


class RunLister:
    """Reads the Runs panel's rows; a folder or file unchanged since the last listing is not read again.

    Use one instance from one thread at a time (the panel's worker).
    """

    def __init__(self) -> None:
        self._cache: dict[tuple[str, str | None], tuple[Any, RunSummary]] = {}  # (path, kind): (signature, row)

    @staticmethod
    def _signature(paths: Iterable[str]) -> tuple:
        sig = []
        for p in paths:
            try:
                st = os.stat(p)
                sig.append((st.st_size, st.st_mtime_ns, st.st_ino))
            except OSError:
                sig.append(None)
        return tuple(sig)

    def _folder(self, folder: str) -> RunSummary:
        sig = self._signature([os.path.join(folder, f) for f in (*RUN_FILES, LATEST_CHECKPOINT)])
        hit = self._cache.get((folder, None))
        if hit is not None and hit[0] == sig:
            return hit[1]
        summary = summarize_run(folder)
        self._cache[(folder, None)] = (sig, summary)
        return summary

    def _file(self, file: str) -> RunSummary:
        sig = self._signature([file])
        hit = self._cache.get((file, file))
        if hit is not None and hit[0] == sig:
            return hit[1]
        summary = summarize_checkpoint(file)
        self._cache[(file, file)] = (sig, summary)
        return summary

    def list(self, root: str | None, extras: Iterable[str]) -> RunListing:
        """The run folders of ``root`` and the remembered ``extras`` (run folders or checkpoint files).

        A remembered path that no longer exists is left out and reported in
        ``gone``; a run folder's ``latest.ckpt`` stands for that folder.
        """
        rows: dict[str, RunSummary] = {}
        error = None
        folders: list[str] = []
        if root is not None and os.path.exists(root):
            try:
                os.listdir(root)
            except OSError as exc:
                error = f"Cannot list the runs in {root}: {_why(exc)}"
            else:
                folders = [str(p) for _, p in _newest_first(Path(root))]
        gone: list[str] = []
        files: list[str] = []
        for path in extras:
            full = os.path.abspath(path)
            if is_run_folder(full):
                folders.append(full)
            elif os.path.isfile(full):
                files.append(full)
            else:
                gone.append(path)
        for file in files:
            folder = run_folder_of(file)
            if folder is not None:
                folders.append(folder)
            elif os.path.normcase(file) not in rows:
                rows[os.path.normcase(file)] = self._file(file)
        for folder in folders:
            folder = os.path.abspath(folder)
            key = os.path.normcase(folder)
            if key in rows:
                continue
            try:
                rows[key] = self._folder(folder)
            except OSError as exc:  # removed meanwhile, or unreadable
                if os.path.exists(folder):
                    rows[key] = RunSummary(key=folder, directory=folder, checkpoint=None,
                                           name=os.path.basename(folder), error=f"Cannot read {folder}: {_why(exc)}")
        live = set(rows)
        self._cache = {k: v for k, v in self._cache.items() if os.path.normcase(k[0]) in live}
        ordered = sorted(rows.values(), key=lambda r: r.updated if r.updated is not None else 0.0, reverse=True)
        return RunListing(ordered, gone, error)


#: The files a run writes (``vae_core.runs``): its config, its events, checkpoints, and the temporary
#: files of atomic writes (``.latest.ckpt.x1y2.tmp``) and the config's lock file (``.config.json.lock``)
#: a killed writer may leave.
_RUN_WRITES = re.compile(r"^(config\.json|events\.jsonl|[^/]*\.ckpt|\..+\.tmp|\.config\.json\.lock)$")
#: ``vae_core.runs.FORMAT``: the ``format`` of a run's config.json.
RUN_FORMAT = "latent-explorer-run"


def _written_by_a_run(folder: str) -> bool:
    """The folder's config.json is a run's (its ``format``), or without one its events.jsonl starts with an event."""
    import json

    config = os.path.join(folder, RUN_FILES[0])
    if os.path.isfile(config):
        try:
            with open(config, encoding="utf-8") as f:
                loaded = json.load(f)
        except (OSError, ValueError):
            return False
        return isinstance(loaded, dict) and loaded.get("format") == RUN_FORMAT
    try:
        with open(os.path.join(folder, RUN_FILES[1]), encoding="utf-8") as f:
            first = next((line for line in f if line.strip()), "")
        event = json.loads(first)
    except (OSError, ValueError):
        return False
    return isinstance(event, dict) and "kind" in event


def delete_run_folder(directory: str | os.PathLike) -> None:
    """Delete a run folder and everything in it; refuses (ValueError) anything else.

    Only a folder that a run wrote is deleted: its config.json is a run's
    (or, without one, its events.jsonl holds run events), and it holds
    nothing but what a run writes (config, events, checkpoints, temporary
    files of atomic writes).  A folder with other files or subfolders in it
    is refused, naming them, so that a mistaken runs folder never costs a
    user their files.  Raises OSError (naming the path that could not be
    removed) when the file system refuses; what was removed before stays
    removed.
    """
    import shutil

    folder = os.path.abspath(directory)
    if not is_run_folder(folder) or not _written_by_a_run(folder):
        raise ValueError(f"{folder} is not a run folder (it has no run's {' or '.join(RUN_FILES)}); "
                         "nothing was deleted")
    try:
        entries = sorted(os.listdir(folder))
    except OSError as exc:
        raise OSError(exc.errno, f"cannot read {folder}: {_why(exc)}") from exc
    foreign = [n for n in entries if not (_RUN_WRITES.match(n) and os.path.isfile(os.path.join(folder, n)))]
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise ValueError(f"{folder} holds files a run does not write ({shown}); nothing was deleted. "
                         "Remove the folder yourself if you mean to.")

    def failed(_fn: Any, path: str, exc: Any) -> None:
        err = exc[1] if isinstance(exc, tuple) else exc
        raise OSError(getattr(err, "errno", None), f"cannot remove {path}: {_why(err)}") from err

    if sys.version_info >= (3, 12):
        shutil.rmtree(folder, onexc=failed)
    else:
        shutil.rmtree(folder, onerror=failed)
