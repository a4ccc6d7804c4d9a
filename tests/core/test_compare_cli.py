"""``vae-explorer compare``: the table, --json, --csv, run folders, and the errors a user can make."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest

from vae_core.cli import main
from vae_core.runs import set_run_name

SMALL = ["--dataset", "digits", "--hidden", "32", "--batch-size", "64", "--threads", "1", "--json"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """An autoencoder checkpoint file and a VAE run folder, both on digits."""
    tmp = tmp_path_factory.mktemp("compare")
    ae = tmp / "ae.ckpt"
    assert main(["train", *SMALL, "--epochs", "2", "--beta", "0", "--out", str(ae)]) == 0
    folder = tmp / "vae-run"
    assert main(["train", *SMALL, "--epochs", "2", "--beta", "1", "--run-dir", str(folder)]) == 0
    return ae, folder


def test_compare_prints_a_table_with_a_column_per_run(runs, capsys):
    ae, folder = runs
    capsys.readouterr()
    assert main(["compare", str(ae), str(folder), "--iwae-k", "5"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    header = next(line for line in lines if "ae" in line.split())
    assert header.split() == ["ae", "vae-run"]
    assert "digits" in lines[0] and "nats per example" in lines[0]
    for label in ("held-out ELBO (nats)", "IWAE_k log p(x) (nats)", "active units", "prior mismatch"):
        assert any(line.startswith(label) for line in lines), label
    assert "(k=5)" in out
    assert not any(line.startswith("MIG") for line in lines)  # digits has no ground-truth factors


def test_compare_json_gives_one_object_per_run_and_names_follow_the_run(runs, tmp_path, capsys):
    ae, folder = runs
    capsys.readouterr()
    assert main(["compare", str(ae), str(folder), "--iwae-k", "0", "--json"]) == 0
    captured = capsys.readouterr()
    records = [json.loads(line) for line in captured.out.splitlines()]
    assert [r["name"] for r in records] == ["ae", "vae-run"]
    assert records[1]["checkpoint"].endswith("latest.ckpt")
    for r in records:
        assert r["dataset"] == "digits" and r["n"] == 180 and r["iwae"] is None and r["iwae_k"] == 0
        assert r["elbo"] == pytest.approx(-(r["recon"] + r["kl"]))
        assert {"prior_mismatch_kl", "active_units", "mig", "sap", "notes", "latent_dim"} <= set(r)
    assert [r["beta"] for r in records] == [0.0, 1.0]
    assert records[0]["prior_mismatch_kl"] > records[1]["prior_mismatch_kl"]
    assert captured.err == ""  # no progress under --json

    renamed = shutil.copytree(folder, tmp_path / "copied-run")
    set_run_name(renamed, "VAE")
    assert main(["compare", str(renamed), "--iwae-k", "0", "--examples", "30", "--json"]) == 0
    record = json.loads(capsys.readouterr().out)
    assert record["name"] == "VAE" and record["n"] == 30
    assert any("30 of the 180" in note for note in record["notes"])


def test_compare_matches_evaluate(runs, capsys):
    ae, _ = runs
    capsys.readouterr()
    assert main(["evaluate", str(ae), "--iwae-k", "4", "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    assert main(["compare", str(ae), "--iwae-k", "4", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    for key in ("elbo", "recon", "kl", "iwae", "active_units", "n"):
        assert got[key] == pytest.approx(ref[key], rel=1e-9)


def test_compare_writes_the_csv(runs, tmp_path, capsys):
    ae, folder = runs
    path = tmp_path / "table.csv"
    assert main(["compare", str(ae), str(folder), "--iwae-k", "0", "--csv", str(path), "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    rows = list(csv.reader(path.open(encoding="utf-8")))
    assert rows[0] == ["figure", "ae", "vae-run"]
    elbo = next(r for r in rows if r[0] == "held-out ELBO (nats)")
    assert [float(v) for v in elbo[1:]] == [r["elbo"] for r in records]


def test_same_names_get_their_folder(runs, tmp_path, capsys):
    ae, _ = runs
    other = tmp_path / "copy"
    other.mkdir()
    (other / "ae.ckpt").write_bytes(ae.read_bytes())
    assert main(["compare", str(ae), str(other / "ae.ckpt"), "--iwae-k", "0", "--examples", "20", "--json"]) == 0
    names = [json.loads(line)["name"] for line in capsys.readouterr().out.splitlines()]
    assert names == [f"{ae.parent.name}/ae", "copy/ae"]


def test_a_missing_file_is_an_error_naming_it(runs, tmp_path, capsys):
    ae, _ = runs
    missing = tmp_path / "nothing-here.ckpt"
    assert main(["compare", str(ae), str(missing)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "nothing-here.ckpt" in err
    empty = tmp_path / "empty-folder"
    empty.mkdir()
    assert main(["compare", str(empty)]) == 2
    assert "empty-folder" in capsys.readouterr().err


def test_a_checkpoint_that_does_not_fit_the_dataset_is_an_error(runs, tmp_path, capsys):
    ae, _ = runs
    rng = np.random.default_rng(0)
    npz = tmp_path / "six.npz"
    np.savez(npz, images=(rng.random((120, 6, 6)) * 255).astype(np.uint8))
    six = tmp_path / "six.ckpt"
    assert main(["train", "--dataset", str(npz), "--hidden", "8", "--epochs", "1", "--threads", "1", "--json",
                 "--out", str(six)]) == 0
    capsys.readouterr()
    assert main(["compare", str(ae), str(six), "--json"]) == 2
    err = capsys.readouterr().err
    assert "six.ckpt" in err and "6x6" in err and "8x8" in err
    assert main(["compare", str(ae), "--dataset", str(npz), "--json"]) == 2
    assert "ae.ckpt" in capsys.readouterr().err


@pytest.mark.parametrize("bad", [["--iwae-k", "-1"], ["--examples", "0"]])
def test_bad_numbers_are_refused(runs, bad, capsys):
    assert main(["compare", str(runs[0]), *bad]) == 2
    assert capsys.readouterr().err.startswith("error: --")


def test_compare_needs_a_checkpoint(capsys):
    assert main(["compare"]) == 2
    assert "CKPT" in capsys.readouterr().err
