import dataclasses
import json

import pytest

from vae_core import ConfigError, ModelConfig, TrainConfig
from vae_core.config import LIVE_SETTINGS, kl_weight, parse_hidden_dims


def test_model_config_round_trip_json():
    cfg = ModelConfig(input_shape=(3, 32, 32), latent_dim=8, architecture="conv", hidden_dims=(32, 64), likelihood="gaussian", sigma=0.2, learn_sigma=True)
    again = ModelConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert ModelConfig(hidden_dims=[]).hidden_dims == ()


def test_train_config_round_trip_json():
    cfg = TrainConfig(epochs=3, lr=1e-4, warmup="cyclical", free_bits=0.5)
    assert TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg


@pytest.mark.parametrize("bad", [dict(latent_dim=0), dict(architecture="rnn"), dict(likelihood="poisson"), dict(sigma=0), dict(hidden_dims=(0,)), dict(architecture="conv", input_shape=(1, 8, 8)), dict(input_shape=(28, 28))])
def test_model_config_refuses(bad):
    with pytest.raises(ConfigError):
        ModelConfig(**bad)


@pytest.mark.parametrize("bad", [dict(batch_size=0), dict(lr=0), dict(lr=-1e-3), dict(beta=-1), dict(warmup="sine"), dict(free_bits=-0.1), dict(device="tpu")])
def test_train_config_refuses(bad):
    with pytest.raises(ConfigError):
        TrainConfig(**bad)


def test_kl_weight_schedules():
    assert kl_weight(2.0, "none", 10, 0.0) == 2.0
    assert kl_weight(2.0, "linear", 10, 5.0) == pytest.approx(1.0)
    assert kl_weight(2.0, "linear", 10, 50.0) == 2.0
    assert kl_weight(1.0, "cyclical", 4, 1.0) == pytest.approx(0.5)
    assert kl_weight(1.0, "cyclical", 4, 3.0) == 1.0
    assert kl_weight(1.0, "cyclical", 4, 4.0) == 0.0


@pytest.mark.parametrize(
    "text, dims",
    [("512,256", (512, 256)), (" 512 , 256 ", (512, 256)), ("64,", (64,)), ("8", (8,)), ("", ()), ("  ", ()),
     ("none", ()), ("None", ()), ("linear", ())],
)
def test_parse_hidden_dims(text, dims):
    assert parse_hidden_dims(text) == dims
    assert ModelConfig(hidden_dims=dims).hidden_dims == dims


@pytest.mark.parametrize("text, fragment", [("a,b", "'a'"), ("512,x", "'x'"), ("12.5", "'12.5'"), ("0", "positive"),
                                            ("64,-1", "positive"), (",", "no hidden sizes")])
def test_parse_hidden_dims_refuses(text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        parse_hidden_dims(text)


def test_live_settings_are_train_config_fields():
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    assert set(LIVE_SETTINGS) <= fields and len(set(LIVE_SETTINGS)) == len(LIVE_SETTINGS)
