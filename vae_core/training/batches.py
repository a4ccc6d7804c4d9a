"""A dataset's stored images served as float32 batches on the training device, one batch at a time.

The images stay as the dataset stores them (uint8 grey levels, or float32
values; in memory or memory-mapped from a file) and only the rows of a batch
are converted: uint8 / 255, floats clipped to [0, 1], the arithmetic of
``vae_core.data.to_float``.  Where they are read from depends on the device:

* on the CPU, the stored array itself, through a tensor that shares its
  memory (a memory map stays a memory map);
* on a GPU, when they fit in ``GPU_SHARE`` of its free memory, a copy
  uploaded once, as stored (uint8 stays uint8), from which batches are
  gathered on the GPU;
* on a GPU otherwise, rows gathered on the CPU into page-locked (pinned)
  staging buffers and copied to the GPU asynchronously; two buffers take
  turns, and each is refilled only once its previous copy has finished.
"""

from __future__ import annotations

import warnings
from typing import Callable

import numpy as np
import torch

#: Share of the free GPU memory the images may take to be uploaded whole.
GPU_SHARE = 0.5
# Bytes per piece when uploading the images to a GPU.
_UPLOAD_BYTES = 1 << 26


def host_tensor(images: np.ndarray) -> torch.Tensor:
    """A CPU tensor sharing the memory of stored images (uint8 kept; other dtypes become one float32 copy).

    The engine never writes to it, so read-only and memory-mapped arrays are
    used as they are, and strided views (a transposed or broadcast array)
    keep their strides.
    """
    arr = np.asarray(images)
    if arr.dtype not in (np.uint8, np.float32) or not arr.dtype.isnative:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "the given NumPy array is not writable"
        return torch.from_numpy(arr)


def to_float_tensor(raw: torch.Tensor) -> torch.Tensor:
    """float32 pixel values in [0, 1] of a batch of stored images, as a new tensor (uint8 / 255, floats clipped)."""
    if raw.dtype == torch.uint8:
        return raw.float().div_(255.0)
    return raw.float().clamp(0.0, 1.0)


def fits_on_gpu(nbytes: int, device: torch.device) -> bool:
    """Whether ``nbytes`` of images fit in ``GPU_SHARE`` of the free memory of a CUDA device."""
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= GPU_SHARE * free


class DeviceImages:
    """Stored images (N, C, H, W) read as float32 batches on ``device`` (see the module docstring).

    ``resident`` forces the images onto the device (True) or off it (False;
    batches are then staged through host buffers); None decides: always on
    the CPU, on a GPU when they fit.  ``pin`` pins the staging buffers (the
    default on a GPU).  ``index_device`` is where row indices are best kept
    for :meth:`gather`.
    """

    def __init__(
        self,
        images: np.ndarray,
        device: torch.device,
        *,
        resident: bool | None = None,
        pin: bool | None = None,
    ) -> None:
        self.device: torch.device = device
        self._host: torch.Tensor = host_tensor(images)
        self.shape: tuple[int, ...] = tuple(int(s) for s in self._host.shape)
        nbytes = self._host.numel() * self._host.element_size()
        if resident is None:
            resident = device.type == "cpu" or fits_on_gpu(nbytes, device)
        self.resident: bool = bool(resident)
        self._data: torch.Tensor = self._upload() if self.resident and device.type != "cpu" else self._host
        self.index_device: torch.device = device if self.resident else torch.device("cpu")
        self._pin: bool = device.type == "cuda" if pin is None else bool(pin)
        self._buffers: list[torch.Tensor | None] = [None, None]
        self._copied: list[torch.cuda.Event | None] = [None, None]
        self._turn: int = 0

    def _upload(self) -> torch.Tensor:
        """The images copied to the device as stored, a piece at a time (no host copy of the whole array)."""
        out = torch.empty(self.shape, dtype=self._host.dtype, device=self.device)
        per = max(1, _UPLOAD_BYTES // max(1, int(np.prod(self.shape[1:])) * self._host.element_size()))
        for start in range(0, self.shape[0], per):
            out[start : start + per].copy_(self._host[start : start + per])
        return out

    def gather(self, rows: torch.Tensor) -> torch.Tensor:
        """float32 (len(rows), C, H, W) batch of the images at ``rows`` (int64 indices), on the device."""
        if self.resident:
            return to_float_tensor(self._data.index_select(0, rows.to(self._data.device)))
        return to_float_tensor(self._stage(rows.to("cpu")))

    def _stage(self, rows: torch.Tensor) -> torch.Tensor:
        """Gather ``rows`` into the next staging buffer and start its copy to the device."""
        k = self._turn
        self._turn = 1 - k
        n = int(rows.numel())
        event = self._copied[k]
        if event is not None:
            event.synchronize()  # the buffer's last copy has finished: it may be overwritten
        buf = self._buffers[k]
        if buf is None or buf.shape[0] < n:
            buf = torch.empty((n, *self.shape[1:]), dtype=self._host.dtype, pin_memory=self._pin)
            self._buffers[k] = buf
        part = buf[:n]
        torch.index_select(self._host, 0, rows, out=part)
        out = part.to(self.device, non_blocking=self._pin)
        if self.device.type == "cuda":
            done = torch.cuda.Event()
            done.record()
            self._copied[k] = done
        # On the CPU ``out`` is the buffer itself; ``gather`` converts it into
        # a new tensor before the buffer is used again.
        return out


class ImageSplit:
    """Some rows of a :class:`DeviceImages` in a fixed order: a split that is read a batch at a time.

    It stands in for a tensor of the split's images where evaluation and
    encoding read them (``x.shape``, ``x.device``, ``x[s:e]``), without ever
    holding more than a batch as floats.  ``rows`` (int64, dataset order)
    None means every image in order.  With ``binarize``, a function giving
    the generator for the batch starting at position ``s``, each batch is a
    Bernoulli sample of its grey levels; reading the same slices again gives
    the same binary images.
    """

    def __init__(
        self,
        images: DeviceImages,
        rows: torch.Tensor | None = None,
        binarize: Callable[[int], torch.Generator] | None = None,
    ) -> None:
        self.images: DeviceImages = images
        n = images.shape[0] if rows is None else int(rows.numel())
        if rows is None:
            rows = torch.arange(n, dtype=torch.int64)
        self.rows: torch.Tensor = rows.to(images.index_device)
        self.shape: tuple[int, ...] = (n, *images.shape[1:])
        self._binarize = binarize

    @property
    def device(self) -> torch.device:
        return self.images.device

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key: slice) -> torch.Tensor:
        if not isinstance(key, slice):
            raise TypeError(f"an ImageSplit is read by slices, got {type(key).__name__}")
        start, stop, step = key.indices(self.shape[0])
        if step != 1:
            raise ValueError("an ImageSplit is read by contiguous slices")
        x = self.images.gather(self.rows[start:stop])
        if self._binarize is not None:
            x = torch.bernoulli(x, generator=self._binarize(start))
        return x

    def gather(self, positions: torch.Tensor) -> torch.Tensor:
        """float32 batch of the split's images at ``positions`` (int64 positions within the split)."""
        return self.images.gather(self.rows.index_select(0, positions.to(self.rows.device)))
