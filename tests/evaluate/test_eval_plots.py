"""PNG plots are written, valid, and skipped when their data is absent."""

from __future__ import annotations

from PIL import Image

from steerkit.evaluate import evaluate, write_report
from steerkit.evaluate import plots as P

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _valid_png(path):
    assert path.read_bytes()[:8] == PNG_MAGIC
    with Image.open(path) as im:
        im.verify()
        assert im.size[0] > 200 and im.size[1] > 200


def test_write_report_writes_every_file(tmp_path, make_items, perfect, refuses):
    items = make_items(splits=("forget", "retain"), per_cell=2)
    results = {"vanilla": evaluate(items, perfect, progress=False),
               "steered": evaluate(items, refuses, progress=False,
                                   gate_fn=lambda b: [float(it.split == "forget") for it in b])}
    paths = write_report(tmp_path, results)
    assert {"json", "markdown", "items", "metrics_png", "gates_png",
            "tradeoff_classification_png"} <= set(paths)
    for key, path in paths.items():
        assert path.exists()
        if key.endswith("_png"):
            _valid_png(path)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp leftovers


def test_plots_without_gates_or_retain(tmp_path, make_items, perfect):
    res = {"only": evaluate(make_items(splits=("forget",), per_cell=1), perfect, progress=False)}
    assert P.plot_gate_histograms(res, tmp_path / "g.png") is None
    assert P.plot_tradeoff(res, tmp_path / "t.png") is None
    _valid_png(P.plot_metric_bars(res, tmp_path / "m.png"))


def test_tradeoff_points_pool_modalities(make_items, perfect, refuses):
    items = make_items(splits=("forget", "retain"), per_cell=2)
    res = {"v": evaluate(items, perfect, progress=False),
           "s": evaluate(items, refuses, progress=False)}
    assert P.tradeoff_points(res) == {"v": (100.0, 100.0), "s": (0.0, 0.0)}
