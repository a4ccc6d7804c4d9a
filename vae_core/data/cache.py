"""The cache of decoded image folders, so that a folder opened again is memory-mapped instead of decoded.

An entry is three files in :func:`cache_directory`: ``<entry>.images.npy``
(the decoded images, (N, C, H, W) uint8 or float32), ``<entry>.labels.npy``
(when the folder has labels) and ``<entry>.json``, a small manifest written
last.  The entry name joins a hash of the folder's path with a hash of its
list of image files, their sizes and modification times and the load
options (image size, colour), so any change to the folder gives another
entry; older entries of the same folder and options are then removed.  Every
file is written under a temporary name and renamed into place, and an entry
is used only when its manifest and arrays agree, so an interrupted write or
a damaged file is ignored and rebuilt.
"""

from __future__ import annotations

import glob
import hashlib
import json
import os
import tempfile
from typing import Any

import numpy as np

#: Environment variable naming the cache folder (overrides the default).
CACHE_ENV = "LATENT_EXPLORER_CACHE"
_VERSION = 1


def cache_directory() -> str:
    """``$LATENT_EXPLORER_CACHE``, else ``$XDG_CACHE_HOME/latent-explorer``, else ``~/.cache/latent-explorer``."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return os.path.abspath(os.path.expanduser(env))
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(os.path.abspath(base), "latent-explorer")


class FolderCache:
    """The cache entry of one folder's image files loaded with some options.

    ``files`` are the image paths in load order.  The files are stat-ed here;
    when one cannot be (it vanished meanwhile) ``key`` is None and nothing is
    looked up or stored.
    """

    def __init__(self, root: str, files: list[str], options: dict[str, Any]) -> None:
        self.directory: str = cache_directory()
        self.root: str = os.path.abspath(root)
        self.count: int = len(files)
        where = json.dumps({"version": _VERSION, "root": self.root, "options": options}, sort_keys=True)
        self._prefix: str = "folder-" + hashlib.sha256(where.encode("utf-8", "surrogateescape")).hexdigest()[:16]
        self.key: str | None = self._content_key(files)

    def _content_key(self, files: list[str]) -> str | None:
        digest = hashlib.sha256()
        for path in files:
            try:
                st = os.stat(path)
            except OSError:
                return None
            rel = os.path.relpath(path, self.root)
            digest.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode("utf-8", "surrogateescape"))
        return f"{self._prefix}-{digest.hexdigest()[:32]}"

    def _path(self, suffix: str) -> str:
        return os.path.join(self.directory, f"{self.key}{suffix}")

    def load(self) -> tuple[np.ndarray, np.ndarray | None, dict[str, Any]] | None:
        """(memory-mapped images, labels or None, manifest) of a complete, consistent entry, else None."""
        if self.key is None:
            return None
        try:
            with open(self._path(".json"), encoding="utf-8") as f:
                meta = json.load(f)
            if meta.get("version") != _VERSION or meta.get("key") != self.key or meta.get("count") != self.count:
                return None
            images = np.load(self._path(".images.npy"), mmap_mode="r", allow_pickle=False)
            if list(images.shape) != list(meta["shape"]) or images.dtype.str != meta["dtype"]:
                return None
            if images.ndim != 4 or images.shape[0] != self.count:
                return None
            labels = None
            if meta.get("labels"):
                labels = np.load(self._path(".labels.npy"), allow_pickle=False)
                if labels.shape != (self.count,) or labels.dtype != np.int64:
                    return None
            return images, labels, meta
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def store(self, images: np.ndarray, labels: np.ndarray | None, meta: dict[str, Any]) -> np.ndarray:
        """Write the entry (images, labels and ``meta`` plus the bookkeeping) and return the images memory-mapped.

        Raises OSError when the cache cannot be written (no space, no rights).
        """
        if self.key is None:
            raise OSError("the folder changed while it was read")
        os.makedirs(self.directory, exist_ok=True)
        self._write(".images.npy", lambda f: np.lib.format.write_array(f, np.ascontiguousarray(images),
                                                                        allow_pickle=False))
        if labels is not None:
            self._write(".labels.npy", lambda f: np.lib.format.write_array(f, np.asarray(labels, dtype=np.int64),
                                                                           allow_pickle=False))
        manifest = {
            **meta,
            "version": _VERSION,
            "key": self.key,
            "root": self.root,
            "count": self.count,
            "shape": list(images.shape),
            "dtype": np.dtype(images.dtype).str,
            "labels": labels is not None,
        }
        self._write(".json", lambda f: f.write(json.dumps(manifest).encode("utf-8")))
        self._remove_stale()
        return np.load(self._path(".images.npy"), mmap_mode="r", allow_pickle=False)

    def _write(self, suffix: str, write: Any) -> None:
        fd, tmp = tempfile.mkstemp(prefix=f".{self.key}", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, self._path(suffix))
        except BaseException:
            try:
                os.unlink(tmp)
            except OSError:
                pass
            raise

    def _remove_stale(self) -> None:
        """Delete the entries of this folder and options for other contents (they keep one entry)."""
        for path in glob.glob(os.path.join(glob.escape(self.directory), f"{self._prefix}-*")):
            if not os.path.basename(path).startswith(f"{self.key}."):
                try:
                    os.unlink(path)
                except OSError:
                    pass
