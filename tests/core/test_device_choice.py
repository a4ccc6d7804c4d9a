"""Which devices there are, and a checkpoint trained on a GPU opened where there is none."""

from __future__ import annotations

import pytest
import torch

from vae_core.checkpoint import load_checkpoint, restore_trainer, save_checkpoint
from vae_core.config import ModelConfig, TrainConfig
from vae_core.data import load_dataset
from vae_core.errors import ConfigError
from vae_core.model import cuda_devices
from vae_core.training import Trainer

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is here: a checkpoint's GPU is there")


def test_cuda_devices_names_each_gpu():
    names = cuda_devices()
    expected = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    assert names == expected
    assert all(isinstance(n, str) and n for n in names)


def _gpu_checkpoint(tmp_path, precision: str = "fp32"):
    """A checkpoint whose run names cuda:0 (trained here on the CPU, the device given to the trainer)."""
    ds = load_dataset("digits")
    mcfg = ModelConfig(input_shape=ds.input_shape, latent_dim=2, hidden_dims=(16,))
    t = Trainer(mcfg, TrainConfig(epochs=1, batch_size=256, device="cuda:0", precision="fp32"), ds, device="cpu")
    list(t.run())
    path = save_checkpoint(t, tmp_path / "gpu.ckpt")
    ck = load_checkpoint(path)
    ck.train_config = ck.train_config.replace(precision=precision)
    assert ck.train_config.device == "cuda:0"
    return ck, ds, t


@no_cuda
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_a_gpu_checkpoint_continues_on_the_cpu_where_there_is_no_cuda(tmp_path, precision):
    ck, ds, t = _gpu_checkpoint(tmp_path, precision)
    b = restore_trainer(ck, ds)
    assert b.device.type == "cpu"
    assert (b.train_config.device, b.train_config.precision) == ("cpu", "fp32")
    assert (b.epoch, b.step) == (t.epoch, t.step)
    events = list(b.run(epochs=1))
    assert [e.epoch for e in events if e.kind == "epoch"] == [2]
    assert ck.train_config.device == "cuda:0"  # the loaded checkpoint is left as it was


@no_cuda
def test_a_gpu_asked_for_explicitly_is_still_refused(tmp_path):
    ck, ds, _ = _gpu_checkpoint(tmp_path)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        restore_trainer(ck, ds, device="cuda")
