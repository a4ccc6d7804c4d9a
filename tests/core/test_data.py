"""Tests for vae_core.data: builtins, splits, folders, arrays and IDX files."""

from __future__ import annotations

import gzip
import json
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from vae_core.data import (
    BUILTINS,
    Dataset,
    DatasetSpec,
    load_dataset,
    make_shapes,
    split_indices,
)
from vae_core.errors import DatasetError

# ----------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------


def write_idx(path, arr, code=0x08, gz=False):
    """Write an IDX file by hand: 0x0000, type code, ndim, big-endian dims, big-endian data."""
    arr = np.asarray(arr)
    dtype = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}[code]
    payload = struct.pack(">BBBB", 0, 0, code, arr.ndim) + struct.pack(f">{arr.ndim}I", *arr.shape)
    payload += arr.astype(dtype).tobytes()
    path = str(path)
    if gz:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        with open(path, "wb") as f:
            f.write(payload)
    return payload


def png_header_only(path, width, height):
    """A PNG whose header claims width x height but holds almost no data."""

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")
    )


class _Payload:
    """Unpickling this creates a folder: proof that a pickle was (or was not) executed."""

    def __init__(self, flag):
        self.flag = str(flag)

    def __reduce__(self):
        return (os.mkdir, (self.flag,))


def evil_object_array(flag):
    arr = np.empty(3, dtype=object)
    arr[0] = _Payload(flag)
    arr[1] = 1
    arr[2] = "x"
    return arr


def check_split(ds: Dataset):
    n = ds.n
    assert ds.train_idx.dtype == np.int64 and ds.test_idx.dtype == np.int64
    both = np.concatenate([ds.train_idx, ds.test_idx])
    assert np.array_equal(np.sort(both), np.arange(n))
    if n >= 2:
        assert len(ds.test_idx) >= 1 and len(ds.train_idx) >= 1


def px(ds: Dataset) -> np.ndarray:
    """Every pixel value of a dataset, float32 in [0, 1]."""
    return ds.float_images()


def check_images(ds: Dataset):
    x = ds.images
    assert x.dtype in (np.uint8, np.float32) and x.ndim == 4
    values = px(ds)
    assert values.dtype == np.float32 and values.shape == x.shape
    assert float(values.min()) >= 0.0 and float(values.max()) <= 1.0
    assert ds.input_shape == tuple(x.shape[1:]) and ds.n == x.shape[0]
    if ds.labels is not None:
        assert ds.labels.dtype == np.int64 and ds.labels.shape == (ds.n,)
    check_split(ds)


# ----------------------------------------------------------------------------
# builtins
# ----------------------------------------------------------------------------


def test_builtin_names():
    assert BUILTINS == ("mnist", "digits", "shapes")


def test_mnist():
    ds = load_dataset("mnist")
    check_images(ds)
    assert ds.images.shape == (5000, 1, 28, 28)
    assert ds.name == "mnist" and ds.factors is None and ds.binarize == "none"
    assert px(ds).max() == 1.0
    assert ds.label_names == [str(i) for i in range(10)]
    assert set(np.unique(ds.labels)) == set(range(10))
    assert len(ds.test_idx) == 500
    # the raw labels are sorted by class: the split must shuffle them
    assert len(np.unique(ds.labels[ds.test_idx])) == 10


def test_digits_and_resize():
    ds = load_dataset({"source": "digits"})
    check_images(ds)
    assert ds.images.shape == (1797, 1, 8, 8)
    assert px(ds).max() == 1.0
    assert ds.label_names == [str(i) for i in range(10)]
    big = load_dataset(DatasetSpec("digits", size=16, color="rgb"))
    check_images(big)
    assert big.images.shape == (1797, 3, 16, 16)
    assert np.array_equal(px(big)[:, 0], px(big)[:, 2])
    # resizing keeps the mean brightness roughly
    assert abs(px(big).mean() - px(ds).mean()) < 0.02


def test_shapes_builtin():
    ds = load_dataset(DatasetSpec("shapes", n=300, seed=3))
    check_images(ds)
    assert ds.images.shape == (300, 1, 32, 32)
    assert ds.label_names == ["square", "ellipse", "heart"]
    assert set(ds.factors) == {"scale", "rotation", "x", "y"}
    for v in ds.factors.values():
        assert v.shape == (300,)
    small = load_dataset(DatasetSpec("shapes", n=10, size=16))
    assert small.images.shape == (10, 1, 16, 16)


def test_make_shapes_properties():
    raw, y, f = make_shapes(600, size=32, seed=5)
    assert raw.shape == (600, 1, 32, 32) and raw.dtype == np.uint8
    x = raw / 255.0
    assert y.dtype == np.int64 and set(np.unique(y)) == {0, 1, 2}
    assert 0.5 <= f["scale"].min() and f["scale"].max() <= 1.0
    assert 0.0 <= f["rotation"].min() and f["rotation"].max() < 2 * np.pi
    assert 0.0 < f["x"].min() and f["x"].max() < 1.0
    # every shape is drawn and stays inside the frame
    mass = x.sum(axis=(1, 2, 3))
    assert mass.min() > 3
    border = np.concatenate([x[:, 0, 0, :], x[:, 0, -1, :], x[:, 0, :, 0], x[:, 0, :, -1]], axis=1)
    assert border.max() == 0.0
    # areas follow the geometry: square side 1.4 r, ellipse axes r and r/2, r = 0.5 * scale * (size / 2)
    r = 0.5 * f["scale"] * 16
    square, ellipse = y == 0, y == 1
    assert np.allclose(mass[square], (1.4 * r[square]) ** 2, rtol=0.08)
    assert np.allclose(mass[ellipse], np.pi * 0.5 * r[ellipse] ** 2, rtol=0.12)
    # the centre of mass sits at the factor position (to within a pixel or two)
    cols = (x[:, 0].sum(axis=1) * (np.arange(32) + 0.5)).sum(axis=1) / mass
    assert np.abs(cols[square] / 32 - f["x"][square]).max() < 0.05
    # same seed, same shapes; another seed, other shapes
    x2, y2, _ = make_shapes(600, size=32, seed=5)
    assert np.array_equal(raw, x2) and np.array_equal(y, y2)
    x3, _, _ = make_shapes(600, size=32, seed=6)
    assert not np.array_equal(raw, x3)


def test_make_shapes_sizes_and_errors():
    x, _, _ = make_shapes(5, size=64, seed=0)
    assert x.shape == (5, 1, 64, 64)
    x, y, f = make_shapes(0)
    assert x.shape == (0, 1, 32, 32) and y.shape == (0,)
    with pytest.raises(DatasetError):
        make_shapes(5, size=4)


def test_builtin_rgb_and_gray():
    ds = load_dataset(DatasetSpec("shapes", n=20, color="rgb"))
    assert ds.images.shape == (20, 3, 32, 32)
    grey = load_dataset(DatasetSpec("shapes", n=20))
    assert np.array_equal(px(ds), np.repeat(px(grey), 3, axis=1))
    ds = load_dataset(DatasetSpec("digits", color="gray"))
    assert ds.images.shape[1] == 1


# ----------------------------------------------------------------------------
# spec, split and binarization
# ----------------------------------------------------------------------------


def test_spec_round_trip_and_defaults():
    spec = DatasetSpec("MNIST", size=16, color="grey", binarize="static", test_fraction=0.25, seed=4, labels="l.npy")
    assert spec.source == "mnist" and spec.color == "gray"
    d = spec.to_dict()
    assert DatasetSpec.from_dict(json.loads(json.dumps(d))) == spec
    assert DatasetSpec("shapes").to_dict() == {
        "source": "shapes",
        "size": None,
        "color": "auto",
        "binarize": "none",
        "test_fraction": 0.1,
        "seed": 0,
        "n": 10000,
        "labels": None,
    }


@pytest.mark.parametrize(
    "changes",
    [
        {"source": ""},
        {"source": 3},
        {"size": 0},
        {"size": 2.5},
        {"size": True},
        {"size": "32"},
        {"color": "purple"},
        {"binarize": "yes"},
        {"test_fraction": 0.0},
        {"test_fraction": 1.0},
        {"test_fraction": float("nan")},
        {"test_fraction": "0.1"},
        {"seed": -1},
        {"n": 0},
        {"labels": 5},
    ],
)
def test_spec_rejects_nonsense(changes):
    d = {"source": "digits", **changes}
    with pytest.raises(DatasetError):
        DatasetSpec(**d)


def test_spec_from_dict_errors():
    with pytest.raises(DatasetError, match="unknown"):
        DatasetSpec.from_dict({"source": "digits", "bogus": 1})
    with pytest.raises(DatasetError):
        DatasetSpec.from_dict({"size": 3})
    with pytest.raises(DatasetError):
        DatasetSpec.from_dict(["digits"])
    with pytest.raises(DatasetError):
        load_dataset(42)


def test_split_indices():
    for n in (2, 3, 10, 101):
        train, test = split_indices(n, 0.1, seed=0)
        assert len(test) >= 1 and len(train) >= 1
        assert np.array_equal(np.sort(np.concatenate([train, test])), np.arange(n))
    train, test = split_indices(1, 0.5, 0)
    assert list(train) == [0] and len(test) == 0
    train, test = split_indices(1000, 0.2, 7)
    assert len(test) == 200
    again = split_indices(1000, 0.2, 7)
    assert np.array_equal(train, again[0]) and np.array_equal(test, again[1])
    other = split_indices(1000, 0.2, 8)
    assert not np.array_equal(test, other[1])


def test_split_is_seeded_in_loaded_datasets():
    a = load_dataset(DatasetSpec("digits", seed=1, test_fraction=0.3))
    b = load_dataset(DatasetSpec("digits", seed=1, test_fraction=0.3))
    c = load_dataset(DatasetSpec("digits", seed=2, test_fraction=0.3))
    assert np.array_equal(a.test_idx, b.test_idx) and np.array_equal(a.train_idx, b.train_idx)
    assert not np.array_equal(a.test_idx, c.test_idx)
    assert len(a.test_idx) == round(0.3 * 1797)
    assert len(np.intersect1d(a.train_idx, a.test_idx)) == 0


def test_static_and_dynamic_binarization():
    grey = load_dataset("digits")
    s1 = load_dataset(DatasetSpec("digits", binarize="static", seed=3))
    s2 = load_dataset(DatasetSpec("digits", binarize="static", seed=3))
    s3 = load_dataset(DatasetSpec("digits", binarize="static", seed=4))
    assert set(np.unique(px(s1))) <= {0.0, 1.0}
    assert s1.binarize == "static"
    assert np.array_equal(px(s1), px(s2)) and not np.array_equal(px(s1), px(s3))
    assert abs(px(s1).mean() - px(grey).mean()) < 0.01
    assert np.all(px(s1)[px(grey) == 0] == 0) and np.all(px(s1)[px(grey) == 1] == 1)
    dyn = load_dataset(DatasetSpec("digits", binarize="dynamic"))
    assert dyn.binarize == "dynamic" and np.array_equal(px(dyn), px(grey))


# ----------------------------------------------------------------------------
# folders of images
# ----------------------------------------------------------------------------


def _gray(value, size=(8, 8)):
    return Image.fromarray(np.full(size[::-1], value, dtype=np.uint8), mode="L")


@pytest.fixture
def labelled_folder(tmp_path):
    root = tmp_path / "pets"
    for d in ("a", "b", "c", "d", "e_empty", "b/nested"):
        (root / d).mkdir(parents=True)
    _gray(10).save(root / "a" / "0.png")
    _gray(20).save(root / "a" / "1.PNG")
    Image.new("RGB", (8, 8), (255, 0, 0)).save(root / "b" / "red.png")
    Image.new("RGB", (8, 8), (0, 0, 255)).save(root / "b" / "nested" / "blue.bmp")
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[..., 1] = 200
    rgba[:4, :, 3] = 255  # top half opaque green, bottom half transparent
    Image.fromarray(rgba, mode="RGBA").save(root / "c" / "half.png")
    pal = Image.new("P", (8, 8), 1)
    pal.putpalette([0, 0, 0, 0, 128, 255] + [0] * 762)
    pal.save(root / "d" / "pal.gif")
    (root / "a" / "readme.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"junk")
    return root


def test_folder_with_labels(labelled_folder):
    ds = load_dataset(str(labelled_folder))
    check_images(ds)
    assert ds.name == "pets"
    assert ds.images.shape == (6, 3, 8, 8)  # colour present -> RGB
    assert ds.label_names == ["a", "b", "c", "d"]
    assert list(ds.labels) == [0, 0, 1, 1, 2, 3]
    notes = " ".join(ds.notes)
    assert "skipped 1 non-image file" in notes and "e_empty" in notes
    # grey images fill all three channels
    assert np.allclose(px(ds)[0], 10 / 255) and np.allclose(px(ds)[1], 20 / 255)
    # nested files take the label of the top subfolder
    assert np.allclose(px(ds)[2, :, 0, 0], [1, 0, 0]) and np.allclose(px(ds)[3, :, 0, 0], [0, 0, 1])
    # transparent areas are composited onto black
    assert np.allclose(px(ds)[4, :, 0, 0], [0, 200 / 255, 0]) and np.all(px(ds)[4, :, 7, :] == 0)
    # palette images are expanded to their colours
    assert np.allclose(px(ds)[5, :, 3, 3], [0, 128 / 255, 1])


def test_folder_color_modes(labelled_folder):
    gray = load_dataset(DatasetSpec(str(labelled_folder), color="gray"))
    assert gray.images.shape == (6, 1, 8, 8)
    red_luma = 0.299 * 255
    assert abs(px(gray)[2, 0, 0, 0] * 255 - red_luma) <= 1


def test_folder_all_grey_gives_one_channel(tmp_path):
    root = tmp_path / "g"
    root.mkdir()
    _gray(100).save(root / "a.png")
    # an RGB file whose channels are equal counts as grey
    Image.merge("RGB", [_gray(50)] * 3).save(root / "b.png")
    Image.fromarray(np.array([[0, 1] * 4] * 8, dtype=bool)).save(root / "c.png")  # mode "1"
    la = Image.merge("LA", [_gray(200), _gray(0)])
    la.save(root / "d.png")
    ds = load_dataset(str(root))
    check_images(ds)
    assert ds.images.shape == (4, 1, 8, 8)
    assert ds.labels is None and ds.label_names is None
    assert np.allclose(px(ds)[1], 50 / 255)
    assert set(np.unique(px(ds)[2])) == {0.0, 1.0}
    assert np.all(px(ds)[3] == 0)  # fully transparent grey -> black
    rgb = load_dataset(DatasetSpec(str(root), color="rgb"))
    assert rgb.images.shape == (4, 3, 8, 8)


def test_folder_16bit_and_jpeg_and_animated_gif(tmp_path):
    root = tmp_path / "mix"
    root.mkdir()
    a16 = np.full((8, 8), 65535 // 2, dtype=np.uint16)
    Image.fromarray(a16).save(root / "deep.png")
    Image.new("RGB", (40, 30), (0, 200, 0)).save(root / "photo.JPG", quality=95)
    frames = [_gray(255), _gray(0)]
    frames[0].save(root / "anim.gif", save_all=True, append_images=frames[1:], duration=10, loop=0)
    ds = load_dataset(DatasetSpec(str(root), size=8))
    check_images(ds)
    assert ds.images.shape == (3, 3, 8, 8)
    by_name = dict(zip(["anim.gif", "deep.png", "photo.JPG"], px(ds)))
    assert np.allclose(by_name["deep.png"], 0.5, atol=1e-3)
    assert np.allclose(by_name["anim.gif"], 1.0)  # first frame
    assert by_name["photo.JPG"][1].mean() > 0.7 and by_name["photo.JPG"][0].mean() < 0.1
    assert any("stretched" in n for n in ds.notes)


def test_folder_root_files_and_subfolders(tmp_path):
    root = tmp_path / "r"
    (root / "cls").mkdir(parents=True)
    _gray(1).save(root / "loose.png")
    _gray(2).save(root / "cls" / "x.png")
    ds = load_dataset(str(root))
    assert ds.label_names == ["cls"]
    assert sorted(ds.labels.tolist()) == [-1, 0]
    assert any("no label" in n for n in ds.notes)


def test_folder_mixed_sizes(tmp_path):
    root = tmp_path / "sizes"
    root.mkdir()
    _gray(5, (8, 8)).save(root / "a.png")
    _gray(5, (12, 10)).save(root / "b.png")
    with pytest.raises(DatasetError) as err:
        load_dataset(str(root))
    msg = str(err.value)
    assert str(root / "a.png") in msg and str(root / "b.png") in msg
    assert "8x8" in msg and "12x10" in msg and "size" in msg
    ds = load_dataset(DatasetSpec(str(root), size=6))
    assert ds.images.shape == (2, 1, 6, 6)
    assert np.allclose(px(ds), 5 / 255, atol=1 / 255)


def test_folder_corrupt_image_names_the_file(tmp_path):
    root = tmp_path / "bad"
    root.mkdir()
    _gray(5).save(root / "good.png")
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    with pytest.raises(DatasetError) as err:
        load_dataset(str(root))
    assert str(root / "broken.png") in str(err.value)


def test_folder_truncated_image(tmp_path):
    root = tmp_path / "trunc"
    root.mkdir()
    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8))
    img.save(root / "t.png")
    data = (root / "t.png").read_bytes()
    (root / "t.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as err:
        load_dataset(str(root))
    assert str(root / "t.png") in str(err.value)


def test_folder_without_images(tmp_path):
    root = tmp_path / "empty"
    root.mkdir()
    with pytest.raises(DatasetError, match="no images found in"):
        load_dataset(str(root))
    (root / "notes.txt").write_text("hi")
    (root / "sub").mkdir()
    with pytest.raises(DatasetError) as err:
        load_dataset(str(root))
    assert str(root) in str(err.value) and "no images found" in str(err.value)


@pytest.mark.parametrize("side", [9000, 100_000])
def test_folder_huge_image_is_refused(tmp_path, side):
    root = tmp_path / "huge"
    root.mkdir()
    _gray(5).save(root / "ok.png")
    png_header_only(root / "poster.png", side, side)
    with pytest.raises(DatasetError) as err:
        load_dataset(str(root))
    assert str(root / "poster.png") in str(err.value) and "too large" in str(err.value)


def test_single_image_file_and_missing_path(tmp_path):
    _gray(77).save(tmp_path / "one.png")
    ds = load_dataset(str(tmp_path / "one.png"))
    assert ds.images.shape == (1, 1, 8, 8) and ds.labels is None
    assert list(ds.train_idx) == [0] and len(ds.test_idx) == 0
    missing = tmp_path / "nowhere"
    with pytest.raises(DatasetError) as err:
        load_dataset(str(missing))
    assert str(missing) in str(err.value)


def test_unrecognised_file(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello world")
    with pytest.raises(DatasetError, match="unrecognised"):
        load_dataset(str(p))


# ----------------------------------------------------------------------------
# .npy / .npz
# ----------------------------------------------------------------------------


def _rand_u8(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_npy_layouts(tmp_path):
    nhw = _rand_u8((5, 7, 9))
    np.save(tmp_path / "nhw.npy", nhw)
    ds = load_dataset(str(tmp_path / "nhw.npy"))
    check_images(ds)
    assert ds.images.shape == (5, 1, 7, 9) and ds.name == "nhw.npy"
    assert np.allclose(px(ds)[:, 0], nhw / 255.0)

    nhwc = _rand_u8((4, 6, 6, 3))
    np.save(tmp_path / "nhwc.npy", nhwc)
    ds = load_dataset(str(tmp_path / "nhwc.npy"))
    assert ds.images.shape == (4, 3, 6, 6)
    assert np.allclose(px(ds), nhwc.transpose(0, 3, 1, 2) / 255.0)

    rgba = _rand_u8((4, 6, 6, 4))
    np.save(tmp_path / "rgba.npy", rgba)
    ds = load_dataset(str(tmp_path / "rgba.npy"))
    assert ds.images.shape == (4, 3, 6, 6) and any("alpha" in n for n in ds.notes)
    assert np.allclose(px(ds), rgba[..., :3].transpose(0, 3, 1, 2) / 255.0)

    nchw = np.random.default_rng(1).random((3, 3, 10, 10)).astype(np.float32)
    np.save(tmp_path / "nchw.npy", nchw)
    ds = load_dataset(str(tmp_path / "nchw.npy"))
    assert ds.images.shape == (3, 3, 10, 10) and np.array_equal(px(ds), nchw)

    one = np.random.default_rng(2).random((3, 1, 10, 10))
    np.save(tmp_path / "one.npy", one)
    assert load_dataset(str(tmp_path / "one.npy")).images.shape == (3, 1, 10, 10)

    flat = _rand_u8((6, 784))
    np.save(tmp_path / "flat.npy", flat)
    assert load_dataset(str(tmp_path / "flat.npy")).images.shape == (6, 1, 28, 28)


def test_npy_value_ranges(tmp_path):
    f255 = np.linspace(0, 255, 2 * 4 * 4).reshape(2, 4, 4)
    np.save(tmp_path / "f255.npy", f255)
    ds = load_dataset(str(tmp_path / "f255.npy"))
    assert px(ds).max() == 1.0 and np.allclose(px(ds)[:, 0], f255 / 255)

    b = np.zeros((2, 4, 4), dtype=bool)
    b[0, 1, 1] = True
    np.save(tmp_path / "b.npy", b)
    ds = load_dataset(str(tmp_path / "b.npy"))
    assert px(ds).sum() == 1.0

    ints = np.array([[[0, 1], [1, 0]]] * 3, dtype=np.int64)
    np.save(tmp_path / "ints.npy", ints)
    assert px(load_dataset(str(tmp_path / "ints.npy"))).max() == 1.0

    bad = np.full((2, 4, 4), -1.0)
    bad[0, 0, 0] = 1.0
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(DatasetError) as err:
        load_dataset(str(tmp_path / "bad.npy"))
    assert str(tmp_path / "bad.npy") in str(err.value) and "range" in str(err.value)


def test_npy_nan_and_inf_are_counted(tmp_path):
    a = np.zeros((3, 4, 4), dtype=np.float32)
    a[0, 0, 0] = np.nan
    a[1, 2, 2] = np.nan
    a[2, 3, 3] = np.inf
    np.save(tmp_path / "nan.npy", a)
    with pytest.raises(DatasetError) as err:
        load_dataset(str(tmp_path / "nan.npy"))
    msg = str(err.value)
    assert str(tmp_path / "nan.npy") in msg and "2 NaN" in msg and "1 infinite" in msg


@pytest.mark.parametrize(
    "shape, match",
    [((10,), "dimension"), ((2, 3, 4, 5, 6), "dimension"), ((0, 8, 8), "zero images"), ((2, 5, 6, 7), "channel"),
     ((3, 10), "square")],
)
def test_npy_bad_shapes(tmp_path, shape, match):
    np.save(tmp_path / "a.npy", np.zeros(shape, dtype=np.uint8))
    with pytest.raises(DatasetError, match=match) as err:
        load_dataset(str(tmp_path / "a.npy"))
    assert str(tmp_path / "a.npy") in str(err.value)


def test_npy_text_array_and_garbage(tmp_path):
    np.save(tmp_path / "t.npy", np.array([["a", "b"], ["c", "d"]]))
    with pytest.raises(DatasetError, match="text"):
        load_dataset(str(tmp_path / "t.npy"))
    (tmp_path / "g.npy").write_bytes(b"this is not numpy")
    with pytest.raises(DatasetError) as err:
        load_dataset(str(tmp_path / "g.npy"))
    assert str(tmp_path / "g.npy") in str(err.value)


def test_npy_truncated(tmp_path):
    np.save(tmp_path / "t.npy", _rand_u8((10, 8, 8)))
    data = (tmp_path / "t.npy").read_bytes()
    (tmp_path / "t.npy").write_bytes(data[:-100])
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset(str(tmp_path / "t.npy"))


def test_npy_resize_and_colour(tmp_path):
    a = np.zeros((5, 3, 16, 16), dtype=np.float32)
    a[:, 0] = 1.0  # pure red
    np.save(tmp_path / "red.npy", a)
    ds = load_dataset(DatasetSpec(str(tmp_path / "red.npy"), size=8, color="gray"))
    assert ds.images.shape == (5, 1, 8, 8)
    assert np.allclose(px(ds), 0.299, atol=1e-4)
    ds = load_dataset(DatasetSpec(str(tmp_path / "red.npy"), size=32))
    assert ds.images.shape == (5, 3, 32, 32) and np.allclose(px(ds)[:, 0], 1.0)


def test_object_arrays_are_never_unpickled(tmp_path):
    flag = tmp_path / "pwned"
    control_flag = tmp_path / "control"
    np.save(tmp_path / "evil.npy", evil_object_array(flag), allow_pickle=True)
    np.savez(tmp_path / "evil.npz", images=evil_object_array(flag))
    np.savez(tmp_path / "evil_labels.npz", images=_rand_u8((3, 4, 4)), labels=evil_object_array(flag))
    # the payload is live: unpickling it deliberately does create the flag
    np.save(tmp_path / "control.npy", evil_object_array(control_flag), allow_pickle=True)
    np.load(tmp_path / "control.npy", allow_pickle=True)
    assert control_flag.exists()

    for name in ("evil.npy", "evil.npz", "evil_labels.npz"):
        with pytest.raises(DatasetError) as err:
            load_dataset(str(tmp_path / name))
        assert str(tmp_path / name) in str(err.value) and "Python objects" in str(err.value)
    spec = DatasetSpec(str(tmp_path / "control.npy").replace("control", "ok"), labels=str(tmp_path / "evil.npy"))
    np.save(spec.source, _rand_u8((3, 4, 4)))
    with pytest.raises(DatasetError, match="Python objects"):
        load_dataset(spec)
    assert not flag.exists()


def test_npz_keys_and_labels(tmp_path):
    x = _rand_u8((12, 5, 5))
    y = np.arange(12) % 4
    np.savez(tmp_path / "a.npz", images=x, labels=y, extra=np.zeros(3))
    ds = load_dataset(str(tmp_path / "a.npz"))
    check_images(ds)
    assert np.array_equal(ds.labels, y) and ds.label_names == ["0", "1", "2", "3"]
    assert any("extra" in n for n in ds.notes)

    np.savez_compressed(tmp_path / "b.npz", X=x, y=y.astype(np.uint8), label_names=np.array(["w", "x", "y", "z"]))
    ds = load_dataset(str(tmp_path / "b.npz"))
    assert ds.label_names == ["w", "x", "y", "z"] and ds.labels.dtype == np.int64

    np.savez(tmp_path / "c.npz", whatever=x)
    ds = load_dataset(str(tmp_path / "c.npz"))
    assert ds.labels is None and ds.images.shape == (12, 1, 5, 5)

    np.savez(tmp_path / "d.npz", data=x, targets=np.array(["cat", "dog"] * 6))
    ds = load_dataset(str(tmp_path / "d.npz"))
    assert ds.label_names == ["cat", "dog"] and list(ds.labels[:2]) == [0, 1]

    np.savez(tmp_path / "e.npz", x, y)  # arr_0, arr_1: ambiguous
    with pytest.raises(DatasetError, match="which array"):
        load_dataset(str(tmp_path / "e.npz"))


@pytest.mark.parametrize(
    "labels, match",
    [(np.arange(11), "11 labels for 12 images"), (np.linspace(0, 1, 12), "whole numbers"),
     (np.zeros((12, 2), dtype=int), "1-D"), (np.full(12, -5), ">= 0")],
)
def test_npz_bad_labels(tmp_path, labels, match):
    np.savez(tmp_path / "a.npz", images=_rand_u8((12, 5, 5)), labels=labels)
    with pytest.raises(DatasetError, match=match) as err:
        load_dataset(str(tmp_path / "a.npz"))
    assert str(tmp_path / "a.npz") in str(err.value)


def test_npz_corrupt(tmp_path):
    np.savez(tmp_path / "a.npz", images=_rand_u8((12, 5, 5)))
    data = (tmp_path / "a.npz").read_bytes()
    (tmp_path / "a.npz").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError) as err:
        load_dataset(str(tmp_path / "a.npz"))
    assert str(tmp_path / "a.npz") in str(err.value)
    (tmp_path / "empty.npz").write_bytes(b"PK\x05\x06" + b"\0" * 18)
    with pytest.raises(DatasetError, match="no arrays"):
        load_dataset(str(tmp_path / "empty.npz"))


# ----------------------------------------------------------------------------
# IDX (MNIST format)
# ----------------------------------------------------------------------------


def _mnist_like(n=20, h=6, w=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (n, h, w), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)


@pytest.mark.parametrize(
    "images_name, labels_name, gz_images, gz_labels",
    [
        ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", False, False),
        ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", True, True),
        ("t10k-images.idx3-ubyte", "t10k-labels.idx1-ubyte", False, False),
        ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte", True, False),
        ("emnist-images-idx3-ubyte", "emnist-labels-idx1-ubyte", True, True),  # gzip without .gz
    ],
)
def test_idx_with_labels_found(tmp_path, images_name, labels_name, gz_images, gz_labels):
    x, y = _mnist_like()
    write_idx(tmp_path / images_name, x, gz=gz_images)
    write_idx(tmp_path / labels_name, y, gz=gz_labels)
    ds = load_dataset(str(tmp_path / images_name))
    check_images(ds)
    assert ds.images.shape == (20, 1, 6, 6) and ds.name == images_name
    assert np.allclose(px(ds)[:, 0], x / 255.0)
    assert np.array_equal(ds.labels, y) and ds.label_names == [str(i) for i in range(10)][: y.max() + 1]


def test_idx_mnist_label_names(tmp_path):
    x, _ = _mnist_like(n=30)
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(30) % 10)
    ds = load_dataset(str(tmp_path / "train-images-idx3-ubyte"))
    assert ds.label_names == [str(i) for i in range(10)]


def test_idx_without_labels_and_explicit_labels(tmp_path):
    x, y = _mnist_like()
    write_idx(tmp_path / "my-images-idx3-ubyte", x)
    ds = load_dataset(str(tmp_path / "my-images-idx3-ubyte"))
    assert ds.labels is None and any("labels" in n for n in ds.notes)
    write_idx(tmp_path / "answers.idx", y)
    ds = load_dataset(DatasetSpec(str(tmp_path / "my-images-idx3-ubyte"), labels=str(tmp_path / "answers.idx")))
    assert np.array_equal(ds.labels, y)
    np.save(tmp_path / "answers.npy", y.astype(np.int32))
    ds = load_dataset(DatasetSpec(str(tmp_path / "my-images-idx3-ubyte"), labels=str(tmp_path / "answers.npy")))
    assert np.array_equal(ds.labels, y)
    with pytest.raises(DatasetError, match="not found"):
        load_dataset(DatasetSpec(str(tmp_path / "my-images-idx3-ubyte"), labels=str(tmp_path / "nope.idx")))


def test_idx_label_count_mismatch(tmp_path):
    x, y = _mnist_like()
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    write_idx(tmp_path / "train-labels-idx1-ubyte", y[:-1])
    with pytest.raises(DatasetError) as err:
        load_dataset(str(tmp_path / "train-images-idx3-ubyte"))
    assert str(tmp_path / "train-labels-idx1-ubyte") in str(err.value) and "19 labels for 20 images" in str(err.value)


def test_idx_truncated_and_overlong(tmp_path):
    x, _ = _mnist_like()
    payload = write_idx(tmp_path / "a-images-idx3-ubyte", x)
    (tmp_path / "a-images-idx3-ubyte").write_bytes(payload[:-7])
    with pytest.raises(DatasetError) as err:
        load_dataset(str(tmp_path / "a-images-idx3-ubyte"))
    assert f"truncated: header promises {len(payload)} bytes, file holds {len(payload) - 7}" in str(err.value)
    assert str(tmp_path / "a-images-idx3-ubyte") in str(err.value)

    (tmp_path / "a-images-idx3-ubyte").write_bytes(payload + b"\0\0")
    with pytest.raises(DatasetError, match="promises"):
        load_dataset(str(tmp_path / "a-images-idx3-ubyte"))

    with gzip.open(tmp_path / "b-images-idx3-ubyte.gz", "wb") as f:
        f.write(payload[:-7])
    with pytest.raises(DatasetError, match="truncated"):
        load_dataset(str(tmp_path / "b-images-idx3-ubyte.gz"))

    # a gzip stream cut short
    gz = gzip.compress(payload)
    (tmp_path / "c-images-idx3-ubyte.gz").write_bytes(gz[: len(gz) // 2])
    with pytest.raises(DatasetError, match="gzip"):
        load_dataset(str(tmp_path / "c-images-idx3-ubyte.gz"))


def test_idx_header_claims_absurd_size(tmp_path):
    header = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">3I", 60000, 28, 28)
    (tmp_path / "big-images-idx3-ubyte").write_bytes(header + b"\0" * 100)
    with pytest.raises(DatasetError, match=f"header promises {16 + 60000 * 784} bytes, file holds 116"):
        load_dataset(str(tmp_path / "big-images-idx3-ubyte"))
    huge = struct.pack(">BBBB", 0, 0, 0x0E, 3) + struct.pack(">3I", 2**32 - 1, 2**32 - 1, 2**32 - 1)
    (tmp_path / "huge-images-idx3-ubyte.gz").write_bytes(gzip.compress(huge + b"\0" * 64))
    with pytest.raises(DatasetError, match="too large"):
        load_dataset(str(tmp_path / "huge-images-idx3-ubyte.gz"))


def test_idx_wrong_magic_and_type(tmp_path):
    x, _ = _mnist_like()
    payload = bytearray(write_idx(tmp_path / "a-images-idx3-ubyte", x))
    payload[0:2] = b"\x12\x34"
    (tmp_path / "a-images-idx3-ubyte").write_bytes(bytes(payload))
    with pytest.raises(DatasetError, match="magic") as err:
        load_dataset(str(tmp_path / "a-images-idx3-ubyte"))
    assert str(tmp_path / "a-images-idx3-ubyte") in str(err.value)
    payload[0:3] = b"\x00\x00\x07"
    (tmp_path / "a-images-idx3-ubyte").write_bytes(bytes(payload))
    with pytest.raises(DatasetError, match="type code"):
        load_dataset(str(tmp_path / "a-images-idx3-ubyte"))


def test_idx_labels_file_given_as_images(tmp_path):
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.arange(5))
    with pytest.raises(DatasetError, match="labels file"):
        load_dataset(str(tmp_path / "train-labels-idx1-ubyte"))


@pytest.mark.parametrize(
    "code, values",
    [
        (0x0D, np.linspace(0, 1, 4 * 5 * 5).reshape(4, 5, 5)),
        (0x0E, np.linspace(0, 1, 4 * 5 * 5).reshape(4, 5, 5)),
        (0x0B, np.arange(4 * 5 * 5).reshape(4, 5, 5) % 256),
        (0x0C, np.arange(4 * 5 * 5).reshape(4, 5, 5) % 256),
        (0x09, np.arange(4 * 5 * 5).reshape(4, 5, 5) % 2),
    ],
)
def test_idx_other_dtypes(tmp_path, code, values):
    write_idx(tmp_path / "v-images-idx3-ubyte", values, code=code)
    ds = load_dataset(str(tmp_path / "v-images-idx3-ubyte"))
    expected = values if values.max() <= 1 else values / 255.0
    assert np.allclose(px(ds)[:, 0], expected, atol=1e-6)


def test_idx_resize(tmp_path):
    x, y = _mnist_like(n=8, h=28, w=28)
    write_idx(tmp_path / "train-images-idx3-ubyte", x)
    ds = load_dataset(DatasetSpec(str(tmp_path / "train-images-idx3-ubyte"), size=14, color="rgb"))
    assert ds.images.shape == (8, 3, 14, 14)


def test_import_is_light():
    """The module imports no Qt, and PIL / sklearn / mlxtend / torch only when needed."""
    import subprocess
    import sys

    code = (
        "import sys, vae_core.data\n"
        "heavy = [m for m in ('PySide6', 'pyqtgraph', 'PIL', 'sklearn', 'mlxtend', 'torch') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == ""


def test_folder_cmyk_jpeg(tmp_path):
    root = tmp_path / "cmyk"
    root.mkdir()
    Image.new("CMYK", (8, 8), (0, 255, 255, 0)).save(root / "red.jpg", quality=95)
    ds = load_dataset(str(root))
    assert ds.images.shape == (1, 3, 8, 8)
    r, g, b = px(ds)[0].mean(axis=(1, 2))
    assert r > 0.8 and g < 0.2 and b < 0.2
