"""The headless CLI: train / resume / evaluate / export, errors, signals, and no Qt."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from vae_core.checkpoint import load_checkpoint
from vae_core.cli import main

ROOT = Path(__file__).resolve().parents[2]
SMALL = ["--hidden", "16", "--batch-size", "32", "--threads", "1"]


@pytest.fixture(scope="module")
def npz(tmp_path_factory):
    rng = np.random.default_rng(0)
    images = (rng.random((200, 8, 8)) * 255).astype(np.uint8)
    images[:100, :4] //= 5
    path = tmp_path_factory.mktemp("data") / "tiny.npz"
    np.savez(path, images=images, labels=np.arange(200) % 3)
    return str(path)


@pytest.fixture(scope="module")
def trained(npz, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run.ckpt"
    assert main(["train", "--dataset", npz, "--epochs", "2", "--out", str(out), "--json", *SMALL]) == 0
    return out


def _env():
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def test_train_json_writes_one_object_per_epoch(npz, tmp_path, capsys):
    out = tmp_path / "a.ckpt"
    rc = main(["train", "--dataset", npz, "--epochs", "2", "--latent-dim", "3", "--out", str(out), "--json",
               "--beta", "0.5", "--seed", "7", *SMALL])
    assert rc == 0
    lines = capsys.readouterr().out.strip().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["epoch"] for r in records] == [1, 2]
    for r in records:
        assert {"epoch", "step", "train_loss", "test_elbo", "test_recon", "test_kl", "active_units",
                "kl_per_dim"} <= set(r)
        assert len(r["kl_per_dim"]) == 3
        assert r["test_elbo"] == pytest.approx(-(r["test_recon"] + r["test_kl"]))
    ck = load_checkpoint(out)
    assert ck.epoch == 2 and ck.model_config.latent_dim == 3 and ck.model_config.hidden_dims == (16,)
    assert ck.train_config.beta == 0.5 and ck.train_config.seed == 7
    assert ck.dataset_spec["source"] == npz
    assert len(ck.history.epochs) == 2


def test_train_progress_bar_and_resume(npz, tmp_path, capsys):
    out = tmp_path / "b.ckpt"
    assert main(["train", "--dataset", npz, "--epochs", "1", "--out", str(out), "--hidden", "none",
                 "--likelihood", "continuous_bernoulli"]) == 0
    captured = capsys.readouterr()
    assert "epoch 1: test ELBO" in captured.out and "1/1" in captured.err and "saved" in captured.err
    assert load_checkpoint(out).model_config.hidden_dims == ()

    assert main(["train", "--resume", str(out), "--epochs", "3", "--lr", "0.002", "--latent-dim", "5",
                 "--json"]) == 0
    captured = capsys.readouterr()
    assert [json.loads(line)["epoch"] for line in captured.out.splitlines()] == [2, 3]
    assert "ignoring --latent-dim" in captured.err
    ck = load_checkpoint(out)  # --out defaults to the resumed file
    assert ck.epoch == 3 and ck.model_config.latent_dim == 2
    assert ck.history.changes == [{"step": ck.history.epochs[0]["step"], "name": "lr", "old": 1e-3, "new": 0.002}]


def test_evaluate_json_and_table(trained, capsys):
    assert main(["evaluate", str(trained), "--iwae-k", "20", "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["split"] == "test" and r["n"] == 20 and r["iwae_k"] == 20
    assert r["elbo"] == pytest.approx(-(r["recon"] + r["kl"]))
    assert r["iwae"] >= r["elbo"] - 1.0
    assert 0 <= r["active_units"] <= r["latent_dim"] == 2 and len(r["kl_per_dim"]) == 2
    ck = load_checkpoint(trained)
    assert r["elbo"] == pytest.approx(ck.history.epochs[-1]["test_elbo"], abs=1e-9)

    assert main(["evaluate", str(trained)]) == 0
    table = capsys.readouterr().out
    for word in ("ELBO", "recon", "KL", "IWAE", "active units", "KL per dim", "nats"):
        assert word in table


def test_export_csv(trained, npz, tmp_path):
    out = tmp_path / "lat.csv"
    assert main(["export", str(trained), "--latents", str(out)]) == 0
    with open(out, newline="") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["index", "label", "mu_1", "mu_2", "sigma_1", "sigma_2"]
    assert len(rows) == 201
    assert [int(r[0]) for r in rows[1:]] == list(range(200))
    assert [int(r[1]) for r in rows[1:6]] == [0, 1, 2, 0, 1]
    ck = load_checkpoint(trained)
    mu = np.array([[float(v) for v in r[2:4]] for r in rows[1:]])
    sigma = np.array([[float(v) for v in r[4:6]] for r in rows[1:]])
    np.testing.assert_allclose(mu, ck.latents, rtol=6e-6, atol=0)  # six significant digits
    np.testing.assert_allclose(sigma, np.exp(0.5 * ck.latent_logvar), rtol=6e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat.csv"]


def test_export_to_stdout_is_the_same_text(trained, tmp_path, capsys):
    out = tmp_path / "lat.csv"
    assert main(["export", str(trained), "--latents", str(out)]) == 0
    capsys.readouterr()
    assert main(["export", str(trained), "--latents", "-"]) == 0
    assert capsys.readouterr().out == out.read_text()


def test_export_without_labels_leaves_label_empty(trained, tmp_path):
    data = tmp_path / "nolabels.npy"
    np.save(data, (np.random.default_rng(1).random((30, 8, 8)) * 255).astype(np.uint8))
    out = tmp_path / "l.csv"
    assert main(["export", str(trained), "--dataset", str(data), "--latents", str(out)]) == 0
    rows = list(csv.reader(open(out, newline="")))
    assert len(rows) == 31 and all(r[1] == "" for r in rows[1:])


@pytest.mark.parametrize(
    "argv, fragment",
    [
        (["train", "--dataset", "/no/such/folder", "--epochs", "1"], "no such file"),
        (["train", "--dataset", "NPZ", "--lr", "-1"], "learning rate"),
        (["train", "--dataset", "NPZ", "--hidden", "12,x"], "--hidden"),
        (["train", "--dataset", "NPZ", "--arch", "conv"], "28x28"),
        (["evaluate", "/no/such.ckpt"], "cannot open checkpoint"),
        (["evaluate", "CKPT", "--dataset", "BIGGER"], "expects 1x8x8 images"),
        (["export", "NOTCKPT", "--latents", "x.csv"], "not a safetensors file"),
        (["train", "--resume", "NOTCKPT"], "not a safetensors file"),
    ],
)
def test_user_errors_exit_2_without_traceback(argv, fragment, npz, trained, tmp_path, capsys):
    bigger = tmp_path / "big.npy"
    np.save(bigger, np.zeros((10, 12, 12), dtype=np.uint8))
    notckpt = tmp_path / "x.ckpt"
    notckpt.write_bytes(b"hello world, not a checkpoint")
    subst = {"NPZ": npz, "CKPT": str(trained), "BIGGER": str(bigger), "NOTCKPT": str(notckpt)}
    argv = [subst.get(a, a) for a in argv]
    os.chdir(tmp_path)
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("error: ") and fragment in err
    assert "Traceback" not in err


def test_usage_errors_and_help(capsys):
    assert main(["train", "--latent-dim", "two"]) == 2
    assert main(["--help"]) == 0
    assert "train" in capsys.readouterr().out


def test_divergence_saves_and_exits_nonzero(npz, tmp_path, capsys):
    out = tmp_path / "d.ckpt"
    rc = main(["train", "--dataset", npz, "--epochs", "3", "--lr", "50", "--out", str(out), "--json", *SMALL])
    err = capsys.readouterr().err
    assert rc == 1
    assert "rolled back" in err and "--resume" in err
    ck = load_checkpoint(out)
    assert ck.history.changes[-1]["name"] == "rollback"


@pytest.mark.parametrize("sig, code, name", [(signal.SIGTERM, 143, "SIGTERM"), (signal.SIGINT, 130, "SIGINT")])
def test_signal_stops_after_batch_and_saves(npz, tmp_path, sig, code, name):
    out = tmp_path / "sig.ckpt"
    proc = subprocess.Popen(
        [sys.executable, "-m", "vae_core", "train", "--dataset", npz, "--epochs", "100000", "--out", str(out),
         "--json", *SMALL],
        cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        first = proc.stdout.readline()  # training is under way once an epoch has ended
        assert json.loads(first)["epoch"] == 1
        time.sleep(0.2)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and f"stopped by {name}" in lines[0] and "Traceback" not in err
    ck = load_checkpoint(out)
    assert 1 <= ck.epoch < 100000 and ck.step > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sig.ckpt"]


def test_cli_imports_no_qt(npz, tmp_path):
    code = f"""
import sys
from vae_core.cli import main
out = {str(tmp_path / 'q.ckpt')!r}
rc = main(["train", "--dataset", {npz!r}, "--epochs", "1", "--out", out, "--json", "--hidden", "8"])
rc |= main(["evaluate", out, "--json"])
rc |= main(["export", out, "--latents", {str(tmp_path / 'q.csv')!r}])
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("PySide6", "pyqtgraph", "superqt", "app", "shiboken6"))
print("QT:", bad)
sys.exit(rc)
"""
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=_env(), capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 0, res.stderr
    assert "QT: []" in res.stdout
