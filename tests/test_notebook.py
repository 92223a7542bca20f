"""workflow/notebooks/figures.ipynb runs headless on a fabricated project and rewrites every figure."""

from __future__ import annotations

import json
import pandas as pd
import pytest

from lorm.reporting.figures import PAPER_FIGURE, figure_paths
from lorm.reporting.notebook import NOTEBOOK
from lorm.reporting.table import write_tables
from test_reporting import _assert_figures, _metrics, _write

pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")


@pytest.mark.slow
def test_notebook_regenerates_every_figure(tmp_path):
    """Two betas (so the FAA-against-beta figure applies), a paper table, and no merge benchmark."""
    runs_dir = tmp_path / "results" / "runs" / "exp"
    items = [_metrics(m, s, beta=b) for b in (0.5, 0.1) for m in ("fedavg-lora", "lorm") for s in (0, 1)]
    items += [_metrics("joint", 0, beta=b) for b in (0.5, 0.1)]
    paths = [_write(runs_dir, m) for m in items]
    tables = tmp_path / "results" / "tables"
    write_tables(paths, str(tables / "main.csv"), str(tables / "main.md"))
    pd.DataFrame({"our_method": ["lorm", "fedavg-lora"], "dataset": ["CIFAR-100", "CIFAR-100"],
                  "ours_faa_weighted_mean": [70.0, 60.0], "ours_faa_weighted_std": [1.0, 2.0],
                  "paper_value": ["72.1", "65.0"]}).to_csv(tables / "paper.csv", index=False)

    from lorm.reporting.notebook import execute

    nb = execute(tmp_path, out=tmp_path / "executed.ipynb")
    expected = figure_paths([0.5, 0.1], "figures") + [f"figures/{PAPER_FIGURE}.{fmt}" for fmt in ("png", "pdf")]
    _assert_figures([str(tmp_path / path) for path in expected])
    written = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "figures").rglob("*") if p.is_file())
    assert written == sorted(expected)  # nothing else (no merge benchmark here)
    # every figure cell displayed its PNGs (the output the user sees)
    shown = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])
             if "image/png" in o.get("data", {})]
    assert len(shown) == len([p for p in expected if p.endswith(".png")])
    # the tracked notebook carries no outputs
    tracked = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert all(not cell.get("outputs") for cell in tracked["cells"] if cell["cell_type"] == "code")
