"""The GUI benchmark's probes work (untimed): the launch report and the throughput arithmetic."""

from __future__ import annotations

import pytest

from bench import bench_gui


def test_launch_probe_reports_first_paint_without_umap(tmp_path):
    result = bench_gui._launch(1, str(tmp_path))
    assert 0 < result["launch_to_paint_s"] < 60
    assert result["launch_umap_imported"] == 0, "umap must not be imported before the window is painted"


class _Ev:
    def __init__(self, epoch, batch):
        self.epoch, self.batch = epoch, batch


def test_throughput_counts_batches_after_warmup_and_leaves_out_evaluations():
    # 2 epochs of 30 batches of 10 examples (the last one 5), 0.01 s per batch,
    # reported in groups of 5 as the program does; each evaluation takes 0.5 s.
    rec = bench_gui._Recorder(batch_size=10, n_train=295)
    t = 0.0
    for epoch in range(2):
        for start in range(0, 30, 5):
            t += 0.05
            rec.marks.append((t, [(epoch, b, rec._samples(b)) for b in range(start, start + 5)]))
        t += 0.5
        rec.epochs.append(t)
    # Counting starts at the group ending with batch 19 of epoch 0 (t = 0.2):
    # 10 more batches of epoch 0 (the last one short) and all 30 of epoch 1,
    # in 0.1 + 0.3 s of training.
    assert rec.rate() == pytest.approx((95 + 295) / 0.4)
