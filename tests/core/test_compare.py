"""vae_core.compare: the held-out figures of a run, prior mismatch, MIG / SAP, the table, maps and draws; run names."""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vae_core import cli
from vae_core.checkpoint import restore_trainer, save_checkpoint
from vae_core.compare import (
    DEFAULT_EXAMPLES,
    DEFAULT_IWAE_K,
    TABLE_ROWS,
    RunFigures,
    compare_run,
    factor_matrix,
    format_value,
    interpolation_codes,
    map_coords,
    mig_score,
    prior_draws,
    prior_mismatch_kl,
    sap_score,
    write_table_csv,
)
from vae_core.config import ModelConfig, TrainConfig
from vae_core.data import load_dataset
from vae_core.errors import Cancelled, CheckpointError, ConfigError
from vae_core.runs import RunWriter, read_run, set_run_name
from vae_core.training import Trainer

ROOT = Path(__file__).resolve().parents[2]


def _train(dataset, beta, tmp, name, latent_dim=2, epochs=4, seed=0):
    torch.set_num_threads(1)
    trainer = Trainer(
        ModelConfig(input_shape=dataset.input_shape, latent_dim=latent_dim, hidden_dims=(64,)),
        TrainConfig(epochs=epochs, batch_size=64, beta=beta, seed=seed, device="cpu", num_threads=1),
        dataset,
    )
    for _ in trainer.run(epochs=epochs):
        pass
    return save_checkpoint(trainer, Path(tmp) / f"{name}.ckpt")


@pytest.fixture(scope="module")
def digits():
    return load_dataset({"source": "digits"})


@pytest.fixture(scope="module")
def ae_vae(digits, tmp_path_factory):
    """An autoencoder (beta 0) and a VAE (beta 1) on digits: same model, seed and epochs."""
    tmp = tmp_path_factory.mktemp("runs")
    return _train(digits, 0.0, tmp, "ae"), _train(digits, 1.0, tmp, "vae")


# ---------------------------------------------------------------------------
# compare_run
# ---------------------------------------------------------------------------


def test_autoencoder_has_a_higher_prior_mismatch_and_a_lower_elbo_than_the_vae(digits, ae_vae):
    ae, vae = (compare_run(p, digits, iwae_k=0) for p in ae_vae)
    # Measured: mismatch 17.2 (AE) against 4.1 (VAE), ELBO -43.6 against -29.7 nats; across
    # seeds 0-3 and 2 or 4 latent dims the gaps were never below 8.7 and 9.7 nats.
    assert ae.prior_mismatch_kl > vae.prior_mismatch_kl + 4.0
    assert ae.prior_mismatch_kl > 2 * vae.prior_mismatch_kl
    assert ae.elbo < vae.elbo - 4.0
    assert ae.posterior_mismatch_kl > vae.posterior_mismatch_kl + 4.0
    assert ae.beta == 0.0 and vae.beta == 1.0
    assert ae.name == "ae" and vae.name == "vae"


def test_figures_are_those_of_evaluate_on_the_whole_test_split(digits, ae_vae):
    path = ae_vae[1]
    f = compare_run(path, digits, iwae_k=7)
    ref = restore_trainer(str(path), digits, device="cpu").evaluate("test", iwae_k=7)
    assert f.n == ref["n"] == len(digits.test_idx)
    for key in ("elbo", "recon", "kl", "iwae"):
        assert getattr(f, key) == pytest.approx(ref[key], rel=1e-9, abs=1e-9)
    assert f.active_units == ref["active_units"]
    assert f.elbo == pytest.approx(-(f.recon + f.kl))
    assert f.iwae_k == 7 and f.epochs == 4 and f.steps > 0 and f.latent_dim == 2
    assert f.dataset == "digits" and f.checkpoint == str(path)
    assert f.mig is None and f.sap is None and f.factor_examples is None and f.notes == ()
    assert compare_run(path, digits, iwae_k=0).iwae is None


def test_dynamic_binarisation_reads_the_test_split_as_evaluate_does(tmp_path):
    ds = load_dataset({"source": "digits", "binarize": "dynamic"})
    path = _train(ds, 1.0, tmp_path, "bin", epochs=1)
    f = compare_run(path, ds, iwae_k=3)
    ref = restore_trainer(str(path), ds, device="cpu").evaluate("test", iwae_k=3)
    for key in ("elbo", "recon", "kl", "iwae"):
        assert getattr(f, key) == pytest.approx(ref[key], rel=1e-9)


def test_a_larger_test_split_is_a_fixed_subset_and_says_so(digits, ae_vae):
    seen = []
    a = compare_run(ae_vae[0], digits, iwae_k=0, max_examples=50, progress=lambda frac, text: seen.append(frac))
    b = compare_run(ae_vae[0], digits, iwae_k=0, max_examples=50)
    assert a.n == 50 and a.elbo == b.elbo and a.prior_mismatch_kl == b.prior_mismatch_kl
    assert any("50 of the 180 held-out examples" in note for note in a.notes)
    assert seen and seen[-1] == pytest.approx(1.0)
    assert compare_run(ae_vae[0], digits, iwae_k=0, max_examples=50, seed=1).elbo != a.elbo


def test_cancel_bad_arguments_and_a_dataset_that_does_not_fit(digits, ae_vae, tmp_path):
    with pytest.raises(Cancelled):
        compare_run(ae_vae[0], digits, iwae_k=0, cancelled=lambda: True)
    with pytest.raises(ConfigError):
        compare_run(ae_vae[0], digits, iwae_k=-1)
    with pytest.raises(ConfigError):
        compare_run(ae_vae[0], digits, max_examples=0)
    shapes = load_dataset({"source": "shapes", "n": 200, "size": 16})
    with pytest.raises(CheckpointError, match="ae.ckpt"):
        compare_run(ae_vae[0], shapes)
    with pytest.raises(CheckpointError, match="missing.ckpt"):
        compare_run(tmp_path / "missing.ckpt", digits)


def test_shapes_runs_get_mig_and_sap_on_the_held_out_examples(tmp_path):
    shapes = load_dataset({"source": "shapes", "n": 600, "size": 16})
    path = _train(shapes, 1.0, tmp_path, "shapes", latent_dim=3, epochs=1)
    f = compare_run(path, shapes, iwae_k=0, max_examples=40)
    n_test = len(shapes.test_idx)
    assert f.n == 40 and f.factor_examples == n_test
    assert 0.0 <= f.mig <= 1.0 and 0.0 <= f.sap <= 1.0
    assert any(f"MIG and SAP on {n_test} examples (fewer than {DEFAULT_EXAMPLES:,} held out)" in n for n in f.notes)
    g = compare_run(path, shapes, iwae_k=0, max_examples=40, factor_examples=30)
    assert g.factor_examples == 30 and any("MIG and SAP on 30 of the" in n for n in g.notes)


# ---------------------------------------------------------------------------
# Prior mismatch
# ---------------------------------------------------------------------------


def test_prior_mismatch_is_the_closed_form_kl_of_the_moment_matched_gaussian():
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(500, 3)) @ np.array([[1.5, 0.2, 0.0], [0.0, 0.7, 0.3], [0.0, 0.0, 0.4]]) + [0.5, -1, 2]
    m = mu.mean(0)
    s = np.cov(mu, rowvar=False, bias=True)
    q = torch.distributions.MultivariateNormal(torch.tensor(m), torch.tensor(s))
    p = torch.distributions.MultivariateNormal(torch.zeros(3, dtype=torch.float64), torch.eye(3, dtype=torch.float64))
    assert prior_mismatch_kl(mu) == pytest.approx(float(torch.distributions.kl_divergence(q, p)), rel=1e-10)
    one = rng.normal(2.0, 3.0, size=(1000, 1))
    v = one.var()
    assert prior_mismatch_kl(one) == pytest.approx(0.5 * (v + one.mean() ** 2 - 1 - math.log(v)), rel=1e-10)


def test_prior_mismatch_of_prior_draws_is_near_zero():
    assert 0.0 <= prior_mismatch_kl(np.random.default_rng(1).standard_normal((200_000, 4))) < 1e-3


def test_prior_mismatch_is_infinite_when_a_code_does_not_vary():
    rng = np.random.default_rng(2)
    mu = np.column_stack([rng.normal(size=300), np.full(300, 0.25)])
    assert prior_mismatch_kl(mu) == math.inf
    assert prior_mismatch_kl(mu[:1]) == math.inf  # one example: no covariance at all
    assert math.isfinite(prior_mismatch_kl(mu + rng.normal(scale=1e-3, size=mu.shape)))
    f = _figures(prior_mismatch_kl=math.inf)
    assert format_value(f, "prior_mismatch_kl") == "∞ (some codes do not vary)"
    assert f.to_dict()["prior_mismatch_kl"] is None


def test_aggregate_posterior_mismatch_adds_the_posterior_variances():
    # Every posterior is the prior: the aggregate posterior is N(0, I) exactly.
    zeros = np.zeros((50, 3))
    assert prior_mismatch_kl(zeros, zeros) == pytest.approx(0.0, abs=1e-12)
    assert prior_mismatch_kl(zeros) == math.inf
    rng = np.random.default_rng(3)
    mu, logvar = rng.normal(size=(400, 2)), rng.normal(-1, 0.2, size=(400, 2))
    s = np.cov(mu, rowvar=False, bias=True) + np.diag(np.exp(logvar).mean(0))
    m = mu.mean(0)
    expected = 0.5 * (np.trace(s) + m @ m - 2 - np.linalg.slogdet(s)[1])
    assert prior_mismatch_kl(mu, logvar) == pytest.approx(expected, rel=1e-12)


# ---------------------------------------------------------------------------
# MIG and SAP
# ---------------------------------------------------------------------------


def _factors(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    return np.column_stack([rng.integers(0, 3, n), rng.random((n, 3))]), rng


def test_mig_of_codes_that_copy_the_factors_is_near_one_and_of_random_codes_near_zero():
    y, rng = _factors()
    copied = y[:, [2, 0, 3, 1]]  # every factor copied exactly into its own dimension, in another order
    assert mig_score(copied, y) > 0.95
    assert mig_score(rng.random((y.shape[0], 4)), y) < 0.05
    # One factor copied exactly, the others random: that factor's gap is ~1, the others' ~0.
    one = np.column_stack([y[:, 1], rng.random((y.shape[0], 3))])
    assert mig_score(one, y) == pytest.approx(0.25, abs=0.03)
    assert mig_score(one[:, :1], y[:, 1:2]) > 0.95  # one code dimension: the second MI counts as 0


def test_mig_follows_disentanglement_lib_bins_and_leaves_out_constant_factors():
    from sklearn.metrics import mutual_info_score

    rng = np.random.default_rng(4)
    codes, y = rng.normal(size=(1000, 2)), rng.random((1000, 1))
    bins = [np.digitize(c, np.histogram(c, 20)[1][:-1]) for c in codes.T]
    fy = np.digitize(y[:, 0], np.histogram(y[:, 0], 20)[1][:-1])
    mi = sorted((mutual_info_score(fy, b) for b in bins), reverse=True)
    assert mig_score(codes, y) == pytest.approx((mi[0] - mi[1]) / mutual_info_score(fy, fy), rel=1e-12)
    with_constant = np.column_stack([y, np.ones(1000)])
    assert mig_score(codes, with_constant) == pytest.approx(mig_score(codes, y), rel=1e-12)
    assert math.isnan(mig_score(codes, np.ones((1000, 1))))


def test_sap_of_codes_that_copy_the_factors_is_high_and_of_random_codes_near_zero():
    y, rng = _factors(n=2000)
    discrete = [True, False, False, False]
    copied = y[:, [3, 1, 0, 2]]
    random_codes = rng.random((y.shape[0], 4))
    assert sap_score(copied[:, [0, 1, 3]], y[:, 1:], discrete=[False] * 3) > 0.99  # continuous: R^2 = 1
    # The shape class copied: a linear SVM on that dimension is right, on the others at chance (1/3).
    assert sap_score(copied, y, discrete=discrete) > 0.8
    assert sap_score(random_codes, y, discrete=discrete) < 0.05


def test_sap_continuous_score_is_the_squared_correlation():
    rng = np.random.default_rng(5)
    z = rng.normal(size=(500, 2))
    y = (z[:, 0] * 0.8 + rng.normal(scale=0.6, size=500))[:, None]
    r2 = [np.corrcoef(z[:, i], y[:, 0])[0, 1] ** 2 for i in range(2)]
    assert sap_score(z, y, discrete=[False]) == pytest.approx(abs(r2[0] - r2[1]), rel=1e-9)


def test_factor_matrix_of_shapes_and_of_a_dataset_without_factors(digits):
    assert factor_matrix(digits) is None
    shapes = load_dataset({"source": "shapes", "n": 100, "size": 16})
    matrix, names = factor_matrix(shapes)
    assert names == ["shape", "scale", "rotation", "x", "y"]
    assert matrix.shape == (100, 5)
    np.testing.assert_array_equal(matrix[:, 0], shapes.labels)
    np.testing.assert_allclose(matrix[:, 2], shapes.factors["rotation"])
    rows = shapes.test_idx
    np.testing.assert_array_equal(factor_matrix(shapes, rows)[0], matrix[rows])


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------


def _figures(**changes):
    base = dict(
        name="run", checkpoint="run.ckpt", dataset="digits", epochs=3, steps=90, beta=1.0, latent_dim=2, n=180,
        elbo=-29.123456789, recon=27.5, kl=1.623456789, iwae=-28.9, iwae_k=50, active_units=2,
        prior_mismatch_kl=3.25, mig=None, sap=None, factor_examples=None, notes=(),
    )
    base.update(changes)
    return RunFigures(**base)


def test_table_rows_and_formatting():
    keys = [row.key for row in TABLE_ROWS]
    assert keys[:6] == ["elbo", "iwae", "recon", "kl", "active_units", "prior_mismatch_kl"]
    assert {"mig", "sap"} <= set(keys)
    assert all(row.label and row.tooltip for row in TABLE_ROWS)
    assert all(hasattr(_figures(), key) for key in keys)
    labels = {row.key: row for row in TABLE_ROWS}
    assert "moment-matched" in labels["prior_mismatch_kl"].label
    assert "mean codes" in labels["mig"].tooltip.lower() and "20-bin" in labels["mig"].tooltip
    assert "higher is better" in labels["elbo"].tooltip
    f = _figures()
    assert format_value(f, "elbo") == "-29.12"
    assert format_value(f, "iwae") == "-28.90 (k=50)"
    assert format_value(f, "active_units") == "2 / 2"
    assert format_value(f, "mig") == "–" and format_value(_figures(iwae=None), "iwae") == "–"
    assert format_value(_figures(mig=0.51234), "mig") == "0.512"
    assert format_value(_figures(elbo=math.nan), "elbo") == "n/a"


def test_to_dict_is_json_ready():
    d = _figures(notes=("a note",), mig=math.nan, posterior_mismatch_kl=math.inf).to_dict()
    assert d["notes"] == ["a note"] and d["mig"] is None and d["posterior_mismatch_kl"] is None
    assert json.loads(json.dumps(d, allow_nan=False))["elbo"] == -29.123456789


def test_write_table_csv_has_a_column_per_run_and_raw_numbers(tmp_path):
    path = tmp_path / "table.csv"
    path.write_text("old")
    runs = [_figures(name="AE", beta=0.0, elbo=-44.80929952727), _figures(name="VAE", iwae=None, notes=("x",))]
    write_table_csv(path, runs)
    rows = list(csv.reader(path.open(encoding="utf-8")))
    assert rows[0] == ["figure", "AE", "VAE"]
    by_label = {r[0]: r[1:] for r in rows}
    elbo_label = next(row.label for row in TABLE_ROWS if row.key == "elbo")
    iwae_label = next(row.label for row in TABLE_ROWS if row.key == "iwae")
    assert [float(v) for v in by_label[elbo_label]] == [-44.80929952727, -29.123456789]
    assert by_label[iwae_label] == ["-28.9", ""]
    assert all(len(r) == 3 for r in rows)
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]  # no temporary file left


# ---------------------------------------------------------------------------
# Maps, draws, interpolations
# ---------------------------------------------------------------------------


def test_map_of_two_and_one_latent_dims_is_the_dims_themselves():
    mu = np.random.default_rng(6).normal(size=(30, 2)).astype(np.float32)
    m = map_coords(mu)
    np.testing.assert_array_equal(m.xy, mu)
    assert m.xy.dtype == np.float32 and m.axes == ("z1", "z2")
    np.testing.assert_array_equal(m.origin, [0, 0])
    one = map_coords(mu[:, :1])
    np.testing.assert_array_equal(one.xy[:, 0], mu[:, 0])
    np.testing.assert_array_equal(one.xy[:, 1], 0)


def test_pca_map_is_orthonormal_and_places_the_origin_where_z_is_zero():
    rng = np.random.default_rng(7)
    mu = rng.normal(size=(400, 6)) * [3, 2, 1, 0.5, 0.2, 0.1] + 4.0
    m = map_coords(mu)
    np.testing.assert_allclose(m.basis.T @ m.basis, np.eye(2), atol=1e-12)
    np.testing.assert_allclose(m.origin, (0 - mu.mean(0)) @ m.basis, atol=1e-12)
    np.testing.assert_allclose(m.project(np.zeros((1, 6)))[0], m.origin, atol=1e-5)
    np.testing.assert_allclose(m.xy, (mu - mu.mean(0)) @ m.basis, atol=1e-4)
    assert abs(m.basis[0, 0]) > 0.99 and abs(m.basis[1, 1]) > 0.99  # the two widest dimensions
    assert m.axes[0].startswith("PC1 (") and m.axes[1].startswith("PC2 (") and "6 latent" in m.note
    # The prior projects to N(origin, I_2): the circles around the origin are its sigma circles.
    draws = m.project(prior_draws(6, 100_000))
    np.testing.assert_allclose(np.cov(draws - m.origin, rowvar=False), np.eye(2), atol=0.02)


def test_prior_draws_share_their_first_columns_across_latent_sizes():
    a, b = prior_draws(2, 64, seed=3), prior_draws(5, 64, seed=3)
    assert a.dtype == np.float32 and a.shape == (64, 2) and b.shape == (64, 5)
    np.testing.assert_array_equal(a, b[:, :2])
    np.testing.assert_array_equal(a, prior_draws(2, 64, seed=3))
    assert not np.array_equal(a, prior_draws(2, 64, seed=4))
    assert not np.array_equal(b[:, 0], b[:, 1])


def test_interpolation_codes_are_linear_with_both_ends():
    a, b = np.array([0.0, 1.0, -2.0]), np.array([1.0, 3.0, 2.0])
    codes = interpolation_codes(a, b, 5)
    assert codes.shape == (5, 3) and codes.dtype == np.float32
    np.testing.assert_allclose(codes[0], a)
    np.testing.assert_allclose(codes[-1], b)
    np.testing.assert_allclose(codes[2], (a + b) / 2)
    with pytest.raises(ConfigError):
        interpolation_codes(a, b, 1)
    with pytest.raises(ConfigError):
        interpolation_codes(a, b[:2], 4)


# ---------------------------------------------------------------------------
# Run names
# ---------------------------------------------------------------------------


def test_set_run_name_round_trip_and_kept_when_the_run_continues(digits, tmp_path):
    trainer = Trainer(ModelConfig(input_shape=digits.input_shape, latent_dim=2, hidden_dims=(8,)),
                      TrainConfig(epochs=1, batch_size=256, device="cpu"), digits)
    folder = tmp_path / "run-0001"
    with RunWriter(folder, trainer) as w:
        w.start([{"rank": 0}])
    assert read_run(folder).name == "run-0001"
    set_run_name(folder, "  VAE, beta 1  ")
    assert read_run(folder).name == "VAE, beta 1"
    assert read_run(folder).config["model_config"]["latent_dim"] == 2  # the rest of the config is kept
    with RunWriter(folder, trainer) as w:
        w.start([{"rank": 0}])
    assert read_run(folder).name == "VAE, beta 1"
    for bad in ("", "   "):
        with pytest.raises(ConfigError, match="empty"):
            set_run_name(folder, bad)
    assert read_run(folder).name == "VAE, beta 1"
    with pytest.raises(ConfigError, match="config.json"):
        set_run_name(tmp_path / "nowhere", "x")


def test_compare_run_names_a_run_folder_checkpoint_by_its_run(digits, ae_vae, tmp_path):
    trainer = restore_trainer(str(ae_vae[0]), digits, device="cpu")
    folder = tmp_path / "folder-name"
    with RunWriter(folder, trainer) as w:
        w.start([{"rank": 0}])
        w.save()
    assert compare_run(folder / "latest.ckpt", digits, iwae_k=0, max_examples=20).name == "folder-name"
    set_run_name(folder, "autoencoder")
    assert compare_run(folder / "latest.ckpt", digits, iwae_k=0, max_examples=20).name == "autoencoder"
    assert compare_run(folder / "latest.ckpt", digits, iwae_k=0, max_examples=20, name="given").name == "given"


def test_cli_defaults_agree_and_the_module_imports_neither_torch_nor_sklearn():
    assert (cli.COMPARE_IWAE_K, cli.COMPARE_EXAMPLES) == (DEFAULT_IWAE_K, DEFAULT_EXAMPLES)
    code = "import sys, vae_core.compare; print(sorted(m for m in ('torch', 'sklearn') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
