"""The numpy facade over a trained model: same numbers as the torch model, from a snapshot or a checkpoint, any thread."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch

from vae_core import ModelConfig
from vae_core.checkpoint import load_checkpoint, save_checkpoint
from vae_core.config import TrainConfig
from vae_core.inference import Cancelled, Decoder, Encoder, configure_thread, load_models
from vae_core.model import VAE, vae_from_state
from vae_core.training import Trainer



class _Spec:
    def to_dict(self):
        return {"source": "tiny"}


class TinyDataset:
    """Just what the trainer reads from a dataset."""

    def __init__(self, images):
        self.images = images
        self.labels = None
        self.label_names = None
        self.name = "tiny"
        self.binarize = "none"
        self.spec = _Spec()
        perm = np.random.default_rng(1).permutation(len(images)).astype(np.int64)
        self.test_idx, self.train_idx = perm[:24].copy(), perm[24:].copy()

    @property
    def n(self):
        return self.images.shape[0]

    @property
    def input_shape(self):
        return tuple(self.images.shape[1:])


@pytest.fixture(scope="module")
def trained():
    ds = TinyDataset(np.random.default_rng(0).random((120, 1, 6, 6)).astype(np.float32))
    mcfg = ModelConfig(input_shape=ds.input_shape, latent_dim=3, hidden_dims=(16,))
    tr = Trainer(mcfg, TrainConfig(batch_size=32, seed=3), ds)
    for _ in tr.run(1):
        pass
    return tr, ds


def test_snapshot_decoder_matches_the_trained_model(trained):
    tr, ds = trained
    snap = tr.snapshot()
    dec = Decoder.from_snapshot(snap)
    z = np.random.default_rng(0).normal(size=(5, 3)).astype(np.float32)
    with torch.no_grad():
        want = tr.model.eval().decode(torch.from_numpy(z)).numpy()
    got = dec.decode(z)
    assert got.dtype == np.float32 and got.shape == (5, *ds.input_shape)
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_allclose(dec.decode(z[0]), want[0], atol=1e-6)
    assert dec.latent_dim == 3 and dec.step == tr.step and dec.epoch == tr.epoch
    with pytest.raises(ValueError, match="3 dimensions"):
        dec.decode(np.zeros((1, 2)))


def test_encoder_scales_uint8_and_matches_float(trained):
    tr, ds = trained
    enc = Encoder.from_snapshot(tr.snapshot())
    u8 = (np.random.default_rng(1).random((7, *ds.input_shape)) * 255).astype(np.uint8)
    mu8, lv8 = enc.encode(u8)
    muf, lvf = enc.encode(u8.astype(np.float32) / 255.0)
    np.testing.assert_allclose(mu8, muf, atol=1e-6)
    np.testing.assert_allclose(lv8, lvf, atol=1e-6)
    one_mu, _ = enc.encode(u8[0])
    assert one_mu.shape == (3,)
    np.testing.assert_allclose(one_mu, mu8[0], atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        enc.encode(np.zeros((2, 1, 5, 5), np.float32))


def test_encode_all_equals_one_batch_and_can_be_cancelled(trained):
    tr, ds = trained
    enc, _ = load_models(tr.snapshot())
    seen = []
    mu, lv = enc.encode_all(ds.images, batch_size=25, progress=lambda f, t: seen.append(f))
    mu1, lv1 = enc.encode(ds.images)
    np.testing.assert_allclose(mu, mu1, atol=1e-6)
    np.testing.assert_allclose(lv, lv1, atol=1e-6)
    assert seen[-1] == 1.0 and len(seen) == 5
    with pytest.raises(Cancelled):
        enc.encode_all(ds.images, batch_size=25, cancelled=lambda: True)


def test_checkpoint_models_equal_snapshot_models(trained, tmp_path):
    tr, ds = trained
    path = tmp_path / "m.ckpt"
    save_checkpoint(tr, path)
    enc_c, dec_c = load_models(load_checkpoint(path))
    enc_s, dec_s = load_models(tr.snapshot())
    z = np.random.default_rng(2).normal(size=(4, 3))
    np.testing.assert_array_equal(dec_c.decode(z), dec_s.decode(z))
    np.testing.assert_array_equal(enc_c.encode(ds.images[:4])[0], enc_s.encode(ds.images[:4])[0])


def test_callers_in_many_threads_get_the_same_answer(trained):
    tr, _ = trained
    dec = Decoder.from_snapshot(tr.snapshot())
    z = np.random.default_rng(3).normal(size=(64, 3)).astype(np.float32)
    want = dec.decode(z)
    errors = []

    def work():
        configure_thread(1)
        for _ in range(20):
            if not np.array_equal(dec.decode(z), want):
                errors.append("differs")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_vae_from_state_shared_or_copied():
    cfg = ModelConfig(input_shape=(1, 4, 4), latent_dim=2, hidden_dims=(8,))
    state = {k: v.clone() for k, v in VAE(cfg).state_dict().items()}  # as a snapshot holds them
    shared = vae_from_state(cfg, state, share=True)
    copied = vae_from_state(cfg, state)
    assert not shared.training and not copied.training
    name = "encoder.0.weight"
    before = state[name].clone()
    with torch.no_grad():
        copied.encoder[0].weight.add_(1.0)  # a copy: the state is untouched
    assert torch.equal(state[name], before)
    with torch.no_grad():
        shared.encoder[0].weight.add_(1.0)  # shared: the state sees it
    assert torch.equal(state[name], before + 1.0)
    with pytest.raises(RuntimeError):
        vae_from_state(ModelConfig(input_shape=(1, 4, 4), latent_dim=3, hidden_dims=(8,)), state)
