"""``notebooks/watchlist.ipynb`` without ``../shared/data``: it must still run, on its made-up stand-in list.

``make test`` runs every notebook with nbmake where the shared data is present; this runs the watchlist
notebook once more with the ASPI path pointing at a folder that does not exist (as in a fresh clone).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
ASPI = "../shared/data/xinjiang_facilities/CampDataset_v1.csv"

pytestmark = pytest.mark.slow


def test_watchlist_notebook_runs_without_shared_data(tmp_path: Path) -> None:
    nb = nbformat.read(REPO / "notebooks" / "watchlist.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert ASPI in code[0].source
    code[0].source = code[0].source.replace(ASPI, str(tmp_path / "absent" / "CampDataset_v1.csv"))
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(REPO)}}).execute()
    text = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "SKIPPED the ASPI list" in text and "MADE-UP 3-row list" in text
    assert "3 sites from 3 rows" in text and "2 of 3 facilities have Tier >= 3" in text
    assert "example-facility-1: Example Facility #1, grid (200, 200) px" in text
    assert "tier 4 in the list" in text and "not measurable at 10 m" in text
