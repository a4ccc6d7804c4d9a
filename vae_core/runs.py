"""Run folders: what a training run writes as it goes, so that it can be followed live from anywhere and listed later.

A run folder holds three kinds of file, and nothing else is needed to follow it:

* ``config.json``: ``{"format": "latent-explorer-run", "format_version": 1,
  "created", "updated" (ISO times), "model_config", "train_config",
  "dataset" (spec, name, label names, image shape, number of examples),
  "world_size", "ranks"}`` and, once the run is named (``set_run_name``),
  ``"name"``; written atomically whenever the run starts (keeping the name).
  Every rewrite (``RunWriter.start``, ``set_run_name``) reads and replaces
  it while holding an advisory lock on ``.config.json.lock`` beside it, so
  that a rename landing while a run starts is not lost; the lock file is
  removed when it is released.
* ``events.jsonl``: one JSON object a line, appended as the run goes, each
  line written whole and flushed (and synced to disk for epochs and status
  changes).  Every object has ``kind`` and ``time`` (Unix seconds):

  - ``status``: ``status`` ("started", then "paused", "resumed", "stopped",
    "finished" or "diverged"), ``message``, ``step``; "started" also gives
    ``epoch``, ``world_size``, ``ranks`` (rank, host, pid, device of each
    process), ``restart`` (how many times the launcher restarted the group)
    and ``resumed_from`` (the checkpoint it continued, or null);
  - ``batch``: a summary of the ``steps`` batches since the previous one
    (at most one every ``batch_interval_s``): ``step``, ``epoch``, ``batch``
    and ``n_batches`` of the last, ``recon``, ``kl`` and ``loss`` averaged
    over those batches (nats per example), ``beta``, ``lr`` and
    ``samples_per_s`` of the last;
  - ``epoch``: the figures of ``training.EpochEvent`` without the latents,
    and ``checkpoint`` (the file holding that epoch, "latest.ckpt") and
    ``kept`` (its ``epoch-NNNN.ckpt`` copy, or null);
  - ``change``: a setting changed at ``step``: ``name``, ``old``, ``new``.

  Numbers that are not finite are written as null.
* ``latest.ckpt``: the newest checkpoint, replaced atomically (written
  under a temporary name, then renamed) after every epoch and when the run
  stops; with ``keep`` K > 0 also ``epoch-0007.ckpt`` for the last K epochs.

``RunWriter`` writes a folder, ``RunFollower`` polls one (as a window does,
possibly over NFS, sshfs or a synced folder), ``read_run`` reads one whole.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import errno
import json
import math
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from .checkpoint import Checkpoint, atomic_write_bytes, checkpoint_bytes, checkpoint_from_bytes, dataset_record
from .errors import CheckpointError, ConfigError

FORMAT = "latent-explorer-run"
FORMAT_VERSION = 1
CONFIG = "config.json"
EVENTS = "events.jsonl"
LATEST = "latest.ckpt"
_EPOCH_FILE = re.compile(r"^epoch-(\d+)\.ckpt$")
#: The advisory lock file of a folder's config.json (present only while a writer holds it).
CONFIG_LOCK = ".config.json.lock"
#: How long a writer of config.json waits for another one's lock before it gives up (seconds).
LOCK_TIMEOUT_S = 10.0
_LOCK_POLL_S = 0.01

try:  # POSIX: an flock is dropped by the kernel when its holder dies, even on kill -9
    import fcntl
except ImportError:  # pragma: no cover - Windows: msvcrt's byte locks end with their process too
    fcntl = None  # type: ignore[assignment]
    import msvcrt

#: errno values of a file system that has no locks (some network mounts): writers go on without one.
_NO_LOCKS = {getattr(errno, n) for n in ("ENOLCK", "EOPNOTSUPP", "ENOTSUP", "ENOSYS", "EINVAL") if hasattr(errno, n)}


def epoch_checkpoint_name(epoch: int) -> str:
    """The name of the kept checkpoint of ``epoch``: ``epoch-0007.ckpt``."""
    return f"epoch-{int(epoch):04d}.ckpt"


def _now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _plain(value: Any) -> Any:
    """``value`` as JSON types: numpy numbers and arrays to Python ones, non-finite floats to None."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    return str(value)


def _epoch_files(directory: Path) -> list[tuple[int, Path]]:
    """The kept epoch checkpoints of a folder as (epoch, path), oldest first."""
    found = []
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    for name in names:
        m = _EPOCH_FILE.match(name)
        if m:
            found.append((int(m.group(1)), directory / name))
    return sorted(found)


def _try_lock(fd: int) -> bool:
    """Lock ``fd`` exclusively without waiting: True when locked, False when another holder has it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True
    os.lseek(fd, 0, os.SEEK_SET)  # pragma: no cover - Windows
    try:  # pragma: no cover - Windows
        msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
    except OSError as exc:  # pragma: no cover - Windows
        if exc.errno in (errno.EACCES, getattr(errno, "EDEADLOCK", errno.EDEADLK)):
            return False
        raise
    return True  # pragma: no cover - Windows


def _unlock(fd: int) -> None:
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return
    os.lseek(fd, 0, os.SEEK_SET)  # pragma: no cover - Windows
    msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)  # pragma: no cover - Windows


def _is_the_file_at(fd: int, path: Path) -> bool:
    """``fd`` is still the file ``path`` names (a holder releasing the lock removes the file)."""
    try:
        st_path = os.stat(path)
    except FileNotFoundError:
        return False
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (st_path.st_dev, st_path.st_ino)


@contextlib.contextmanager
def config_lock(directory: str | os.PathLike) -> Iterator[None]:
    """Hold the advisory lock of ``directory``'s config.json (``CONFIG_LOCK``) while the block runs.

    Every read-modify-write of a run's config.json happens under it, across
    threads and processes.  A holder that dies releases it (the system drops
    its lock) and the file it leaves is taken over; a holder that keeps it
    longer than ``LOCK_TIMEOUT_S`` makes this raise OSError (ETIMEDOUT)
    naming the lock file.  On a file system without locks the block runs
    without one.  The holder removes the file as it releases the lock; one
    waiting on the removed file sees that and locks the new one instead.
    Raises OSError when the lock file cannot be created.
    """
    path = Path(directory) / CONFIG_LOCK
    deadline = time.monotonic() + LOCK_TIMEOUT_S
    held: int | None = None
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _try_lock(fd)
        except OSError as exc:
            os.close(fd)
            if exc.errno in _NO_LOCKS:
                break
            raise
        if locked and _is_the_file_at(fd, path):
            held = fd
            break
        if locked:
            _unlock(fd)
        os.close(fd)
        if time.monotonic() >= deadline:
            raise OSError(errno.ETIMEDOUT, f"{path} is held by another writer of {CONFIG} for more than "
                                           f"{LOCK_TIMEOUT_S:g} s; {CONFIG} was not changed")
        time.sleep(_LOCK_POLL_S)
    try:
        yield
    finally:
        if held is not None:
            _release(held, path)


def _release(fd: int, path: Path) -> None:
    if fcntl is not None:
        # Removed while still locked: a waiter that opened it finds it gone once it gets the lock.
        with contextlib.suppress(OSError):
            os.unlink(path)
        try:
            _unlock(fd)
        finally:
            os.close(fd)
        return
    try:  # pragma: no cover - Windows: an open file cannot be removed, so it goes after closing
        _unlock(fd)
    finally:
        os.close(fd)
    with contextlib.suppress(OSError):  # pragma: no cover - Windows: another writer has it open
        os.unlink(path)


def _config_bytes(config: dict[str, Any]) -> bytes:
    return (json.dumps(_plain(config), indent=2) + "\n").encode("utf-8")


class RunWriter:
    """Writes the run folder of one trainer's run (see the module docstring).

    Call ``start`` once the trainer is ready, ``record`` with every event
    its ``run()`` yields, from the thread that runs it (an epoch event saves
    the checkpoints, which needs the trainer idle), and ``finish`` when the
    run ends (it saves ``latest.ckpt`` unless it already holds the trainer's
    state, and closes the file).  ``keep`` > 0 also keeps the last ``keep``
    epochs' checkpoints.  Raises OSError when the folder cannot be written
    and CheckpointError when a checkpoint cannot.
    """

    def __init__(self, directory: str | os.PathLike, trainer: Any, keep: int = 0, batch_interval_s: float = 0.5) -> None:
        if keep < 0:
            raise ConfigError(f"keep must be >= 0, got {keep}")
        self.directory: Path = Path(directory)
        self.trainer: Any = trainer
        self.keep: int = int(keep)
        self.batch_interval_s: float = float(batch_interval_s)
        self.directory.mkdir(parents=True, exist_ok=True)
        self._events = open(self.directory / EVENTS, "ab")
        # Batches not yet summarised: count, sums of recon, kl, loss, and the last event.
        self._pending: int = 0
        self._sums: list[float] = [0.0, 0.0, 0.0]
        self._last_batch: Any = None
        self._last_write: float = -math.inf
        #: (epoch, step, number of changes) of the state in latest.ckpt.
        self._saved: tuple[int, int, int] | None = None

    @property
    def latest_path(self) -> Path:
        return self.directory / LATEST

    # -- writing -------------------------------------------------------------
    def _write(self, record: dict[str, Any], sync: bool = False) -> None:
        record = {**record, "time": time.time()}
        line = json.dumps(_plain(record), allow_nan=False, separators=(",", ":")) + "\n"
        self._events.write(line.encode("utf-8"))
        self._events.flush()
        if sync:
            os.fsync(self._events.fileno())

    def _flush_batches(self) -> None:
        if not self._pending:
            return
        ev, k = self._last_batch, self._pending
        recon, kl, loss = (s / k for s in self._sums)
        self._write({
            "kind": "batch", "step": ev.step, "epoch": ev.epoch, "batch": ev.batch, "n_batches": ev.n_batches,
            "steps": k, "recon": recon, "kl": kl, "loss": loss, "beta": ev.beta, "lr": ev.lr,
            "samples_per_s": ev.samples_per_s,
        })
        self._pending = 0
        self._sums = [0.0, 0.0, 0.0]
        self._last_write = time.monotonic()

    def start(self, ranks: list[dict[str, Any]], resumed_from: str | None = None, restart: int = 0) -> None:
        """Write ``config.json`` and the "started" event; ``ranks`` describes every process of the run."""
        t = self.trainer
        config_path = self.directory / CONFIG
        config = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "created": _now_iso(),
            "updated": _now_iso(),
            "model_config": t.model_config.to_dict(),
            "train_config": t.train_config.to_dict(),
            "dataset": dataset_record(t),
            "world_size": len(ranks),
            "ranks": ranks,
        }
        # The previous config's creation time and name are read and the new one written under the
        # lock, so that a rename (set_run_name) in between is carried over rather than lost.
        with config_lock(self.directory):
            try:
                previous = json.loads(config_path.read_text(encoding="utf-8"))
                config["created"] = str(previous.get("created", config["created"]))
                name = previous.get("name")
            except (OSError, ValueError, AttributeError):
                name = None
            if isinstance(name, str) and name.strip():
                config["name"] = name
            atomic_write_bytes(config_path, _config_bytes(config))
        where = f"{len(ranks)} process{'es' if len(ranks) != 1 else ''}"
        if resumed_from is None:
            message = f"started on {where}"
        else:
            message = f"continued {resumed_from} at epoch {t.epoch}, step {t.step}, on {where}"
        self._write({
            "kind": "status", "status": "started", "message": message, "step": t.step, "epoch": t.epoch,
            "world_size": len(ranks), "ranks": ranks, "restart": int(restart), "resumed_from": resumed_from,
        }, sync=True)

    def record(self, ev: Any) -> None:
        """Log one event of the trainer's ``run()``; an epoch event first saves that epoch's checkpoints."""
        kind = ev.kind
        if kind == "batch":
            self._pending += 1
            self._sums[0] += ev.recon
            self._sums[1] += ev.kl
            self._sums[2] += ev.loss
            self._last_batch = ev
            if time.monotonic() - self._last_write >= self.batch_interval_s:
                self._flush_batches()
            return
        self._flush_batches()
        if kind == "epoch":
            kept = self.save(epoch_end=True)
            self._write({
                "kind": "epoch", "epoch": ev.epoch, "step": ev.step, "train_loss": ev.train_loss,
                "test_elbo": ev.test_elbo, "test_recon": ev.test_recon, "test_kl": ev.test_kl,
                "active_units": ev.active_units, "kl_per_dim": ev.kl_per_dim, "seconds": ev.seconds,
                "checkpoint": LATEST, "kept": None if kept is None else kept.name,
            }, sync=True)
        elif kind == "change":
            self._write({"kind": "change", "step": ev.step, "name": ev.name, "old": ev.old, "new": ev.new}, sync=True)
        elif kind == "status":
            self._write({"kind": "status", "status": ev.status, "message": ev.message, "step": ev.step}, sync=True)

    def save(self, epoch_end: bool = False) -> Path | None:
        """Replace ``latest.ckpt`` with the trainer's state; at an epoch's end with ``keep`` also keep a copy.

        Returns the kept copy's path (None when none is kept); older copies
        beyond the last ``keep`` are removed.
        """
        t = self.trainer
        data = checkpoint_bytes(t)
        kept = None
        try:
            atomic_write_bytes(self.latest_path, data)
            if epoch_end and self.keep:
                kept = self.directory / epoch_checkpoint_name(t.epoch)
                atomic_write_bytes(kept, data)
                for _, old in _epoch_files(self.directory)[: -self.keep]:
                    old.unlink(missing_ok=True)
        except OSError as exc:
            raise CheckpointError(f"could not write checkpoint in {self.directory}: {exc.strerror or exc}") from exc
        self._saved = (t.epoch, t.step, len(t.history.changes))
        return kept

    def finish(self) -> None:
        """Save ``latest.ckpt`` if the trainer moved on since it was written, then close the events file."""
        t = self.trainer
        try:
            self._flush_batches()
            if self._saved != (t.epoch, t.step, len(t.history.changes)):
                self.save()
        finally:
            self.close()

    def close(self) -> None:
        if not self._events.closed:
            self._events.close()

    def __enter__(self) -> "RunWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


# ---------------------------------------------------------------------------
# Following and reading
# ---------------------------------------------------------------------------


def _read_file(path: Path) -> tuple[bytes, tuple[int, int, int, int]]:
    """A file's bytes and the signature (device, inode, size, mtime) of the very file that was read."""
    with open(path, "rb") as f:
        st = os.fstat(f.fileno())
        return f.read(), (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _signature(path: Path) -> tuple[int, int, int, int] | None:
    """(device, inode, size, mtime) of ``path``, None when it is missing.

    The file is opened rather than stat'ed: on NFS an open revalidates the
    cached attributes (close-to-open consistency), a stat may not.
    """
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


class RunFollower:
    """Polls a run folder that another process (or machine) is writing.

    ``poll()`` returns the events appended since the last poll and, when
    ``latest.ckpt`` is new (another file, size or modification time than the
    last one reported or loaded), its path.  It reads only the bytes
    appended since the last poll; a last line without its newline yet is
    kept until the rest arrives, and a complete line that is not a JSON
    object is skipped (counted in ``skipped_lines``).  When ``events.jsonl``
    is replaced or shrinks (a new run in the same folder) it is read again
    from its start.  ``load_latest()`` loads the checkpoint.
    """

    def __init__(self, directory: str | os.PathLike, retry_delay_s: float = 0.5) -> None:
        self.directory: Path = Path(directory)
        self.retry_delay_s: float = float(retry_delay_s)
        self.skipped_lines: int = 0
        self._offset: int = 0
        self._partial: bytes = b""
        self._events_id: tuple[int, int] | None = None
        self._seen: tuple[int, int, int, int] | None = None

    @property
    def latest_path(self) -> Path:
        return self.directory / LATEST

    def poll(self) -> tuple[list[dict[str, Any]], Path | None]:
        """(events appended since the last poll, path of a new ``latest.ckpt`` or None)."""
        events = self._read_events()
        sig = _signature(self.latest_path)
        if sig is None or sig == self._seen:
            return events, None
        self._seen = sig
        return events, self.latest_path

    def _read_events(self) -> list[dict[str, Any]]:
        try:
            f = open(self.directory / EVENTS, "rb")
        except OSError:
            return []
        with f:
            st = os.fstat(f.fileno())
            ident = (st.st_dev, st.st_ino)
            if ident != self._events_id or st.st_size < self._offset:
                self._events_id, self._offset, self._partial = ident, 0, b""
            if st.st_size == self._offset:
                return []
            f.seek(self._offset)
            data = f.read(st.st_size - self._offset)
        self._offset += len(data)
        data = self._partial + data
        cut = data.rfind(b"\n") + 1
        self._partial = data[cut:]
        events = []
        for line in data[:cut].splitlines():
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                obj = None
            if isinstance(obj, dict):
                events.append(obj)
            else:
                self.skipped_lines += 1
        return events

    def load_latest(self) -> Checkpoint:
        """Load ``latest.ckpt``; when that fails, wait ``retry_delay_s`` and try once more.

        A checkpoint that is being replaced without an atomic rename (a
        synced folder, some network file systems) can be read half-written;
        the second read then finds the complete file.  The file loaded is
        the one ``poll`` compares with from then on.  Raises CheckpointError
        when both reads fail.
        """
        try:
            return self._load_once()
        except CheckpointError:
            time.sleep(self.retry_delay_s)
            return self._load_once()

    def _load_once(self) -> Checkpoint:
        path = self.latest_path
        try:
            data, sig = _read_file(path)
        except OSError as exc:
            raise CheckpointError(f"cannot open checkpoint {path}: {exc.strerror or exc}") from exc
        ckpt = checkpoint_from_bytes(data, path)
        self._seen = sig
        return ckpt


@dataclass(frozen=True)
class RunRecord:
    """A run folder as read by ``read_run``: its config (None when missing or unreadable) and every event."""

    directory: Path
    config: dict[str, Any] | None
    events: list[dict[str, Any]]
    checkpoint: Path | None
    epoch_checkpoints: list[Path]

    @property
    def status(self) -> str | None:
        """The last status the run reported ("started", "finished", ...), None before any."""
        for ev in reversed(self.events):
            if ev.get("kind") == "status":
                return ev.get("status")
        return None

    @property
    def name(self) -> str:
        """The run's name: the ``name`` its config holds (see ``set_run_name``), else the folder's name."""
        value = (self.config or {}).get("name")
        if isinstance(value, str) and value.strip():
            return value.strip()
        return self.directory.name or str(self.directory)

    @property
    def updated(self) -> float | None:
        """Time (Unix seconds) of the newest event, None without events."""
        for ev in reversed(self.events):
            if isinstance(ev.get("time"), (int, float)):
                return float(ev["time"])
        return None


def read_run(directory: str | os.PathLike) -> RunRecord:
    """Read a run folder whole: config, every complete event line, its checkpoints.

    Raises FileNotFoundError when the folder has neither ``config.json`` nor
    ``events.jsonl``.
    """
    path = Path(directory)
    config_path, events_path = path / CONFIG, path / EVENTS
    if not config_path.is_file() and not events_path.is_file():
        raise FileNotFoundError(f"{path} is not a run folder (it has no {CONFIG} or {EVENTS})")
    config: dict[str, Any] | None
    try:
        loaded = json.loads(config_path.read_text(encoding="utf-8"))
        config = loaded if isinstance(loaded, dict) and loaded.get("format") == FORMAT else None
    except (OSError, ValueError):
        config = None
    events, _ = RunFollower(path).poll()
    latest = path / LATEST
    return RunRecord(
        directory=path,
        config=config,
        events=events,
        checkpoint=latest if latest.is_file() else None,
        epoch_checkpoints=[p for _, p in _epoch_files(path)],
    )


def set_run_name(directory: str | os.PathLike, name: str) -> None:
    """Store ``name`` (stripped) as the run's name in its ``config.json``, written atomically.

    Raises ConfigError for an empty name or a folder without a readable
    run config, OSError when the file cannot be written.  A run continued
    later keeps its name (``RunWriter.start`` carries it over).
    """
    text = name.strip() if isinstance(name, str) else ""
    if not text:
        raise ConfigError("a run's name must not be empty")
    path = Path(directory) / CONFIG
    if not path.is_file():
        raise ConfigError(f"{path}: cannot read the run's config (there is no such file)")
    with config_lock(directory):  # read and replaced with no other writer in between (RunWriter.start)
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the run's config ({exc.strerror or exc})") from exc
        except ValueError as exc:
            raise ConfigError(f"{path}: the run's config is not valid JSON ({exc})") from exc
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise ConfigError(f"{path}: not a Latent Explorer run config")
        config["name"] = text
        atomic_write_bytes(path, _config_bytes(config))
