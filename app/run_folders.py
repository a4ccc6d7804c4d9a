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

    @property
    def name(self) -> str:
        return os.path.basename(self.directory.rstrip(os.sep)) or self.directory

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
                                None if record.checkpoint is None else str(record.checkpoint)))
    return entries
