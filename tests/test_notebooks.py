"""Every example notebook in docs/notebooks runs top to bottom on tiny random weights (what CI
does): a failing cell fails the test. The notebooks are stored without outputs."""

from __future__ import annotations

import os
from pathlib import Path

import nbclient  # the notebook extra (also in the test extra): nbclient, nbformat, ipykernel
import nbformat
import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "docs" / "notebooks").glob("*.ipynb"))


def test_the_notebooks_are_there_and_stripped() -> None:
    assert len(NOTEBOOKS) >= 4
    for path in NOTEBOOKS:
        book = nbformat.read(path, as_version=4)
        for cell in book.cells:
            if cell.cell_type == "code":
                assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: outputs not stripped"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs_top_to_bottom(path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("EDGETAM_CHECKPOINT", raising=False)  # the tiny random weights
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    src = str(Path(__file__).resolve().parents[1] / "src")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (src, os.environ.get("PYTHONPATH")) if p))
    if "fiftyone" in path.stem:  # a mongod of the test session's own, FiftyOne's folders in a temp root
        import fiftyone_helpers as h

        h.import_fiftyone()  # in this process, with its workaround (mongod_binary imports fiftyone)
        h.start_mongod()
        for key, value in {**h.fiftyone_env(), "HOME": str(h.ROOT / "home")}.items():
            monkeypatch.setenv(key, value)
    if "napari" in path.stem:
        # napari.Viewer() in a kernel normally turns on IPython's Qt event loop (`%gui qt`).
        # ipykernel 7 can then lose a shell reply (ipython/ipykernel#1554): the cell after the
        # viewer hung for the whole timeout on CI. The viewer, its layers and export_figure work
        # the same without the loop, so the kernel runs without it here.
        monkeypatch.setenv("NAPARI_APPLICATION_IPY_INTERACTIVE", "false")
    book = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(book, timeout=300, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()  # raises CellExecutionError naming the cell on the first failure
    outputs = [o for c in book.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    html = [o for o in outputs if "text/html" in o.get("data", {})]
    assert html, "no rich output was displayed"
    shown = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert "TINY RANDOM WEIGHTS" in shown  # clearly labelled
