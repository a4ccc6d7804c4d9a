"""Where batches come from (the device, or pinned staging buffers) and mixed precision.

The staging logic and the bfloat16 adapter are tested on the CPU; the tests
marked ``cuda`` run only where a CUDA GPU is present.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vae_core.checkpoint import load_checkpoint, restore_trainer, save_checkpoint
from vae_core.config import ModelConfig, TrainConfig
from vae_core.data import DatasetSpec, load_dataset, to_float
from vae_core.errors import ConfigError
from vae_core.objectives import elbo
from vae_core.training import Trainer, build_model
from vae_core.training import batches as batches_module
from vae_core.training.batches import DeviceImages, ImageSplit
from vae_core.training.precision import AutocastVAE

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CPU = torch.device("cpu")


@pytest.fixture
def mapped(tmp_path):
    """A memory-mapped uint8 channels-last dataset of 120 images (28x28 RGB)."""
    raw = np.random.default_rng(0).integers(0, 256, (120, 28, 28, 3), dtype=np.uint8)
    raw[:60, :14] //= 4  # two kinds of image
    np.save(tmp_path / "rgb.npy", raw)
    return load_dataset(DatasetSpec(str(tmp_path / "rgb.npy"), test_fraction=0.2))


def params(model):
    return [p.detach().cpu().clone() for p in model.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


class FloatCopy:
    """The same dataset with its images as a float32 array (what the engine held before)."""

    def __init__(self, ds):
        self.images = to_float(ds.images)
        self.labels, self.label_names, self.name = ds.labels, ds.label_names, ds.name
        self.train_idx, self.test_idx, self.binarize, self.spec = ds.train_idx, ds.test_idx, ds.binarize, ds.spec
        self.input_shape = ds.input_shape


MLP = dict(latent_dim=2, hidden_dims=(32,))
TRAIN = TrainConfig(epochs=2, batch_size=16, seed=5, device="cpu")


# ----------------------------------------------------------------------------
# on the CPU
# ----------------------------------------------------------------------------


def test_staged_batches_equal_resident_ones_and_survive_buffer_reuse(mapped):
    resident = DeviceImages(mapped.images, CPU)
    staged = DeviceImages(mapped.images, CPU, resident=False, pin=False)
    assert resident.resident and not staged.resident and staged.index_device == CPU
    rows = [torch.tensor([5, 3, 99, 3]), torch.tensor([0, 1]), torch.tensor([119, 7, 8, 9, 10]), torch.tensor([2])]
    kept = [staged.gather(r) for r in rows]  # four batches through two buffers
    for r, batch in zip(rows, kept):
        expected = torch.from_numpy(to_float(mapped.images[r.numpy()]))
        assert batch.dtype == torch.float32 and torch.equal(batch, expected)
        assert torch.equal(resident.gather(r), expected)


def test_images_are_not_copied_on_the_cpu(mapped):
    trainer = Trainer(ModelConfig(input_shape=mapped.input_shape, **MLP), TRAIN, mapped)
    host = trainer._images._data
    assert host.dtype == torch.uint8 and host.data_ptr() == mapped.images.__array_interface__["data"][0]


def test_uint8_data_trains_exactly_like_its_float_copy(mapped):
    mcfg = ModelConfig(input_shape=mapped.input_shape, **MLP)
    a = Trainer(mcfg, TRAIN, mapped)
    b = Trainer(mcfg, TRAIN, FloatCopy(mapped))
    list(a.run())
    list(b.run())
    assert same(params(a.model), params(b.model))
    assert a.evaluate()["elbo"] == b.evaluate()["elbo"]
    np.testing.assert_array_equal(a.latents, b.latents)


def test_split_is_read_by_slices_with_a_fixed_binary_draw(mapped):
    images = DeviceImages(mapped.images, CPU)
    rows = torch.as_tensor(mapped.test_idx)
    split = ImageSplit(images, rows, binarize=lambda start: torch.Generator().manual_seed(1000 + start))
    assert split.shape == (len(rows), 3, 28, 28) and len(split) == len(rows) and split.device == CPU
    first = split[0:10]
    assert set(torch.unique(first).tolist()) <= {0.0, 1.0}
    assert torch.equal(first, split[0:10]) and not torch.equal(first, split[10:20])
    plain = ImageSplit(images, rows)
    assert torch.equal(plain.gather(torch.tensor([2, 0])), images.gather(rows[[2, 0]]))
    with pytest.raises(ValueError):
        split[0:10:2]
    with pytest.raises(TypeError):
        split[3]


def test_precision_is_validated_and_bf16_is_refused_on_the_cpu(mapped):
    with pytest.raises(ConfigError, match="precision must be one of"):
        TrainConfig(precision="fp16")
    mcfg = ModelConfig(input_shape=mapped.input_shape, **MLP)
    with pytest.raises(ConfigError, match="CUDA GPU only.*use precision 'fp32'"):
        Trainer(mcfg, TRAIN.replace(precision="bf16"), mapped)


def test_bf16_checkpoint_continues_in_fp32_without_a_gpu(mapped, tmp_path):
    mcfg = ModelConfig(input_shape=mapped.input_shape, **MLP)
    t = Trainer(mcfg, TRAIN.replace(epochs=1), mapped)
    list(t.run())
    save_checkpoint(t, tmp_path / "run.ckpt")
    ckpt = load_checkpoint(tmp_path / "run.ckpt")
    ckpt.train_config = ckpt.train_config.replace(precision="bf16")
    restored = restore_trainer(ckpt, mapped, device="cpu")
    assert restored.train_config.precision == "fp32" and same(params(restored.model), params(t.model))


def test_autocast_vae_computes_the_objective_in_float32():
    torch.manual_seed(0)
    mcfg = ModelConfig(input_shape=(1, 28, 28), latent_dim=3, architecture="conv", hidden_dims=(8, 16))
    model = build_model(mcfg, 0)
    x = torch.rand(6, 1, 28, 28)
    wrapped = AutocastVAE(model, "cpu")  # CPU autocast computes in bfloat16 too
    mu, logvar = wrapped.encode(x)
    assert mu.dtype == logvar.dtype == torch.float32
    g1, g2 = torch.Generator().manual_seed(1), torch.Generator().manual_seed(1)
    mixed = elbo(wrapped, x, generator=g1)
    full = elbo(model, x, generator=g2)
    for term in ("recon", "kl", "loss", "elbo"):
        assert getattr(mixed, term).dtype == torch.float32
    assert torch.allclose(mixed.elbo, full.elbo, rtol=0.02)
    mixed.loss.mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters())


# ----------------------------------------------------------------------------
# on a GPU
# ----------------------------------------------------------------------------


@cuda
def test_gpu_upload_is_uint8_and_batches_match_the_cpu(mapped):
    gpu = torch.device("cuda")
    resident = DeviceImages(mapped.images, gpu)
    assert resident.resident and resident._data.is_cuda and resident._data.dtype == torch.uint8
    staged = DeviceImages(mapped.images, gpu, resident=False)
    assert not staged.resident and staged.index_device == CPU
    rows = torch.tensor([4, 8, 15, 16, 23, 42])
    expected = torch.from_numpy(to_float(mapped.images[rows.numpy()]))
    for source in (resident, staged):
        batches = [source.gather(rows) for _ in range(3)]
        for batch in batches:
            assert batch.is_cuda and batch.dtype == torch.float32
            assert torch.allclose(batch.cpu(), expected, atol=1e-7)
    assert staged._buffers[0].is_pinned()


@cuda
def test_gpu_training_is_the_same_from_resident_and_staged_images(mapped, monkeypatch):
    mcfg = ModelConfig(input_shape=mapped.input_shape, **MLP)
    cfg = TRAIN.replace(device="cuda")
    a = Trainer(mcfg, cfg, mapped)
    assert a._images.resident
    monkeypatch.setattr(batches_module, "GPU_SHARE", 0.0)  # nothing fits: staged through pinned memory
    b = Trainer(mcfg, cfg, mapped)
    assert not b._images.resident
    list(a.run())
    list(b.run())
    assert same(params(a.model), params(b.model))
    state = b.get_state()
    c = Trainer(mcfg, cfg, mapped)
    c.set_state(state)
    assert c.n_examples == mapped.n


@cuda
@pytest.mark.skipif(torch.cuda.is_available() and not torch.cuda.is_bf16_supported(), reason="no bfloat16")
def test_bf16_conv_training_on_the_gpu_reports_float32_figures(mapped):
    mcfg = ModelConfig(input_shape=mapped.input_shape, latent_dim=4, architecture="conv", hidden_dims=(16, 32))
    cfg = TRAIN.replace(device="cuda", precision="bf16", epochs=3)
    mixed = Trainer(mcfg, cfg, mapped)
    full = Trainer(mcfg, cfg.replace(precision="fp32"), mapped)
    for t in (mixed, full):
        events = list(t.run())
        batches = [e for e in events if e.kind == "batch"]
        assert all(isinstance(e.loss, float) and np.isfinite(e.loss) for e in batches)
        assert batches[-1].loss < batches[0].loss
    m, f = mixed.evaluate()["elbo"], full.evaluate()["elbo"]
    assert np.isfinite(m) and abs(m - f) < 0.05 * abs(f)
    assert all(p.dtype == torch.float32 for p in mixed.model.parameters())


def test_cli_refuses_bf16_on_the_cpu(capsys):
    from vae_core.cli import main

    assert main(["train", "--dataset", "digits", "--precision", "bf16", "--device", "cpu", "--epochs", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: precision 'bf16'") and "use precision 'fp32'" in err
