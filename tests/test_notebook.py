"""The study notebook (notebooks/batch_normalization.ipynb): it must run top to bottom against the real API, and the
committed copy must show its outputs, made with the book's settings, so it reads well without being run."""

import json
import re
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "batch_normalization.ipynb"
# Keras' counts for the book's three models (Géron, ch. 11), independent of normlab's own summary code
TOTALS = {"baseline": "Total params: 266,610", "bn-after": "Total params: 271,346",
          "bn-before": "Total params: 270,946"}


def code_cells(notebook: dict) -> list[dict]:
    return [cell for cell in notebook["cells"] if cell["cell_type"] == "code"]


def text_of(cell: dict) -> str:
    """Everything a code cell showed: streams, and the plain-text and HTML forms of its results."""
    parts = []
    for output in cell.get("outputs", []):
        if output["output_type"] == "stream":
            parts.append(_joined(output["text"]))
        for mime in ("text/plain", "text/html"):
            if mime in output.get("data", {}):
                parts.append(_joined(output["data"][mime]))
    return "\n".join(parts)


def _joined(text) -> str:
    return "".join(text) if isinstance(text, list) else text


def cell_with(notebook: dict, source: str) -> dict:
    """The one code cell whose source contains ``source``."""
    found = [cell for cell in code_cells(notebook) if source in _joined(cell["source"])]
    assert len(found) == 1, f"{len(found)} code cells contain {source!r}"
    return found[0]


def check_outputs(notebook: dict, epochs: int, subset: int | None) -> None:
    """What a reader must see whatever the settings: no error, the settings, Keras' parameter counts, the first BN
    layer's trainable and non-trainable variables, the results table, figures and the sweep and diagnosis."""
    for cell in code_cells(notebook):
        errors = [o for o in cell.get("outputs", []) if o["output_type"] == "error"]
        assert not errors, f"cell {_joined(cell['source'])[:60]!r} failed: {errors[0]['ename']}: {errors[0]['evalue']}"
        assert cell.get("outputs"), f"cell {_joined(cell['source'])[:60]!r} shows nothing"
    settings = text_of(cell_with(notebook, "EPOCHS = int("))
    assert f"EPOCHS = {epochs}, SUBSET = {subset}, SEEDS = 5" in settings
    for preset, total in TOTALS.items():
        assert total in text_of(cell_with(notebook, f'model("{preset}")')), preset
    variables = text_of(cell_with(notebook, "bn_after.variables()"))
    for name, trainable in (("gamma", True), ("beta", True), ("moving_mean", False), ("moving_variance", False)):
        assert re.search(rf"'batch_normalization/{name}', \(784,\), {trainable}\)", variables), name
    table = text_of(cell_with(notebook, "reproduce-{TAG}"))
    assert "95% CI" in table and all(preset in table for preset in TOTALS)
    epoch_one = text_of(cell_with(notebook, "study.history"))
    assert [line.split()[0] for line in epoch_one.splitlines()] == list(TOTALS)
    assert f"after epoch {epochs}:" in epoch_one
    events = text_of(cell_with(notebook, "rglob(\"events.out.tfevents.*\")"))
    assert all(f"{preset}/seed{seed}" in events for preset in TOTALS for seed in range(5))
    sweep = text_of(cell_with(notebook, "lr-sweep-{TAG}"))  # three trials, each both presets at one learning rate
    assert "3 finished trial(s)" in sweep and all(f"{p} lr={lr}" in sweep for p in ("baseline", "bn-after")
                                                   for lr in ("0.001", "0.01", "0.1"))
    diagnosis = text_of(cell_with(notebook, "diagnose-{TAG}"))
    assert "presets baseline, bn-after" in diagnosis and "95% CI" in diagnosis
    for source in ('study.plot("curves")', 'sweep.plot("learning_rate")', 'diagnosis.plot("percentiles")',
                   'diagnosis.plot("landscape")'):
        outputs = cell_with(notebook, source)["outputs"]
        assert any("image/png" in o.get("data", {}) for o in outputs), f"{source} drew no figure"


def test_committed_notebook_shows_the_full_study():
    """The saved outputs are a full run (10 epochs, all images), so GitHub shows the book's numbers, not a test's."""
    notebook = json.loads(NOTEBOOK.read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    check_outputs(notebook, epochs=10, subset=None)


@pytest.mark.full_data
def test_notebook_runs_top_to_bottom(real_data, cli_env, tmp_path, monkeypatch):
    """One epoch on 5,000 images, in a fresh folder: every cell runs and shows what the full run shows."""
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("ipykernel")
    monkeypatch.setenv("XDG_CACHE_HOME", cli_env["XDG_CACHE_HOME"])  # the kernel inherits this environment
    monkeypatch.setenv("NORMLAB_NOTEBOOK_EPOCHS", "1")
    monkeypatch.setenv("NORMLAB_NOTEBOOK_SUBSET", "5000")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(notebook, timeout=900, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    check_outputs(json.loads(nbformat.writes(notebook)), epochs=1, subset=5000)
    assert (tmp_path / "runs" / "notebook" / "reproduce-1ep-5000img" / "results.json").is_file()
