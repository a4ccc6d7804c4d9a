"""Checkpoints: exact resume (also mid-epoch), contents, bad files, atomic writes, no pickle."""

from __future__ import annotations

import json
import os
import pickle
from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from vae_core import CheckpointError, ModelConfig, TrainConfig
from vae_core import checkpoint as ckpt_mod
from vae_core.checkpoint import FORMAT_VERSION, METADATA_KEY, load_checkpoint, restore_trainer, save_checkpoint
from vae_core.training import History, Trainer


class _Spec:
    def __init__(self, source):
        self.source = source

    def to_dict(self):
        return {"source": self.source, "size": None}


@dataclass
class TinyDataset:
    images: np.ndarray
    labels: np.ndarray | None = None
    label_names: list | None = None
    name: str = "tiny"
    binarize: str = "none"
    spec: object = field(default_factory=lambda: _Spec("tiny"))
    n_test: int = 0

    def __post_init__(self):
        n = self.images.shape[0]
        perm = np.random.default_rng(1).permutation(n).astype(np.int64)
        k = self.n_test or max(1, n // 5)
        self.test_idx, self.train_idx = perm[:k].copy(), perm[k:].copy()

    @property
    def n(self):
        return self.images.shape[0]

    @property
    def input_shape(self):
        return tuple(self.images.shape[1:])


def tiny_dataset(n=160, side=6, binarize="none", n_test=0):
    rng = np.random.default_rng(0)
    images = rng.random((n, 1, side, side)).astype(np.float32)
    images[: n // 2, :, : side // 2] *= 0.2
    labels = (np.arange(n) < n // 2).astype(np.int64)
    return TinyDataset(images, labels, ["low", "high"], binarize=binarize, n_test=n_test)


MODEL = ModelConfig(input_shape=(1, 6, 6), latent_dim=2, hidden_dims=(16,))
TRAIN = TrainConfig(epochs=4, batch_size=32, seed=5)


def assert_same_state(a: Trainer, b: Trainer):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert list(sa) == list(sb)
    assert all(torch.equal(sa[k], sb[k]) for k in sa), "weights differ"
    oa, ob = a.optimizer.state_dict(), b.optimizer.state_dict()
    assert oa["param_groups"] == ob["param_groups"]
    for pid in oa["state"]:
        for key, value in oa["state"][pid].items():
            assert torch.equal(value, ob["state"][pid][key]), f"optimizer {pid}/{key} differs"
    assert a.history == b.history
    assert (a.epoch, a.step) == (b.epoch, b.step)
    assert np.array_equal(a.latents, b.latents)


def straight(ds, train=TRAIN):
    t = Trainer(MODEL, train, ds)
    list(t.run())
    return t


def test_two_plus_two_epochs_equal_four_bit_for_bit(tmp_path):
    ds = tiny_dataset()
    a = straight(ds)
    t = Trainer(MODEL, TRAIN, ds)
    list(t.run(epochs=2))
    path = tmp_path / "half.ckpt"
    save_checkpoint(t, path)
    ck = load_checkpoint(path)
    assert ck.epoch == 2 and ck.step == t.step
    b = restore_trainer(ck, ds)
    events = list(b.run())
    assert [e.epoch for e in events if e.kind == "epoch"] == [3, 4]
    assert_same_state(a, b)
    c = restore_trainer(ck, ds)  # the loaded checkpoint is left as it was
    list(c.run())
    assert_same_state(a, c)


@pytest.mark.parametrize("k", [1, 3, 4])
def test_mid_epoch_stop_save_load_continue_equals_straight(tmp_path, k):
    ds = tiny_dataset()  # 128 training examples: 4 batches per epoch
    a = straight(ds)
    t = Trainer(MODEL, TRAIN, ds)
    for ev in t.run():
        if ev.kind == "batch" and ev.step == 4 + k:  # k batches into the second epoch
            t.control.stop()
    assert t.step == 4 + k
    # A stop after an epoch's last batch lands after that epoch's evaluation.
    expected = (1, k) if k < 4 else (2, 0)
    assert (t.epoch, t.batch_position) == expected
    path = tmp_path / "mid.ckpt"
    save_checkpoint(t, path)
    b = restore_trainer(path, ds)
    assert (b.epoch, b.batch_position) == expected
    list(b.run())
    assert_same_state(a, b)


def test_exact_resume_with_dynamic_binarisation_warmup_free_bits_and_changes(tmp_path):
    ds = tiny_dataset(binarize="dynamic")
    cfg = TRAIN.replace(warmup="cyclical", warmup_epochs=2, free_bits=0.05, mc_samples=2, epochs=3)

    def drive(t, stop_at=None):
        for ev in t.run():
            if ev.kind == "batch" and ev.step == 2:
                t.control.set(beta=0.5, lr=2e-3)
            if stop_at is not None and ev.kind == "batch" and ev.step == stop_at:
                t.control.stop()

    a = Trainer(MODEL, cfg, ds)
    drive(a)
    t = Trainer(MODEL, cfg, ds)
    drive(t, stop_at=7)
    save_checkpoint(t, tmp_path / "x.ckpt")
    ck = load_checkpoint(tmp_path / "x.ckpt")
    assert ck.settings["beta"] == 0.5 and ck.train_config.lr == 2e-3
    assert [c["name"] for c in ck.history.changes] == ["beta", "lr"]
    b = restore_trainer(ck, ds)
    drive(b)
    assert_same_state(a, b)


def test_contents_and_build_model(tmp_path):
    ds = tiny_dataset()
    t = Trainer(MODEL, TRAIN.replace(epochs=1), ds)
    list(t.run())
    path = tmp_path / "c.ckpt"
    save_checkpoint(t, path)
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    meta = json.loads(json.loads(raw[8 : 8 + n])["__metadata__"][METADATA_KEY])
    assert meta["format"] == "latent-explorer-checkpoint" and meta["format_version"] == FORMAT_VERSION
    for key in ("model_config", "train_config", "dataset", "settings", "epoch", "step", "position",
                "optimizer", "history", "created", "versions"):
        assert key in meta
    assert "torch" in meta["versions"]

    ck = load_checkpoint(path)
    assert ck.model_config == MODEL and ck.train_config == TRAIN.replace(epochs=1)
    assert ck.dataset_spec == {"source": "tiny", "size": None}
    assert ck.dataset_name == "tiny" and ck.label_names == ["low", "high"]
    assert np.array_equal(ck.latents, t.latents) and np.array_equal(ck.latent_logvar, t.latent_logvar)
    assert np.array_equal(ck.labels, ds.labels)
    assert isinstance(ck.history, History) and ck.history == t.history
    assert any(k.startswith("rng/") and v.dtype == torch.uint8 for k, v in ck.tensors.items())
    model = ck.build_model()
    assert not model.training
    x = torch.from_numpy(ds.images[:5])
    with torch.no_grad():
        assert torch.equal(model.encode(x)[0], t.model.encode(x)[0])


def test_resume_on_a_dataset_with_another_split_restarts_the_epoch(tmp_path):
    ds = tiny_dataset()
    t = Trainer(MODEL, TRAIN, ds)
    for ev in t.run():
        if ev.kind == "batch" and ev.step == 2:
            t.control.stop()
    save_checkpoint(t, tmp_path / "s.ckpt")
    other = tiny_dataset(n_test=50)
    b = restore_trainer(tmp_path / "s.ckpt", other)
    assert b.batch_position == 0 and b.step == 2
    list(b.run(epochs=1))
    assert b.epoch == 1


# ---------------------------------------------------------------------------
# Bad files
# ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def good_bytes(tmp_path_factory):
    t = Trainer(MODEL, TRAIN.replace(epochs=1), tiny_dataset())
    list(t.run())
    path = tmp_path_factory.mktemp("good") / "g.ckpt"
    save_checkpoint(t, path)
    return path.read_bytes()


def _expect_error(path, *fragments):
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message, message
    return message


@pytest.mark.parametrize("keep", [0, 5, 100, 0.5, -1])
def test_truncated_files(tmp_path, good_bytes, keep):
    cut = int(len(good_bytes) * keep) if isinstance(keep, float) else (len(good_bytes) - 1 if keep == -1 else keep)
    path = tmp_path / "t.ckpt"
    path.write_bytes(good_bytes[:cut])
    _expect_error(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "r.ckpt"
    path.write_bytes(np.random.default_rng(0).integers(0, 256, 5000, dtype=np.uint8).tobytes())
    _expect_error(path, "not a safetensors file")


def test_corrupt_header(tmp_path, good_bytes):
    n = int.from_bytes(good_bytes[:8], "little")
    broken = good_bytes[:8] + b"{" + b"\x00" * (n - 1) + good_bytes[8 + n :]
    path = tmp_path / "h.ckpt"
    path.write_bytes(broken)
    _expect_error(path, "corrupt")


def test_foreign_safetensors(tmp_path):
    path = tmp_path / "f.safetensors"
    path.write_bytes(st_save({"weight": torch.zeros(3, 3)}, metadata={"format": "pt"}))
    _expect_error(path, "not a Latent Explorer checkpoint")


def _rewrite_meta(good_bytes, change):
    n = int.from_bytes(good_bytes[:8], "little")
    meta = json.loads(json.loads(good_bytes[8 : 8 + n])["__metadata__"][METADATA_KEY])
    change(meta)
    return st_save(st_load(good_bytes), metadata={METADATA_KEY: json.dumps(meta)})


def test_future_format_version(tmp_path, good_bytes):
    path = tmp_path / "v.ckpt"
    path.write_bytes(_rewrite_meta(good_bytes, lambda m: m.update(format_version=FORMAT_VERSION + 1)))
    _expect_error(path, "newer version of Latent Explorer")


def test_invalid_config_in_metadata(tmp_path, good_bytes):
    path = tmp_path / "m.ckpt"
    path.write_bytes(_rewrite_meta(good_bytes, lambda m: m["model_config"].update(latent_dim=-3)))
    _expect_error(path, "invalid metadata")


def test_wrong_input_shape(tmp_path, good_bytes):
    path = tmp_path / "s.ckpt"
    path.write_bytes(good_bytes)
    other = tiny_dataset(side=8)
    other.name = "digits"
    with pytest.raises(CheckpointError, match="expects 1x6x6 images, dataset 'digits' has 1x8x8"):
        restore_trainer(path, other)


class _Evil:
    """Unpickling this creates a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["pickle", "torch.save"])
def test_pickle_is_never_loaded(tmp_path, how):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.ckpt"
    payload = {"model": _Evil(str(marker))}
    if how == "pickle":
        path.write_bytes(pickle.dumps(payload))
    else:
        torch.save(payload, path)
    # The payload is armed: unpickling the same kind of object does create a file.
    probe = tmp_path / "probe"
    pickle.loads(pickle.dumps(_Evil(str(probe)))).close()
    assert probe.exists() and not marker.exists()
    _expect_error(path, "pickle")
    assert not marker.exists()


@pytest.mark.parametrize("low_byte", [0x80, ord("K")])
def test_a_header_length_that_starts_like_a_pickle_is_still_a_checkpoint(tmp_path, low_byte):
    """A safetensors header length whose first byte is 0x80 (or a file starting "PK") is read, not refused as a pickle."""
    ds = tiny_dataset()
    t = Trainer(MODEL, TRAIN.replace(epochs=1), ds)
    list(t.run(epochs=1))
    good = tmp_path / "good.ckpt"
    save_checkpoint(t, good)
    data = good.read_bytes()
    n = int.from_bytes(data[:8], "little")
    header = data[8:8 + n]
    pad = (low_byte - n) % 256 or 256  # JSON allows trailing spaces: lengthen the header to the wanted low byte
    header = header + b" " * pad
    assert len(header) % 256 == low_byte
    body = len(header).to_bytes(8, "little") + header + data[8 + n:]
    if low_byte == ord("K"):
        assert len(header).to_bytes(8, "little")[:1] == b"K"
    odd = tmp_path / "odd.ckpt"
    odd.write_bytes(body)
    ck = load_checkpoint(odd)
    assert ck.step == t.step
    assert body[:1] == bytes([low_byte])


# ---------------------------------------------------------------------------
# Atomic writes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("fail_in", ["fsync", "replace", "write"])
def test_failed_save_keeps_old_file_and_leaves_no_temp(tmp_path, monkeypatch, fail_in):
    ds = tiny_dataset()
    t = Trainer(MODEL, TRAIN.replace(epochs=2), ds)
    list(t.run(epochs=1))
    path = tmp_path / "run.ckpt"
    save_checkpoint(t, path)
    old = path.read_bytes()
    list(t.run(epochs=1))

    def boom(*args, **kwargs):
        raise OSError(28, "No space left on device")

    if fail_in == "fsync":
        monkeypatch.setattr(ckpt_mod.os, "fsync", boom)
    elif fail_in == "replace":
        monkeypatch.setattr(ckpt_mod.os, "replace", boom)
    else:
        real_fdopen = os.fdopen

        class HalfWriter:
            def __init__(self, f):
                self.f = f

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                self.f.close()

            def write(self, data):
                self.f.write(data[: len(data) // 2])
                raise OSError(5, "Input/output error")

        monkeypatch.setattr(ckpt_mod.os, "fdopen", lambda fd, mode: HalfWriter(real_fdopen(fd, mode)))
    with pytest.raises(CheckpointError, match="could not write checkpoint"):
        save_checkpoint(t, path)
    monkeypatch.undo()
    assert path.read_bytes() == old
    assert load_checkpoint(path).epoch == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run.ckpt"]
