"""Comparing trained models: the figures of one run on held-out data, and the pieces of a side-by-side view.

``compare_run`` evaluates one checkpoint on the test split of a dataset and
returns a ``RunFigures``: the held-out ELBO, reconstruction and KL (beta = 1,
nats per example, exactly as ``vae-explorer evaluate`` computes them), the
IWAE_k estimate of log p(x), the active units, the prior mismatch (the KL
between a Gaussian moment-matched to the mean codes and the prior N(0, I)),
and on datasets with ground-truth factors (Shapes) the MIG and SAP
disentanglement scores as disentanglement_lib computes them.  ``TABLE_ROWS``,
``format_value`` and ``write_table_csv`` make the comparison table of several
runs; ``map_coords``, ``prior_draws`` and ``interpolation_codes`` give the
latent maps, the shared prior draws and the interpolations of the view.

Only ``compare_run`` needs torch, which it imports when called; everything
else here is numpy (scikit-learn is imported inside ``mig_score`` and
``sap_score``), so a GUI can use this module without loading either.
"""

from __future__ import annotations

import csv
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from .errors import Cancelled, ConfigError
from .files import atomic_file

#: Radii of the circles drawn on a latent map around z = 0: the prior's 1 and 2 sigma circles.
PRIOR_RADII = (1.0, 2.0)
#: Importance samples of the IWAE estimate of log p(x).
DEFAULT_IWAE_K = 50
#: Held-out examples the figures use (a seeded subset when the test split is larger), also for MIG and SAP.
DEFAULT_EXAMPLES = 10_000
#: Bins per code dimension (and per continuous factor) of the histograms MIG discretizes with.
MIG_BINS = 20

ProgressFn = Callable[[float, str], None]
CancelFn = Callable[[], bool]


# ---------------------------------------------------------------------------
# The figures of one run
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFigures:
    """What the comparison table shows about one run; every figure in nats per example unless said otherwise.

    ``n`` held-out (test split) examples give ``elbo`` = -(``recon`` + ``kl``),
    a lower bound on log p(x) (beta = 1, one sample of z per example),
    ``iwae`` (the IWAE_k estimate of log p(x) with k = ``iwae_k``; None when
    k is 0), ``active_units`` (latent dims whose mean code varies over the
    examples by more than 0.01, Burda et al.) and ``prior_mismatch_kl``
    (KL(N(m, S) || N(0, I)) for m, S the mean and covariance of the mean
    codes; inf when S is singular, see ``prior_mismatch_kl``).
    ``posterior_mismatch_kl`` is the same KL for the Gaussian moment-matched
    to the aggregate posterior (the mixture of every example's q(z|x)).
    ``mig`` and ``sap`` (unitless, 0 to 1) are set only when the dataset has
    ground-truth factors, computed on ``factor_examples`` held-out examples.
    ``notes`` says what a reader should know (subsets, fewer examples).
    """

    name: str
    checkpoint: str
    dataset: str
    epochs: int
    steps: int
    beta: float
    latent_dim: int
    n: int
    elbo: float
    recon: float
    kl: float
    iwae: float | None
    iwae_k: int
    active_units: int
    prior_mismatch_kl: float
    mig: float | None
    sap: float | None
    factor_examples: int | None
    notes: tuple[str, ...]
    posterior_mismatch_kl: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """The figures as JSON types (``notes`` a list; numbers that are not finite become None)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, float) and not math.isfinite(value):
                value = None
            out[name] = value
        return out


def _subset(rows: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """``rows`` when there are at most ``cap``, else a seeded subset of ``cap`` of them kept in their order."""
    if cap < 1:
        raise ConfigError(f"the number of examples must be at least 1, got {cap}")
    if rows.shape[0] <= cap:
        return rows
    pick = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(7,))).permutation(rows.shape[0])[:cap]
    return rows[np.sort(pick)]


def _count(n: int) -> str:
    return f"{n:,}"


def default_run_name(checkpoint_path: str | os.PathLike) -> str:
    """The name a checkpoint goes by: its run folder's name (``RunRecord.name``) when it lies in one, else its stem."""
    from .runs import CONFIG, read_run

    path = Path(checkpoint_path)
    if (path.parent / CONFIG).is_file():
        try:
            record = read_run(path.parent)
        except OSError:
            record = None
        if record is not None and record.config is not None:
            return record.name
    return path.stem


def compare_run(
    checkpoint: Any,
    dataset: Any,
    *,
    name: str | None = None,
    iwae_k: int = DEFAULT_IWAE_K,
    max_examples: int = DEFAULT_EXAMPLES,
    factor_examples: int = DEFAULT_EXAMPLES,
    seed: int = 0,
    device: str = "cpu",
    progress: ProgressFn | None = None,
    cancelled: CancelFn | None = None,
) -> RunFigures:
    """The figures of one checkpoint (a ``Checkpoint`` or a path) on the test split of ``dataset``.

    The held-out examples are ``dataset.test_idx``, or when there are more
    than ``max_examples`` a subset of that many drawn with ``seed`` (the same
    for every run compared on the same dataset).  They are read as the
    trainer's evaluation reads them: with dynamic binarisation every batch
    is the same Bernoulli sample of its grey levels, drawn from the run's
    seed, and the noise of z comes from the run's evaluation stream, so on a
    whole test split the ELBO, recon, KL and IWAE are those of
    ``vae-explorer evaluate``.  The codes of the prior mismatch and of MIG /
    SAP are the mean codes of those same examples (MIG and SAP on at most
    ``factor_examples`` of them, a seeded subset when there are more).

    ``progress(fraction, text)`` is called after every batch; ``cancelled()``
    is asked before every batch and True raises ``Cancelled``.  Raises
    CheckpointError naming the file when its model does not take the
    dataset's images, ConfigError for a bad argument or an unavailable device.
    """
    import torch

    from .checkpoint import Checkpoint, check_dataset_fits, load_checkpoint
    from .model import resolve_device
    from .training import evaluate_model
    from .training.batches import DeviceImages, ImageSplit
    from .training.evaluate import ACTIVE_UNIT_THRESHOLD
    from .training.trainer import _STREAM_EVAL, _STREAM_TEST_BINARIZE, derive_seed, make_generator

    if iwae_k < 0:
        raise ConfigError(f"iwae_k must be >= 0, got {iwae_k}")
    if max_examples < 1 or factor_examples < 1:
        raise ConfigError("the numbers of examples must be at least 1")
    ckpt = checkpoint if isinstance(checkpoint, Checkpoint) else load_checkpoint(checkpoint)
    check_dataset_fits(ckpt, dataset)
    dev = resolve_device(str(device))
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {device!r} asked for, but CUDA is not available here; use the CPU")
    run_name = name if name else default_run_name(ckpt.path)
    tcfg, mcfg = ckpt.train_config, ckpt.model_config
    d = mcfg.latent_dim
    notes: list[str] = []

    test = np.asarray(dataset.test_idx, dtype=np.int64)
    if test.shape[0] == 0:
        raise ConfigError(f"dataset {getattr(dataset, 'name', '?')!r} has no held-out (test split) examples")
    eval_rows = _subset(test, max_examples, seed)
    if eval_rows.shape[0] < test.shape[0]:
        notes.append(
            f"figures on {_count(eval_rows.shape[0])} of the {_count(test.shape[0])} held-out examples "
            f"(a fixed subset, seed {seed})"
        )

    model = ckpt.build_model().to(dev)
    model.eval()
    images = DeviceImages(dataset.images, dev)
    dynamic = getattr(dataset, "binarize", "none") == "dynamic"
    bin_seed = derive_seed(tcfg.seed, _STREAM_TEST_BINARIZE)

    def split(rows: np.ndarray) -> Any:
        r = torch.as_tensor(rows)
        if not dynamic:
            return ImageSplit(images, r)
        return ImageSplit(images, r, binarize=lambda start: make_generator(dev, bin_seed, start))

    factors = factor_matrix(dataset)
    factor_rows = _subset(test, factor_examples, seed) if factors is not None else None
    same_rows = factor_rows is not None and np.array_equal(factor_rows, eval_rows)
    bs = tcfg.eval_batch_size
    x = split(eval_rows)
    n = int(x.shape[0])
    work = n + (0 if factor_rows is None or same_rows else int(factor_rows.shape[0]))
    done = 0

    def step(count: int, text: str) -> None:
        nonlocal done
        done += count
        if progress is not None:
            progress(min(1.0, done / work), text)

    def check() -> None:
        if cancelled is not None and cancelled():
            raise Cancelled("the comparison was cancelled")

    generator = make_generator(dev, tcfg.seed, _STREAM_EVAL)
    recon = kl = iw = 0.0
    mus, logvars = [], []
    with torch.no_grad():
        for s in range(0, n, bs):
            check()
            xb = x[s : s + bs]
            m = int(xb.shape[0])
            # One batch at a time through evaluate_model with one generator: the
            # same draws, in the same order, as evaluate_model over the whole split.
            res = evaluate_model(model, xb, bs, iwae_k, generator)
            recon += res["recon"] * m
            kl += res["kl"] * m
            if iwae_k > 0:
                iw += res["iwae"] * m
            mu_b, lv_b = model.encode(xb)
            mus.append(mu_b.double().cpu().numpy())
            logvars.append(lv_b.double().cpu().numpy())
            step(m, f"{run_name}: evaluating {_count(s + m)} of {_count(n)} held-out examples")
    mu = np.concatenate(mus)
    logvar = np.concatenate(logvars)
    variance = mu.var(0) if n > 1 else np.zeros(d)
    r, k = recon / n, kl / n

    mig = sap = None
    n_factor: int | None = None
    if factors is not None and factor_rows is not None:
        fmat, fnames = factors
        if same_rows:
            codes = mu
        else:
            fx = split(factor_rows)
            parts = []
            with torch.no_grad():
                for s in range(0, int(fx.shape[0]), bs):
                    check()
                    xb = fx[s : s + bs]
                    parts.append(model.encode(xb)[0].double().cpu().numpy())
                    step(int(xb.shape[0]), f"{run_name}: encoding examples for MIG and SAP")
            codes = np.concatenate(parts)
        n_factor = int(codes.shape[0])
        y = fmat[factor_rows]
        check()
        mig = mig_score(codes, y, bins=MIG_BINS, discrete=[c == "shape" for c in fnames])
        check()
        sap = sap_score(codes, y, discrete=[c == "shape" for c in fnames], seed=seed)
        if n_factor < factor_examples:
            notes.append(
                f"MIG and SAP on {_count(n_factor)} examples (fewer than {_count(factor_examples)} held out)"
            )
        elif n_factor < test.shape[0]:
            notes.append(f"MIG and SAP on {_count(n_factor)} of the {_count(test.shape[0])} held-out examples")

    return RunFigures(
        name=run_name,
        checkpoint=str(ckpt.path),
        dataset=str(getattr(dataset, "name", "")),
        epochs=int(ckpt.epoch),
        steps=int(ckpt.step),
        beta=float(tcfg.beta),
        latent_dim=int(d),
        n=n,
        elbo=-(r + k),
        recon=r,
        kl=k,
        iwae=iw / n if iwae_k > 0 else None,
        iwae_k=int(iwae_k),
        active_units=int((variance > ACTIVE_UNIT_THRESHOLD).sum()),
        prior_mismatch_kl=prior_mismatch_kl(mu),
        mig=mig,
        sap=sap,
        factor_examples=n_factor,
        notes=tuple(notes),
        posterior_mismatch_kl=prior_mismatch_kl(mu, logvar),
    )


# ---------------------------------------------------------------------------
# Prior mismatch
# ---------------------------------------------------------------------------


def _gaussian_kl_to_standard(m: np.ndarray, s: np.ndarray) -> float:
    d = m.shape[0]
    sign, logdet = np.linalg.slogdet(s)
    if sign <= 0 or not np.isfinite(logdet):
        return math.inf
    return float(0.5 * (np.trace(s) + m @ m - d - logdet))


def prior_mismatch_kl(mu: np.ndarray, logvar: np.ndarray | None = None) -> float:
    """KL(N(m, S) || N(0, I)) in nats, for the Gaussian moment-matched to the codes ``mu`` (N, d).

    m is the mean of the codes and S their covariance, the biased (maximum
    likelihood, divide by N) estimate: ``np.cov(mu, rowvar=False, bias=True)``;
    the KL is 0.5 (tr S + m.m - d - log det S).  It is 0 only when the codes
    have mean 0 and covariance I, and it says nothing about their shape
    beyond those two moments (the Gaussian is an approximation).

    When S is singular (a latent dimension whose codes do not vary at all,
    or fewer examples than dimensions) the moment-matched Gaussian has no
    density and the KL is +inf: that is returned as ``math.inf``, with no
    ridge added.  A dimension that varies only a little (a collapsed unit)
    gives a large finite value.

    With ``logvar`` (N, d), the log variances of q(z|x), the Gaussian is
    moment-matched to the aggregate posterior, the mixture of the N
    posteriors N(mu_n, diag exp(logvar_n)): its covariance is
    S + diag(mean_n exp(logvar_n)) (the law of total covariance).
    """
    x = np.asarray(mu, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] == 0:
        raise ConfigError(f"codes must be shaped (N, d) with N >= 1, got {x.shape}")
    m = x.mean(0)
    s = np.atleast_2d(np.cov(x, rowvar=False, bias=True)) if x.shape[0] > 1 else np.zeros((x.shape[1],) * 2)
    if logvar is not None:
        lv = np.asarray(logvar, dtype=np.float64)
        if lv.shape != x.shape:
            raise ConfigError(f"logvar must have the shape of the codes {x.shape}, got {lv.shape}")
        s = s + np.diag(np.exp(lv).mean(0))
    return _gaussian_kl_to_standard(m, s)


# ---------------------------------------------------------------------------
# Disentanglement: MIG and SAP
# ---------------------------------------------------------------------------


def _histogram_discretize(values: np.ndarray, bins: int) -> np.ndarray:
    """Each column's bin numbers among ``bins`` equal-width bins over its range (disentanglement_lib's rule)."""
    out = np.zeros(values.shape, dtype=np.int64)
    for j in range(values.shape[1]):
        col = values[:, j]
        out[:, j] = np.digitize(col, np.histogram(col, bins)[1][:-1])
    return out


def _discrete_columns(factors: np.ndarray, discrete: Sequence[bool] | None, bins: int) -> list[bool]:
    if discrete is not None:
        flags = [bool(v) for v in discrete]
        if len(flags) != factors.shape[1]:
            raise ConfigError(f"discrete has {len(flags)} entries for {factors.shape[1]} factors")
        return flags
    flags = []
    for j in range(factors.shape[1]):
        col = factors[:, j]
        flags.append(bool(np.all(col == np.round(col))) and np.unique(col).shape[0] <= bins)
    return flags


def _check_codes_factors(codes: np.ndarray, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    c = np.asarray(codes, dtype=np.float64)
    y = np.asarray(factors, dtype=np.float64)
    if y.ndim == 1:
        y = y[:, None]
    if c.ndim != 2 or y.ndim != 2 or c.shape[0] != y.shape[0] or c.shape[0] < 2:
        raise ConfigError(f"codes (N, d) and factors (N, K) with N >= 2 expected, got {c.shape} and {y.shape}")
    return c, y


def _gap_top_two(scores: np.ndarray) -> np.ndarray:
    """Per column, the largest score minus the second largest (the second is 0 when there is one row)."""
    ordered = np.sort(scores, axis=0)[::-1]
    second = ordered[1] if ordered.shape[0] > 1 else np.zeros(ordered.shape[1])
    return ordered[0] - second


def mig_score(
    codes: np.ndarray, factors: np.ndarray, bins: int = MIG_BINS, discrete: Sequence[bool] | None = None
) -> float:
    """Mutual Information Gap (Chen et al. 2018) as disentanglement_lib's ``compute_mig`` computes it.

    ``codes`` (N, d) are the mean codes, ``factors`` (N, K) the ground-truth
    factors of the same examples.  Each code dimension is discretized into
    ``bins`` equal-width bins over its range (``np.histogram`` edges and
    ``np.digitize``, as ``_histogram_discretize``); the mutual information
    of every (code dim, factor) pair is ``sklearn.metrics.mutual_info_score``
    of the discrete values (nats) and H(factor) is the factor's
    ``mutual_info_score`` with itself.  MIG is the mean over factors of
    (largest MI - second largest MI) / H(factor), from 0 to 1.

    disentanglement_lib's factors are discrete; a continuous factor (a
    column marked False in ``discrete``; by default every column that is
    not integer-valued with at most ``bins`` values) is discretized into the
    same ``bins`` equal-width bins.  A factor that does not vary (H = 0) is
    left out of the mean; nan when none varies.  With one code dimension
    the second largest MI is taken as 0.
    """
    from sklearn.metrics import mutual_info_score

    c, y = _check_codes_factors(codes, factors)
    flags = _discrete_columns(y, discrete, bins)
    zc = _histogram_discretize(c, bins)
    zy = np.empty(y.shape, dtype=np.int64)
    for j, is_discrete in enumerate(flags):
        zy[:, j] = np.unique(y[:, j], return_inverse=True)[1] if is_discrete else _histogram_discretize(y[:, j : j + 1], bins)[:, 0]
    mi = np.array([[mutual_info_score(zy[:, j], zc[:, i]) for j in range(y.shape[1])] for i in range(c.shape[1])])
    entropy = np.array([mutual_info_score(zy[:, j], zy[:, j]) for j in range(y.shape[1])])
    keep = entropy > 0
    if not keep.any():
        return math.nan
    return float(np.mean(_gap_top_two(mi)[keep] / entropy[keep]))


def sap_score(
    codes: np.ndarray,
    factors: np.ndarray,
    discrete: Sequence[bool] | None = None,
    test_fraction: float = 0.5,
    seed: int = 0,
) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018) as disentanglement_lib's ``compute_sap`` computes it.

    For every (code dim i, factor j) a score: for a continuous factor the R^2
    of a linear fit of the factor on that code dimension,
    cov(z_i, y_j)^2 / (var z_i var y_j) (``np.cov``, ddof 1; 0 when var z_i
    <= 1e-12), over all the examples; for a discrete factor the accuracy on
    held-back examples of ``sklearn.svm.LinearSVC(C=0.01,
    class_weight="balanced")`` fitted on that one code dimension, the
    examples split at random (``seed``) into ``1 - test_fraction`` to fit
    and ``test_fraction`` to score (disentanglement_lib draws the two sets
    separately).  SAP is the mean over factors of the gap between the two
    largest scores of its column, from 0 to 1.  ``discrete`` marks the
    discrete factors (default: the integer-valued columns with at most 20
    values); disentanglement_lib treats all factors one way, here each is
    scored by its kind.  A factor that does not vary is left out (nan when
    none varies); with one code dimension the second score is taken as 0.
    """
    c, y = _check_codes_factors(codes, factors)
    flags = _discrete_columns(y, discrete, MIG_BINS)
    n = c.shape[0]
    order = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(11,))).permutation(n)
    n_test = min(max(int(round(test_fraction * n)), 1), n - 1)
    test_idx, train_idx = order[:n_test], order[n_test:]
    scores = np.zeros((c.shape[1], y.shape[1]))
    keep = np.ones(y.shape[1], dtype=bool)
    for j, is_discrete in enumerate(flags):
        yj = y[:, j]
        if np.unique(yj).shape[0] < 2:
            keep[j] = False
            continue
        for i in range(c.shape[1]):
            zi = c[:, i]
            if not is_discrete:
                cov = np.cov(zi, yj, ddof=1)
                scores[i, j] = cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]) if cov[0, 0] > 1e-12 else 0.0
                continue
            y_fit = yj[train_idx]
            if np.unique(y_fit).shape[0] < 2:
                scores[i, j] = float(np.mean(y_fit[0] == yj[test_idx]))
                continue
            from sklearn.svm import LinearSVC

            classifier = LinearSVC(C=0.01, class_weight="balanced")
            classifier.fit(zi[train_idx, None], y_fit)
            scores[i, j] = float(np.mean(classifier.predict(zi[test_idx, None]) == yj[test_idx]))
    if not keep.any():
        return math.nan
    return float(np.mean(_gap_top_two(scores)[keep]))


#: The factor columns of a Shapes dataset, in order: the shape class (discrete), then the continuous factors.
SHAPES_FACTORS = ("shape", "scale", "rotation", "x", "y")


def factor_matrix(dataset: Any, rows: Any = None) -> tuple[np.ndarray, list[str]] | None:
    """The ground-truth factors of a dataset as an (N, K) float64 array and their names; None without factors.

    For Shapes the columns are "shape" (the class label: 0 square, 1
    ellipse, 2 heart), "scale", "rotation" (radians), "x" and "y" (the
    centre as fractions of the width and height).  The rows are the
    examples at ``rows`` (anything NumPy indexing takes), by default every
    example in dataset order; ``compare_run`` takes those of the held-out
    examples its codes come from.
    """
    factors = getattr(dataset, "factors", None)
    if not factors:
        return None
    columns: list[np.ndarray] = []
    names: list[str] = []
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        columns.append(np.asarray(labels, dtype=np.float64))
        names.append("shape")
    ordered = [k for k in SHAPES_FACTORS if k in factors] + sorted(k for k in factors if k not in SHAPES_FACTORS)
    for key in ordered:
        columns.append(np.asarray(factors[key], dtype=np.float64))
        names.append(key)
    matrix = np.stack(columns, axis=1)
    if rows is not None:
        matrix = matrix[rows]
    return matrix, names


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TableRow:
    """One row of the comparison table: the ``RunFigures`` field it shows, its label and tooltip."""

    key: str
    label: str
    tooltip: str


TABLE_ROWS: tuple[TableRow, ...] = (
    TableRow("elbo", "held-out ELBO (nats)",
             "Lower bound on log p(x) (beta = 1, one sample of z), mean over the held-out test examples "
             f"(at most {DEFAULT_EXAMPLES:,}); nats per example, higher is better."),
    TableRow("iwae", "IWAE_k log p(x) (nats)",
             "Importance-weighted estimate of log p(x) with k samples of z per example (k in brackets), "
             "mean over the held-out examples; tighter than the ELBO, higher is better."),
    TableRow("recon", "reconstruction (nats)",
             "-E_q[log p(x|z)]: nats per example needed to describe x given its code; lower is better."),
    TableRow("kl", "KL(q(z|x) || p(z)) (nats)",
             "Mean KL between each example's posterior and the prior N(0, I), nats per example: "
             "what the code costs. ELBO = -(reconstruction + KL)."),
    TableRow("active_units", "active units",
             "Latent dimensions whose mean code varies over the held-out examples by more than 0.01 "
             "(Burda et al. 2016), of all dimensions."),
    TableRow("prior_mismatch_kl", "prior mismatch, moment-matched (nats)",
             "KL(N(m, S) || N(0, I)) for the Gaussian with the mean m and covariance S of the mean codes "
             "of the held-out examples: an approximation of how far the codes sit from the prior. "
             "0 = same mean and covariance as the prior; ∞ when some code dimension does not vary."),
    TableRow("posterior_mismatch_kl", "aggregate posterior mismatch, moment-matched (nats)",
             "The same KL for the Gaussian moment-matched to the aggregate posterior, the mixture of every "
             "held-out example's q(z|x): covariance S + mean posterior variance. A VAE drives it towards 0."),
    TableRow("mig", "MIG",
             "Mutual Information Gap (as disentanglement_lib): mean over the ground-truth factors of the "
             "gap between the two code dimensions most informative about it, divided by its entropy. "
             f"Mean codes, {MIG_BINS}-bin histograms per code dimension (continuous factors binned the same "
             f"way), on up to {DEFAULT_EXAMPLES:,} held-out examples. 0 to 1, higher = more disentangled."),
    TableRow("sap", "SAP",
             "Separated Attribute Predictability (as disentanglement_lib): mean over the factors of the gap "
             "between the two code dimensions that best predict it (R² of a linear fit for continuous "
             "factors, a linear SVM's accuracy for the shape class). Mean codes, up to "
             f"{DEFAULT_EXAMPLES:,} held-out examples. 0 to 1, higher = more disentangled."),
    TableRow("beta", "beta", "The KL weight of the training loss (0 = autoencoder, 1 = VAE, > 1 = beta-VAE)."),
    TableRow("latent_dim", "latent dimensions", "Dimensions of the latent code z."),
    TableRow("epochs", "epochs trained", "Epochs (and steps) of training behind the checkpoint."),
    TableRow("n", "held-out examples", "Test-split examples the figures above are computed on."),
)


def format_value(figures: RunFigures, key: str) -> str:
    """A figure as the comparison table shows it; "–" where it does not apply (no factors, IWAE skipped)."""
    value = getattr(figures, key)
    if value is None:
        return "–"
    if key == "active_units":
        return f"{value} / {figures.latent_dim}"
    if key == "epochs":
        return f"{value} ({figures.steps:,} steps)"
    if key in ("latent_dim", "n"):
        return f"{int(value):,}"
    if key == "beta":
        return f"{value:g}"
    v = float(value)
    if math.isnan(v):
        return "n/a"
    if math.isinf(v):
        return "∞ (some codes do not vary)" if key.endswith("mismatch_kl") and v > 0 else ("∞" if v > 0 else "-∞")
    if key in ("mig", "sap"):
        return f"{v:.3f}"
    if key == "iwae":
        return f"{v:.2f} (k={figures.iwae_k})"
    return f"{v:.2f}"


def _raw(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_table_csv(path: str | os.PathLike, figures: Sequence[RunFigures]) -> None:
    """Write the comparison table to ``path`` as CSV, atomically: a row per figure, a column per run.

    The header is "figure" then the runs' names; the first column is the
    row's label; the cells are the raw numbers (Python's shortest exact
    repr of each float, "inf" for an infinite one, empty where a figure does
    not apply).  Rows: the checkpoint and dataset, then ``TABLE_ROWS``.
    Raises OSError when the file cannot be written (an older file is kept).
    """
    runs = list(figures)
    with atomic_file(path, text=True) as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["figure", *[r.name for r in runs]])
        w.writerow(["checkpoint", *[r.checkpoint for r in runs]])
        w.writerow(["dataset", *[r.dataset for r in runs]])
        for row in TABLE_ROWS:
            w.writerow([row.label, *[_raw(getattr(r, row.key)) for r in runs]])
        w.writerow(["steps trained", *[str(r.steps) for r in runs]])
        w.writerow(["IWAE k", *[str(r.iwae_k) for r in runs]])
        w.writerow(["MIG / SAP examples", *[_raw(r.factor_examples) for r in runs]])
        w.writerow(["notes", *["; ".join(r.notes) for r in runs]])


# ---------------------------------------------------------------------------
# Maps, prior draws, interpolations
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class MapCoords:
    """2-D coordinates of a run's codes for its latent map.

    ``xy`` (N, 2) float32 are the points, ``axes`` the axis titles,
    ``origin`` (2,) where z = 0 lands (the prior's circles of radius
    ``PRIOR_RADII`` are centred there), ``note`` what the axes are.  The map
    is ``(z - mean) @ basis``: ``mean`` (d,) and ``basis`` (d, 2), with
    ``project`` placing other codes (prior draws, interpolations) on it.
    """

    xy: np.ndarray
    axes: tuple[str, str]
    origin: np.ndarray
    note: str
    mean: np.ndarray | None = field(default=None, repr=False)
    basis: np.ndarray | None = field(default=None, repr=False)

    def project(self, z: np.ndarray) -> np.ndarray:
        """Codes (M, d) placed on this map: (M, 2) float32."""
        z = np.asarray(z, dtype=np.float64)
        if self.basis is None or self.mean is None:
            raise ConfigError("this map has no projection")
        return ((z - self.mean) @ self.basis).astype(np.float32)


def map_coords(mu: np.ndarray) -> MapCoords:
    """The map of codes ``mu`` (N, d): the latent dims themselves when d <= 2, else their first two principal axes.

    d == 2: (z1, z2); d == 1: z1 against 0.  d > 2: PCA by numpy's SVD of
    the centred codes; the axes are orthonormal and not whitened, so the
    prior N(0, I) projects to N(origin, I_2) and circles of radius 1 and 2
    around ``origin`` are its 1 and 2 sigma circles.  Each axis is titled
    with the share of the codes' variance it carries; an axis's sign is
    chosen so that its largest loading is positive (the same codes always
    give the same map).
    """
    x = np.asarray(mu, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] < 1:
        raise ConfigError(f"codes must be shaped (N, d) with d >= 1, got {x.shape}")
    n, d = x.shape
    if d <= 2:
        basis = np.eye(d, 2)
        mean = np.zeros(d)
        xy = (x @ basis).astype(np.float32)
        if d == 2:
            return MapCoords(xy, ("z1", "z2"), np.zeros(2), "the two latent dimensions", mean, basis)
        return MapCoords(xy, ("z1", ""), np.zeros(2), "the one latent dimension (drawn against 0)", mean, basis)
    mean = x.mean(0) if n else np.zeros(d)
    centred = x - mean
    if n >= 2:
        _, s, vt = np.linalg.svd(centred, full_matrices=False)
        basis = vt[:2].T.copy()
        var = s**2
    else:
        basis = np.eye(d, 2)
        var = np.zeros(2)
    for j in range(2):
        if basis[np.argmax(np.abs(basis[:, j])), j] < 0:
            basis[:, j] = -basis[:, j]
    total = float(var.sum())
    shares = [float(var[j]) / total if total > 0 and j < var.shape[0] else 0.0 for j in range(2)]
    axes = (f"PC1 ({shares[0]:.0%})", f"PC2 ({shares[1]:.0%})")
    xy = (centred @ basis).astype(np.float32)
    origin = (-mean) @ basis
    return MapCoords(xy, axes, origin, f"PCA of the {d} latent dimensions", mean, basis)


def prior_draws(latent_dim: int, n: int, seed: int = 0) -> np.ndarray:
    """``n`` draws of z from the prior N(0, I) as float32 (n, latent_dim).

    Column j comes from its own stream of ``seed``, so the same seed gives
    the same first columns whatever ``latent_dim`` is: models of equal
    latent dimension decode exactly the same z, and a model with more
    dimensions sees the same values in the dimensions they share.
    """
    if latent_dim < 1 or n < 0:
        raise ConfigError(f"latent_dim must be >= 1 and n >= 0, got {latent_dim} and {n}")
    out = np.empty((int(n), int(latent_dim)), dtype=np.float32)
    for j in range(int(latent_dim)):
        rng = np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=(j,)))
        out[:, j] = rng.standard_normal(int(n))
    return out


def interpolation_codes(a: np.ndarray, b: np.ndarray, steps: int) -> np.ndarray:
    """``steps`` codes on the straight line from ``a`` to ``b`` (both included), float32 (steps, d).

    ``vae_core.explore.interpolate`` in its linear mode, with its complaints as ConfigError.
    """
    from .explore import interpolate

    try:
        return interpolate(a, b, steps, mode="linear")
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
