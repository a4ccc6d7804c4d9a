"""Folders of image files (labels from subfolder names) and single image files, decoded with Pillow."""

from __future__ import annotations

import os
import warnings

import numpy as np

from ..errors import DatasetError
from .spec import DatasetSpec, _allocate, _fail, _Loaded

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif")

#: Largest image (width * height) a folder may hold; larger files are refused
#: before they are decoded (decompression bombs, scanned posters...).
MAX_IMAGE_PIXELS = 8000 * 8000


def _load_folder(root: str, spec: DatasetSpec) -> _Loaded:
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
    return _load_image_files(files, tops, spec, name=os.path.basename(os.path.normpath(root)), root=root, notes=notes)


def _load_image_files(
    files: list[str], tops: list[str | None], spec: DatasetSpec, *, name: str, root: str, notes: list[str]
) -> _Loaded:
    arrays: list[np.ndarray] = []
    first: tuple[str, tuple[int, int]] | None = None
    stretched = 0
    any_color = False
    for path in files:
        arr, native = _decode_image(path, spec.size, spec.color)
        if spec.size is None:
            shape = arr.shape[:2]
            if first is None:
                first = (path, shape)
            elif shape != first[1]:
                (h0, w0), (h1, w1) = first[1], shape
                raise _fail(
                    root,
                    f"the images differ in size: {first[0]} is {w0}x{h0} pixels but {path} is {w1}x{h1}; "
                    "choose an image size to resize them all to",
                )
        elif native[0] != native[1]:
            stretched += 1
        any_color = any_color or arr.ndim == 3
        arrays.append(arr)
    if stretched:
        notes.append(f"{stretched} non-square image{'s were' if stretched != 1 else ' was'} stretched to a square")

    c = 3 if spec.color == "rgb" or (spec.color == "auto" and any_color) else 1
    h, w = arrays[0].shape[:2]
    images = _allocate((len(arrays), c, h, w), root)
    for i, arr in enumerate(arrays):
        scale = np.float32(1.0 / 255.0) if arr.dtype == np.uint8 else np.float32(1.0)
        if arr.ndim == 2:
            np.multiply(arr, scale, out=images[i], casting="unsafe")  # grey: broadcast to every channel
        else:
            np.multiply(arr.transpose(2, 0, 1), scale, out=images[i], casting="unsafe")
        arrays[i] = None  # free as we go
    np.clip(images, 0.0, 1.0, out=images)

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
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
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
