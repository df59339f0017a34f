"""The local quickstart notebook, executed headless on synthetic data with the tiny model."""

import os
from pathlib import Path

import pytest
import yaml

from segrec.jobs.bootstrap.synthetic import config_dict, generate, write_parquet

pytestmark = [pytest.mark.notebooks, pytest.mark.slow]
ROOT = Path(__file__).resolve().parent.parent


# long: the notebook calls the CLI's entry points, which the run tests cover
@pytest.mark.long
def test_quickstart_runs_and_draws_its_plots(tmp_path, tiny_model_dir, monkeypatch):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    data = generate(n_users=60, items_per_persona=6, seed=8)
    conf = config_dict(write_parquet(data, str(tmp_path / "in")), str(tmp_path / "out"), model_path=tiny_model_dir)
    conf["segment"] = {"k": "auto", "k_min": 2, "k_max": 4}
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(conf))
    monkeypatch.setenv("SEGREC_CONF", str(tmp_path / "conf.yaml"))
    monkeypatch.setenv("SEGREC_SET", "model.max_length=32;model.chunk_overlap=4")

    notebook = nbformat.read(ROOT / "notebooks" / "quickstart.ipynb", as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(ROOT)}}
    ).execute()

    plots = tmp_path / "out" / "plots"
    assert sorted(os.listdir(plots)) == ["segment_sizes.png", "stability_by_k.png", "user_vectors_2d.png"]
    assert all((plots / p).stat().st_size > 5000 for p in os.listdir(plots))
    outputs = "".join(
        o.get("text", "") or o.get("data", {}).get("text/plain", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for o in cell.outputs
    )
    assert "succeeded" in outputs and "label terms" in outputs
    assert "because" in outputs and "because_similarity" in outputs  # each sample recommendation's reason
