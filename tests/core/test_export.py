"""The latent CSV writer: columns, labels by name, quoting, many rows, atomic writes."""

from __future__ import annotations

import csv
import io

import numpy as np
import pytest

from vae_core import export
from vae_core.export import iter_latents_csv, write_latents_csv


def _reference(latents, logvar, labels, names, xy):
    """The same file written row by row with csv.writer."""
    d = latents.shape[1]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["index", "label"] + [f"mu_{j + 1}" for j in range(d)] + [f"sigma_{j + 1}" for j in range(d)]
               + ["map_x", "map_y"])
    for i in range(len(latents)):
        lab = int(labels[i])
        text = "" if lab < 0 else (names[lab] if lab < len(names) else str(lab))
        sigma = np.exp(0.5 * logvar[i].astype(np.float64))
        w.writerow([i, text] + [f"{v:.6g}" for v in (*latents[i].tolist(), *sigma.tolist(), *xy[i].tolist())])
    return buf.getvalue()


def test_all_columns_match_csv_writer(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 50, 3
    mu = rng.normal(size=(n, d)).astype(np.float32) * 10.0 ** rng.integers(-8, 8, (n, d))
    lv = rng.normal(size=(n, d)).astype(np.float32)
    xy = rng.normal(size=(n, 2)).astype(np.float32)
    labels = rng.integers(-1, 5, n)  # -1: no label; 4: beyond the names
    names = ["zero", "one, with a comma", 'two "quoted"', "three"]
    path = tmp_path / "lat.csv"
    assert write_latents_csv(path, mu, lv, labels, names, xy) == n
    text = path.read_text(encoding="utf-8")
    assert text == _reference(mu, lv, labels, names, xy)
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["index", "label", "mu_1", "mu_2", "mu_3", "sigma_1", "sigma_2", "sigma_3", "map_x", "map_y"]
    assert {r[1] for r in rows[1:]} == {"", "zero", "one, with a comma", 'two "quoted"', "three", "4"}
    np.testing.assert_allclose(np.array([r[2:5] for r in rows[1:]], dtype=np.float64), mu, rtol=6e-6)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat.csv"]


def test_only_the_codes(tmp_path):
    mu = np.arange(6, dtype=np.float32).reshape(3, 2) / 3
    path = tmp_path / "mu.csv"
    assert write_latents_csv(path, mu) == 3
    assert path.read_text().splitlines() == ["index,label,mu_1,mu_2", "0,,0,0.333333", "1,,0.666667,1",
                                             "2,,1.33333,1.66667"]


def test_labels_without_names_are_numbers():
    text = "".join(iter_latents_csv(np.zeros((3, 1)), labels=np.array([2, -1, 0])))
    assert [r[1] for r in csv.reader(io.StringIO(text))][1:] == ["2", "", "0"]


def test_rows_across_blocks(tmp_path, monkeypatch):
    monkeypatch.setattr(export, "_BLOCK_ROWS", 7)
    n = 7 * 3 + 2
    mu = np.random.default_rng(1).normal(size=(n, 2))
    path = tmp_path / "blocks.csv"
    assert write_latents_csv(path, mu, labels=np.arange(n) % 2, label_names=["a", "b"]) == n
    rows = list(csv.reader(open(path, newline="")))
    assert len(rows) == n + 1 and [int(r[0]) for r in rows[1:]] == list(range(n))
    assert [r[1] for r in rows[1:]] == ["a", "b"] * (n // 2) + ["a"]
    np.testing.assert_allclose(np.array([r[2:] for r in rows[1:]], dtype=np.float64), mu, rtol=6e-6)


def test_a_million_rows(tmp_path):
    n = 1_000_000
    mu = np.random.default_rng(2).normal(size=(n, 2)).astype(np.float32)
    path = tmp_path / "big.csv"
    assert write_latents_csv(path, mu, labels=np.arange(n) % 10) == n
    with open(path) as f:
        lines = f.readlines()
    assert len(lines) == n + 1 and lines[-1].startswith(f"{n - 1},9,")


@pytest.mark.parametrize("bad", [{"logvar": np.zeros((4, 2))}, {"labels": np.zeros(4)}, {"xy": np.zeros((5, 3))}])
def test_shapes_that_do_not_match_write_nothing(tmp_path, bad):
    path = tmp_path / "x.csv"
    with pytest.raises(ValueError, match="match the latents"):
        write_latents_csv(path, np.zeros((5, 2)), **bad)
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_keeps_the_old_file_and_removes_the_part_file(tmp_path, monkeypatch):
    path = tmp_path / "lat.csv"
    path.write_text("old\n")

    def full(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.os, "replace", full)
    with pytest.raises(OSError, match="No space"):
        write_latents_csv(path, np.zeros((10, 2)))
    assert path.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lat.csv"]
