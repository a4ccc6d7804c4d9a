"""A large dataset on its way says how far it is, and the panel takes a million shapes."""

from __future__ import annotations

from app.session import Session


def test_loading_shapes_reports_progress_until_loaded(qtbot):
    s = Session()
    texts: list[str] = []
    loaded = []
    s.progressText.connect(texts.append)
    s.datasetLoaded.connect(lambda ds: loaded.append(ds))
    s.load_dataset({"source": "shapes", "n": 60_000, "size": 32})
    qtbot.waitUntil(lambda: bool(loaded), timeout=120_000)
    loading = [t for t in texts if t.startswith("Loading:")]
    assert loading, texts
    assert any("shapes" in t for t in loading)
    assert loaded[0].n == 60_000
    s.shutdown()


def test_the_panel_offers_a_million_shapes(qtbot):
    from app.widgets.training_panel import TrainingPanel
    from vae_core.config import parse_hidden_dims

    panel = TrainingPanel(parse_hidden_dims)
    qtbot.addWidget(panel)
    assert panel.shapesCountSpin.maximum() >= 1_000_000
