"""Datasets at scale, tried on small files: source precision, memory maps, chunked conversion,
the memory check, parallel folder decoding and the cache of decoded folders."""

from __future__ import annotations

import gzip
import json
import mmap
import os
import struct
import zipfile

import numpy as np
import pytest
from PIL import Image

import vae_core.data.arrays as arrays_module
import vae_core.data.images as images_module
import vae_core.data.spec as spec_module
from vae_core.data import CACHE_ENV, MAX_SHAPES, DatasetSpec, cache_directory, load_dataset, make_shapes, to_float
from vae_core.errors import DatasetError


def is_mapped(arr) -> bool:
    """Whether an array's memory is a memory map of a file (following views to their base)."""
    a = arr
    while a is not None:
        if isinstance(a, (np.memmap, mmap.mmap)):
            return True
        a = getattr(a, "base", None)
    return False


def rand_u8(shape, seed=0):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv(CACHE_ENV, str(folder))
    return folder


# ----------------------------------------------------------------------------
# source precision and memory maps
# ----------------------------------------------------------------------------


def test_uint8_npy_channels_last_is_mapped_through_a_view(tmp_path):
    raw = rand_u8((40, 6, 5, 3))
    np.save(tmp_path / "a.npy", raw)
    ds = load_dataset(str(tmp_path / "a.npy"))
    assert ds.images.dtype == np.uint8 and ds.images.shape == (40, 3, 6, 5)
    assert is_mapped(ds.images) and not ds.images.flags.writeable
    assert np.array_equal(ds.images, raw.transpose(0, 3, 1, 2))
    assert np.array_equal(ds.float_images(slice(2, 5)), raw[2:5].transpose(0, 3, 1, 2) / np.float32(255))
    assert ds.float_images(7).shape == (3, 6, 5)
    assert ds.nbytes == raw.nbytes
    # the split is an index into the mapped images
    assert len(ds.train_idx) + len(ds.test_idx) == 40 and is_mapped(ds.images)


@pytest.mark.parametrize("shape, nchw", [((12, 7, 7), (12, 1, 7, 7)), ((12, 49), (12, 1, 7, 7)),
                                         ((12, 1, 7, 7), (12, 1, 7, 7)), ((12, 7, 7, 4), (12, 3, 7, 7))])
def test_uint8_layouts_stay_mapped(tmp_path, shape, nchw):
    raw = rand_u8(shape)
    np.save(tmp_path / "a.npy", raw)
    ds = load_dataset(str(tmp_path / "a.npy"))
    assert ds.images.shape == nchw and ds.images.dtype == np.uint8 and is_mapped(ds.images)


def test_grey_shown_as_rgb_is_a_view(tmp_path):
    raw = rand_u8((10, 6, 6))
    np.save(tmp_path / "a.npy", raw)
    ds = load_dataset(DatasetSpec(str(tmp_path / "a.npy"), color="rgb"))
    assert ds.images.shape == (10, 3, 6, 6) and is_mapped(ds.images)
    assert np.array_equal(ds.images[:, 2], raw)


def test_float_sources_stay_float32(tmp_path):
    f32 = np.random.default_rng(0).random((9, 5, 5)).astype(np.float32)
    np.save(tmp_path / "f32.npy", f32)
    ds = load_dataset(str(tmp_path / "f32.npy"))
    assert ds.images.dtype == np.float32 and is_mapped(ds.images)
    f64 = f32.astype(np.float64) * 255
    np.save(tmp_path / "f64.npy", f64)
    ds = load_dataset(str(tmp_path / "f64.npy"))
    assert ds.images.dtype == np.float32 and not is_mapped(ds.images)
    assert np.allclose(ds.images[:, 0], f32, atol=1e-6)


def test_binary_and_bool_sources_become_grey_levels_0_and_255(tmp_path):
    binary = (rand_u8((8, 4, 4)) > 128).astype(np.uint8)
    np.save(tmp_path / "b.npy", binary)
    ds = load_dataset(str(tmp_path / "b.npy"))
    assert ds.images.dtype == np.uint8 and set(np.unique(ds.images)) == {0, 255}
    assert np.array_equal(ds.float_images()[:, 0], binary.astype(np.float32))
    assert any("black and white" in n for n in ds.notes)
    np.save(tmp_path / "bool.npy", binary.astype(bool))
    assert np.array_equal(load_dataset(str(tmp_path / "bool.npy")).images, ds.images)


def test_wide_integers_within_0_255_become_uint8(tmp_path):
    raw = rand_u8((6, 5, 5)).astype(np.int64)
    np.save(tmp_path / "i.npy", raw)
    ds = load_dataset(str(tmp_path / "i.npy"))
    assert ds.images.dtype == np.uint8 and np.array_equal(ds.images[:, 0], raw)
    deep = (raw * 257).astype(np.uint16)
    deep[0, 0, 0] = 65535
    np.save(tmp_path / "u16.npy", deep)
    ds = load_dataset(str(tmp_path / "u16.npy"))
    assert ds.images.dtype == np.float32 and ds.images[0, 0, 0, 0] == 1.0


def test_builtins_are_stored_in_their_precision():
    mnist = load_dataset("mnist")
    assert mnist.images.dtype == np.uint8 and mnist.images.max() == 255
    digits = load_dataset("digits")
    assert digits.images.dtype == np.float32
    assert np.allclose(np.unique(digits.images * 16), np.arange(17))
    shapes = load_dataset(DatasetSpec("shapes", n=50, color="rgb"))
    assert shapes.images.dtype == np.uint8 and shapes.images.strides[1] == 0  # one grey plane shown 3 times


def test_npz_stored_members_are_mapped_and_compressed_ones_read(tmp_path):
    x = rand_u8((20, 6, 6))
    y = np.arange(20) % 3
    np.savez(tmp_path / "s.npz", images=x, labels=y)
    ds = load_dataset(str(tmp_path / "s.npz"))
    assert is_mapped(ds.images) and np.array_equal(ds.images[:, 0], x) and np.array_equal(ds.labels, y)
    np.savez_compressed(tmp_path / "c.npz", images=x, labels=y)
    ds = load_dataset(str(tmp_path / "c.npz"))
    assert not is_mapped(ds.images) and np.array_equal(ds.images[:, 0], x)
    # a Fortran-ordered stored member is mapped with its order
    with zipfile.ZipFile(tmp_path / "f.npz", "w", zipfile.ZIP_STORED) as zf:
        with zf.open("images.npy", "w") as f:
            np.lib.format.write_array(f, np.asfortranarray(x))
    ds = load_dataset(str(tmp_path / "f.npz"))
    assert is_mapped(ds.images) and np.array_equal(ds.images[:, 0], x)


def test_idx_uncompressed_is_mapped_gzip_is_read(tmp_path):
    x = rand_u8((15, 7, 7))
    payload = struct.pack(">BBBB", 0, 0, 0x08, 3) + struct.pack(">3I", *x.shape) + x.tobytes()
    (tmp_path / "a-images-idx3-ubyte").write_bytes(payload)
    (tmp_path / "b-images-idx3-ubyte.gz").write_bytes(gzip.compress(payload))
    plain = load_dataset(str(tmp_path / "a-images-idx3-ubyte"))
    packed = load_dataset(str(tmp_path / "b-images-idx3-ubyte.gz"))
    assert is_mapped(plain.images) and not is_mapped(packed.images)
    assert plain.images.dtype == packed.images.dtype == np.uint8
    assert np.array_equal(plain.images[:, 0], x) and np.array_equal(packed.images[:, 0], x)


def test_static_binarisation_stores_0_and_255_reproducibly(tmp_path):
    a = load_dataset(DatasetSpec("mnist", binarize="static", seed=2))
    b = load_dataset(DatasetSpec("mnist", binarize="static", seed=2))
    assert a.images.dtype == np.uint8 and set(np.unique(a.images)) == {0, 255}
    assert np.array_equal(a.images, b.images)


# ----------------------------------------------------------------------------
# chunked conversion and progress
# ----------------------------------------------------------------------------


def test_resize_and_grey_conversion_work_in_chunks_into_uint8(tmp_path, monkeypatch):
    raw = rand_u8((30, 12, 12, 3))
    np.save(tmp_path / "a.npy", raw)
    spec = DatasetSpec(str(tmp_path / "a.npy"), size=6, color="gray")
    whole = load_dataset(spec)
    monkeypatch.setattr(arrays_module, "_CHUNK_ELEMENTS", 12 * 12 * 3 * 4)  # four images a chunk
    seen = []
    chunked = load_dataset(spec, progress=lambda f, text: seen.append((f, text)))
    assert chunked.images.dtype == np.uint8 and chunked.images.shape == (30, 1, 6, 6)
    assert np.array_equal(whole.images, chunked.images)
    fractions = [f for f, text in seen if text == "converting images"]
    assert len(fractions) == 8 and fractions == sorted(fractions) and fractions[-1] == 1.0
    # the resized grey levels are the float result rounded to 1/255 steps
    luma = (raw.astype(np.float32) * np.array([0.299, 0.587, 0.114], np.float32)).sum(-1)
    assert abs(float(chunked.float_images().mean()) - float(luma.mean()) / 255) < 0.01


def test_shapes_are_uint8_with_progress():
    seen = []
    x, y, f = make_shapes(2000, size=64, seed=1, progress=lambda frac, text: seen.append(frac))
    assert x.dtype == np.uint8 and x.max() == 255 and x.shape == (2000, 1, 64, 64)
    assert seen == sorted(seen) and seen[-1] == 1.0 and len(seen) > 1
    assert MAX_SHAPES >= 1_000_000
    assert DatasetSpec("shapes", n=1_000_000, size=64).n == 1_000_000


# ----------------------------------------------------------------------------
# the memory check
# ----------------------------------------------------------------------------


def test_conversion_that_does_not_fit_is_refused_with_what_would(tmp_path, monkeypatch):
    np.save(tmp_path / "a.npy", rand_u8((50, 16, 16, 3)))
    monkeypatch.setattr(spec_module, "available_memory", lambda: 10_000)
    with pytest.raises(DatasetError) as err:
        load_dataset(DatasetSpec(str(tmp_path / "a.npy"), size=32))
    msg = str(err.value)
    assert str(tmp_path / "a.npy") in msg
    assert "150.0 KB of memory" in msg and "only 9.8 KB is free" in msg
    assert "image size of at most 7 pixels" in msg and "memory-mapped" in msg
    # opening the same file as it is allocates nothing: it is mapped
    ds = load_dataset(str(tmp_path / "a.npy"))
    assert is_mapped(ds.images)


def test_shapes_and_folders_that_do_not_fit_are_refused(tmp_path, monkeypatch, cache):
    root = tmp_path / "imgs"
    root.mkdir()
    for i in range(3):
        Image.fromarray(rand_u8((8, 8), seed=i)).save(root / f"{i}.png")
    monkeypatch.setattr(spec_module, "available_memory", lambda: 100)
    with pytest.raises(DatasetError, match="shapes: 100 images of 1x32x32 .* fewer shapes"):
        load_dataset(DatasetSpec("shapes", n=100))
    with pytest.raises(DatasetError) as err:
        load_dataset(str(root))
    assert str(root) in str(err.value) and "free" in str(err.value)
    monkeypatch.setattr(spec_module, "available_memory", lambda: None)  # unknown: no refusal
    assert load_dataset(DatasetSpec("shapes", n=100)).n == 100


def test_available_memory_reads_meminfo():
    free = spec_module.available_memory()
    if not os.path.exists("/proc/meminfo"):
        assert free is None
    else:
        assert isinstance(free, int) and free > 0


# ----------------------------------------------------------------------------
# folders: parallel decoding and the cache
# ----------------------------------------------------------------------------


def make_folder(root, n=90, size=(9, 7)):
    """n images in three class folders, colour ones among them."""
    for i in range(n):
        sub = root / f"class{i % 3}"
        sub.mkdir(parents=True, exist_ok=True)
        arr = rand_u8((size[1], size[0], 3) if i % 10 == 0 else (size[1], size[0]), seed=i)
        Image.fromarray(arr).save(sub / f"{i:03d}.png")
    return root


def test_parallel_decoding_matches_one_thread(tmp_path, monkeypatch, cache):
    root = make_folder(tmp_path / "f")
    monkeypatch.setattr(images_module, "DECODE_THREADS", 4)
    monkeypatch.setattr(images_module, "_FILES_PER_TASK", 7)
    seen = []
    threaded = load_dataset(DatasetSpec(str(root), size=8), progress=lambda f, t: seen.append(f))
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "other-cache"))
    monkeypatch.setattr(images_module, "DECODE_THREADS", 1)
    single = load_dataset(DatasetSpec(str(root), size=8))
    assert threaded.images.dtype == np.uint8 and threaded.images.shape == (90, 3, 8, 8)
    assert np.array_equal(threaded.images, single.images) and np.array_equal(threaded.labels, single.labels)
    assert seen == sorted(seen) and seen[-1] == 1.0


def test_first_failing_file_in_order_is_reported_by_the_pool(tmp_path, monkeypatch, cache):
    root = make_folder(tmp_path / "f", n=40)
    (root / "class1" / "025.png").write_bytes(b"not a png")
    (root / "class2" / "038.png").write_bytes(b"not a png either")
    monkeypatch.setattr(images_module, "DECODE_THREADS", 3)
    monkeypatch.setattr(images_module, "_FILES_PER_TASK", 2)
    with pytest.raises(DatasetError) as err:
        load_dataset(str(root))
    assert "025.png" in str(err.value)
    assert not os.path.exists(cache) or not os.listdir(cache)  # nothing cached for a failed load


def test_second_open_is_read_from_the_cache(tmp_path, monkeypatch, cache):
    root = make_folder(tmp_path / "f")
    first = load_dataset(str(root))
    assert sorted(os.path.splitext(p)[1] for p in os.listdir(cache)) == [".json", ".npy", ".npy"]
    assert is_mapped(first.images)  # the decoded images are handed out from the cache file

    def no_decoding(*args):
        raise AssertionError("decoded again")

    monkeypatch.setattr(images_module, "_decode_image", no_decoding)
    second = load_dataset(str(root))
    assert is_mapped(second.images) and np.array_equal(first.images, second.images)
    assert np.array_equal(first.labels, second.labels) and first.label_names == second.label_names
    assert any("cache" in n for n in second.notes)
    assert cache_directory() == str(cache)


def test_cache_is_rebuilt_when_the_folder_changes(tmp_path, cache):
    root = make_folder(tmp_path / "f", n=30)
    load_dataset(str(root))
    entries = sorted(os.listdir(cache))
    target = root / "class0" / "000.png"
    Image.fromarray(np.zeros((7, 9, 3), np.uint8)).save(target)
    os.utime(target, ns=(1, 1))
    changed = load_dataset(str(root))
    assert np.all(changed.images[0] == 0)
    assert sorted(os.listdir(cache)) != entries and len(os.listdir(cache)) == 3  # the old entry is gone
    (root / "class1" / "new.png").write_bytes((root / "class1" / "001.png").read_bytes())
    assert load_dataset(str(root)).n == 31


def test_other_options_keep_their_own_entry(tmp_path, cache):
    root = make_folder(tmp_path / "f", n=12)
    small = load_dataset(DatasetSpec(str(root), size=4))
    big = load_dataset(DatasetSpec(str(root), size=8))
    assert len(os.listdir(cache)) == 6
    assert np.array_equal(load_dataset(DatasetSpec(str(root), size=4)).images, small.images)
    assert big.images.shape[-1] == 8


@pytest.mark.parametrize("damage", ["truncate", "garbage manifest", "wrong shape", "missing images"])
def test_damaged_cache_is_ignored_and_rebuilt(tmp_path, cache, damage):
    root = make_folder(tmp_path / "f", n=20)
    good = np.array(load_dataset(str(root)).images)
    images_file = next(p for p in cache.iterdir() if p.name.endswith(".images.npy"))
    manifest = next(p for p in cache.iterdir() if p.suffix == ".json")
    if damage == "truncate":
        data = images_file.read_bytes()
        images_file.write_bytes(data[: len(data) // 2])
    elif damage == "garbage manifest":
        manifest.write_text("{not json")
    elif damage == "wrong shape":
        meta = json.loads(manifest.read_text())
        meta["shape"][0] += 1
        manifest.write_text(json.dumps(meta))
    else:
        images_file.unlink()
    again = load_dataset(str(root))
    assert np.array_equal(again.images, good)
    assert not any("cache in" in n and "read" in n for n in again.notes)
    assert np.array_equal(load_dataset(str(root)).images, good)  # rebuilt: read from the cache now
    assert any("read from the cache" in n for n in load_dataset(str(root)).notes)


def test_unwritable_cache_still_loads(tmp_path, monkeypatch):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv(CACHE_ENV, str(blocker))
    root = make_folder(tmp_path / "f", n=6)
    ds = load_dataset(str(root))
    assert ds.n == 6 and not is_mapped(ds.images)
    assert any("could not be cached" in n for n in ds.notes)


def test_cache_directory_defaults(monkeypatch, tmp_path):
    monkeypatch.delenv(CACHE_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cache_directory() == str(tmp_path / "xdg" / "latent-explorer")
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert cache_directory() == os.path.join(os.path.expanduser("~"), ".cache", "latent-explorer")


def test_sixteen_bit_image_widens_the_folder_to_float(tmp_path, cache):
    root = tmp_path / "deep"
    root.mkdir()
    Image.fromarray(np.full((4, 4), 51, np.uint8)).save(root / "a.png")
    Image.fromarray(np.full((4, 4), 65535 // 2, np.uint16)).save(root / "b.png")
    ds = load_dataset(str(root))
    assert ds.images.dtype == np.float32
    assert np.allclose(ds.images[0], 0.2) and np.allclose(ds.images[1], 0.5, atol=1e-4)


def test_to_float_matches_the_trainer_conversion():
    import torch

    from vae_core.training.batches import to_float_tensor

    raw = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    assert np.array_equal(to_float(raw), to_float_tensor(torch.from_numpy(raw)).numpy())
    floats = np.array([[[[-0.5, 0.25, 1.5]]]], dtype=np.float32)
    assert np.array_equal(to_float(floats), [[[[0.0, 0.25, 1.0]]]])


def test_cli_trains_a_number_of_generated_shapes_for_a_number_of_steps(tmp_path, capsys):
    from vae_core.checkpoint import load_checkpoint
    from vae_core.cli import main

    ckpt = tmp_path / "run.ckpt"
    argv = ["train", "--dataset", "shapes", "--shapes-count", "300", "--size", "8", "--hidden", "16",
            "--epochs", "3", "--out", str(ckpt), "--json", "--threads", "1"]
    assert main([*argv, "--max-steps", "5"]) == 0
    saved = load_checkpoint(ckpt)
    # 270 training images: 3 batches an epoch, so step 5 is in the middle of the second epoch
    assert saved.step == 5 and saved.epoch == 1 and saved.dataset_spec["n"] == 300
    assert main(["train", "--resume", str(ckpt), "--max-steps", "7", "--json"]) == 0
    assert load_checkpoint(ckpt).step == 7
    capsys.readouterr()
    assert main([*argv[:4], "3000000", *argv[5:]]) == 2
    assert "between 1 and 2000000" in capsys.readouterr().err
