"""Folders of image files (labels from subfolder names) and single image files, decoded with Pillow.

A folder is decoded by a pool of threads (Pillow releases the GIL while it
decodes and resizes), in file order, into one uint8 array (float32 when a
file holds 16-bit grey levels), and the result is kept in the cache of
decoded folders (:mod:`.cache`), so the next open of the unchanged folder is
a memory map.
"""

from __future__ import annotations

import os
import warnings
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Iterator

import numpy as np

from ..errors import DatasetError
from .cache import FolderCache, cache_directory
from .spec import DatasetSpec, ProgressFn, _allocate, _fail, _Loaded, _report

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

#: Largest image (width * height) a folder may hold; larger files are refused
#: before they are decoded (decompression bombs, scanned posters...).
MAX_IMAGE_PIXELS = 8000 * 8000


#: Threads that decode a folder; None means one per CPU core the process may use.
DECODE_THREADS: int | None = None
#: Images decoded by one task of the pool (fewer, larger tasks cost less to hand out).
_FILES_PER_TASK = 32


def _load_folder(root: str, spec: DatasetSpec, progress: ProgressFn | None = None) -> _Loaded:
    notes: list[str] = []
    if spec.labels is not None:
        notes.append("the labels file is ignored for folders: labels come from subfolder names")
    files: list[str] = []
    tops: list[str | None] = []
    skipped = hidden = 0
    unreadable: list[str] = []
    seen_dirs: set[str] = set()

    def on_error(exc: OSError) -> None:
        unreadable.append(getattr(exc, "filename", None) or str(exc))

    for dirpath, dirnames, filenames in os.walk(root, onerror=on_error, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs:  # a symlink loop or a folder linked twice
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        hidden += sum(1 for d in dirnames if d.startswith("."))
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        rel = os.path.relpath(dirpath, root)
        top = None if rel == os.curdir else rel.split(os.sep)[0]
        for fname in sorted(filenames):
            if fname.startswith("."):
                hidden += 1
                continue
            if os.path.splitext(fname)[1].lower() in IMAGE_EXTENSIONS:
                files.append(os.path.join(dirpath, fname))
                tops.append(top)
            else:
                skipped += 1

    if root in unreadable or (not files and unreadable):
        raise _fail(root, "the folder cannot be read")
    if unreadable:
        notes.append(f"could not read {len(unreadable)} folder(s), e.g. {unreadable[0]}")
    if skipped:
        notes.append(f"skipped {skipped} non-image file{'s' if skipped != 1 else ''}")
    if hidden:
        notes.append(f"ignored {hidden} hidden file{'s' if hidden != 1 else ''} or folder{'s' if hidden != 1 else ''}")
    try:
        subdirs = sorted(e.name for e in os.scandir(root) if not e.name.startswith(".") and e.is_dir())
    except OSError:
        subdirs = []
    with_images = set(t for t in tops if t is not None)
    empty = [d for d in subdirs if d not in with_images]
    if empty:
        notes.append(f"ignored {len(empty)} folder{'s' if len(empty) != 1 else ''} without images: {', '.join(empty)}")
    if not files:
        extra = f" (skipped {skipped} non-image files)" if skipped else ""
        raise _fail(root, f"no images found in {root}{extra}; expected {', '.join(IMAGE_EXTENSIONS)} files")
    name = os.path.basename(os.path.normpath(root))
    cache = FolderCache(root, files, {"size": spec.size, "color": spec.color})
    hit = cache.load()
    if hit is not None:
        images, labels, meta = hit
        notes += [str(n) for n in meta.get("notes", [])]
        notes.append(f"the decoded images were read from the cache in {cache_directory()}")
        names = meta.get("label_names")
        _report(progress, 1.0, "opened the cached images")
        return _Loaded(images, labels, None if names is None else [str(v) for v in names], name, None, notes)
    decoded = _load_image_files(files, tops, spec, name=name, root=root, notes=[], progress=progress)
    try:
        decoded.images = cache.store(
            decoded.images, decoded.labels,
            {"notes": decoded.notes, "label_names": decoded.label_names},
        )
    except OSError as exc:
        notes.append(f"the decoded images could not be cached in {cache_directory()} ({exc.strerror or exc})")
    decoded.notes = notes + decoded.notes
    return decoded


def _cpu_count() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _decode_files(paths: list[str], size: int | None, color: str) -> list[tuple[np.ndarray, tuple[int, int]]]:
    return [_decode_image(p, size, color) for p in paths]


def _decode_all(
    files: list[str], size: int | None, color: str
) -> Iterator[tuple[str, tuple[np.ndarray, tuple[int, int]]]]:
    """(path, (image, native (h, w))) for every file in order, decoded by a pool of threads.

    At most a few tasks per thread are in flight, so decoded images do not
    pile up ahead of the consumer.  The first file that fails raises.
    """
    tasks = [files[i : i + _FILES_PER_TASK] for i in range(0, len(files), _FILES_PER_TASK)]
    workers = min(DECODE_THREADS or _cpu_count(), len(tasks))
    if workers <= 1:
        for path in files:
            yield path, _decode_image(path, size, color)
        return
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="decode") as pool:
        pending: deque[tuple[list[str], Future]] = deque()
        upcoming = iter(tasks)
        try:
            for chunk in upcoming:
                pending.append((chunk, pool.submit(_decode_files, chunk, size, color)))
                if len(pending) >= 4 * workers:
                    break
            while pending:
                chunk, future = pending.popleft()
                results = future.result()
                nxt = next(upcoming, None)
                if nxt is not None:
                    pending.append((nxt, pool.submit(_decode_files, nxt, size, color)))
                yield from zip(chunk, results)
        finally:
            for _, future in pending:
                future.cancel()


class _Assembler:
    """Puts decoded images, in load order, into one (N, C, H, W) array, widening it when needed.

    The array starts grey (or RGB when asked for) and uint8; the first colour
    image makes it RGB (the grey ones so far fill all three channels), the
    first 16-bit image makes it float32 in [0, 1].  Each widening is a new
    array allocated after the memory check.
    """

    def __init__(self, n: int, spec: DatasetSpec, root: str) -> None:
        self.n: int = n
        self.spec: DatasetSpec = spec
        self.root: str = root
        self.out: np.ndarray | None = None
        self.count: int = 0
        self.stretched: int = 0
        self._first: tuple[str, tuple[int, int]] | None = None

    def add(self, path: str, arr: np.ndarray, native: tuple[int, int]) -> None:
        if self.spec.size is None:
            shape = (int(arr.shape[0]), int(arr.shape[1]))
            if self._first is None:
                self._first = (path, shape)
            elif shape != self._first[1]:
                (h0, w0), (h1, w1) = self._first[1], shape
                raise _fail(
                    self.root,
                    f"the images differ in size: {self._first[0]} is {w0}x{h0} pixels but {path} is {w1}x{h1}; "
                    "choose an image size to resize them all to",
                )
        elif native[0] != native[1]:
            self.stretched += 1
        out = self._widen(arr)
        value = arr * np.float32(1.0 / 255.0) if out.dtype == np.float32 and arr.dtype == np.uint8 else arr
        dst = out[self.count]
        if value.ndim == 2:
            dst[...] = value  # grey: every channel
        else:
            dst[...] = value.transpose(2, 0, 1)
        self.count += 1

    def _widen(self, arr: np.ndarray) -> np.ndarray:
        channels = 3 if arr.ndim == 3 or self.spec.color == "rgb" else 1
        dtype = np.dtype(np.float32) if arr.dtype != np.uint8 else np.dtype(np.uint8)
        out = self.out
        if out is not None:
            channels = max(channels, out.shape[1])
            if out.dtype == np.float32:
                dtype = out.dtype
            if (channels, dtype) == (out.shape[1], out.dtype):
                return out
        h, w = int(arr.shape[0]), int(arr.shape[1])
        new = _allocate((self.n, channels, h, w), dtype, self.root)
        if out is not None and self.count:
            done = out[: self.count]
            if new.dtype == np.float32 and done.dtype == np.uint8:
                np.multiply(done, np.float32(1.0 / 255.0), out=new[: self.count], casting="unsafe")
            else:
                new[: self.count] = done  # grey broadcast to every channel
        self.out = new
        return new


def _load_image_files(
    files: list[str],
    tops: list[str | None],
    spec: DatasetSpec,
    *,
    name: str,
    root: str,
    notes: list[str],
    progress: ProgressFn | None = None,
) -> _Loaded:
    from PIL import Image

    assembler = _Assembler(len(files), spec, root)
    step = max(1, len(files) // 200)
    # The warning (a very large image) becomes an error, seen by the decoding
    # threads too, and the file is refused; restored when the load ends.
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        for i, (path, (arr, native)) in enumerate(_decode_all(files, spec.size, spec.color)):
            assembler.add(path, arr, native)
            if (i + 1) % step == 0 or i + 1 == len(files):
                _report(progress, (i + 1) / len(files), f"decoding images ({i + 1}/{len(files)})")
    if assembler.stretched:
        k = assembler.stretched
        notes.append(f"{k} non-square image{'s were' if k != 1 else ' was'} stretched to a square")
    images = assembler.out
    assert images is not None  # at least one file

    labels = label_names = None
    if any(t is not None for t in tops):
        label_names = sorted(set(t for t in tops if t is not None))
        index = {t: k for k, t in enumerate(label_names)}
        labels = np.array([index[t] if t is not None else -1 for t in tops], dtype=np.int64)
        loose = sum(1 for t in tops if t is None)
        if loose:
            notes.append(
                f"{loose} image{'s' if loose != 1 else ''} directly in {root} "
                f"{'have' if loose != 1 else 'has'} no label (-1)"
            )
    return _Loaded(images, labels, label_names, name, None, notes)


def _decode_image(path: str, size: int | None, color: str) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode one image: (uint8 or float32 array (H, W) grey or (H, W, 3) colour, native (h, w)).

    Transparent images are composited onto black (transparent areas become
    black, as the background of MNIST-like data), not merely stripped of their
    alpha channel.  Animated images give their first frame.  With "auto"
    colour, an RGB image whose three channels are identical counts as grey.
    """
    from PIL import Image

    try:
        img = Image.open(path)
    except Image.DecompressionBombError as exc:
        raise _fail(path, f"the image is too large to load safely ({exc})") from None
    except Image.DecompressionBombWarning as exc:
        raise _fail(path, f"the image is too large to load safely ({exc})") from None
    except OSError as exc:
        if isinstance(exc, Image.UnidentifiedImageError) or not getattr(exc, "strerror", None):
            raise _fail(path, "cannot be decoded as an image (it is corrupt or not an image)") from None
        raise _fail(path, f"cannot be read ({exc.strerror})") from None
    except Exception as exc:  # PIL raises many kinds of error on malformed headers
        raise _fail(path, f"cannot be decoded as an image ({type(exc).__name__}: {exc})") from None
    try:
        with img:
            w, h = img.size
            if w * h > MAX_IMAGE_PIXELS:
                raise _fail(
                    path,
                    f"the image is too large ({w}x{h} pixels; at most {MAX_IMAGE_PIXELS} pixels are allowed)",
                )
            if w == 0 or h == 0:
                raise _fail(path, f"the image is empty ({w}x{h} pixels)")
            return _image_to_array(img, size, color), (h, w)
    except DatasetError:
        raise
    except MemoryError:
        raise _fail(path, "not enough memory to decode this image") from None
    except Exception as exc:  # truncated data, bad chunks, decoder errors...
        raise _fail(path, f"cannot be decoded as an image ({type(exc).__name__}: {exc})") from None


def _image_to_array(img, size: int | None, color: str) -> np.ndarray:
    from PIL import Image, ImageOps

    if size is not None and img.format == "JPEG":
        img.draft(None, (size, size))  # let the JPEG decoder downscale by 2, 4 or 8 for free
    img.seek(0)
    img.load()
    ImageOps.exif_transpose(img, in_place=True)

    def resized(im):
        if size is None or im.size == (size, size):
            return im
        shrinking = im.width > size or im.height > size
        method = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BILINEAR
        return im.resize((size, size), method, reducing_gap=3.0 if shrinking else None)

    mode = img.mode
    if mode in ("I", "F") or mode.startswith("I;16"):
        # 16-bit (or 32-bit) grey: keep the precision in float32.
        a = np.asarray(img).astype(np.float32)
        top = 65535.0 if mode.startswith("I;16") or (a.size and a.max() > 255) else 255.0
        if mode == "F" and a.size and a.max() <= 1.0:
            top = 1.0
        a = np.clip(a / np.float32(top), 0.0, 1.0).astype(np.float32)
        if size is not None and a.shape != (size, size):
            a = np.asarray(resized(Image.fromarray(a, mode="F")), dtype=np.float32)
        return np.ascontiguousarray(a)

    has_alpha = mode in ("RGBA", "RGBa", "LA", "La", "PA") or "transparency" in img.info
    if mode in ("1", "L") and not has_alpha:
        im = img.convert("L")
    elif mode in ("L", "LA", "La", "1"):
        la = img.convert("LA")
        im = Image.new("L", la.size, 0)
        im.paste(la.getchannel("L"), mask=la.getchannel("A"))  # composite onto black
    elif has_alpha:
        rgba = img.convert("RGBA")
        im = Image.new("RGB", rgba.size, (0, 0, 0))
        im.paste(rgba.convert("RGB"), mask=rgba.getchannel("A"))  # composite onto black
    else:
        im = img.convert("RGB")  # RGB, P, CMYK, YCbCr, LAB, HSV...
    if im.mode == "RGB" and color == "gray":
        im = im.convert("L")
    im = resized(im)
    a = np.asarray(im, dtype=np.uint8)
    if a.ndim == 3 and color == "auto":
        if np.array_equal(a[..., 0], a[..., 1]) and np.array_equal(a[..., 1], a[..., 2]):
            a = a[..., 0]
    return np.ascontiguousarray(a)


def load_image_like(path: str, shape: tuple[int, int, int], dtype=np.uint8) -> np.ndarray:
    """One image file as an example of a dataset whose images are ``shape`` (C, H, W) of ``dtype``.

    Decoded as a folder's files are (transparency onto black, the first frame
    of an animation), converted to grey for C = 1 and to RGB for C = 3,
    resized to H x W (Lanczos when shrinking, bilinear when enlarging), and
    returned as (C, H, W): uint8 grey levels for a uint8 dataset, float32 in
    [0, 1] otherwise.  Raises DatasetError naming the file when it cannot be
    read or decoded.
    """
    from PIL import Image

    c, h, w = (int(v) for v in shape)
    if c not in (1, 3):
        raise ValueError(f"images of {c} channels cannot be made from a file (1 or 3 are)")
    arr, _native = _decode_image(os.fspath(path), None, "gray" if c == 1 else "rgb")
    if arr.dtype == np.uint8:
        if c == 1 and arr.ndim == 3:
            arr = np.asarray(Image.fromarray(arr).convert("L"))
        elif c == 3 and arr.ndim == 2:
            arr = np.repeat(arr[..., None], 3, axis=2)
        planes = [arr] if arr.ndim == 2 else [arr[..., i] for i in range(3)]
        shrinking = arr.shape[0] > h or arr.shape[1] > w
        method = Image.Resampling.LANCZOS if shrinking else Image.Resampling.BILINEAR
        out = np.stack([np.asarray(Image.fromarray(p).resize((w, h), method), dtype=np.uint8) for p in planes])
        if np.dtype(dtype) == np.uint8:
            return np.ascontiguousarray(out)
        return (out.astype(np.float32) / np.float32(255.0))
    # 16-bit grey, decoded to float32 in [0, 1].
    grey = np.asarray(Image.fromarray(arr.astype(np.float32), mode="F").resize((w, h), Image.Resampling.BILINEAR),
                      dtype=np.float32)
    out = np.repeat(grey[None], c, axis=0)
    if np.dtype(dtype) == np.uint8:
        return np.clip(np.rint(out * 255.0), 0, 255).astype(np.uint8)
    return np.clip(out, 0.0, 1.0).astype(np.float32)
