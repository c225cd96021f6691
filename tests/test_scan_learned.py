"""The spatial model block by block over scene files (pipeline.scan.learned)."""

from __future__ import annotations

from pathlib import Path

import pytest
from shapely.geometry import box

from pipeline.config import Settings
from pipeline.errors import ConfigError, InputFileError
from pipeline.scan.learned import scan_pair_files_unet
from tests.test_scan_pair_files import EPSG, ROOFS, X0, Y0, _write_pair


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Path], dict[str, Path]]:
    return _write_pair(tmp_path_factory.mktemp("pair"))


def _roof_boxes() -> list:
    return [box(X0 + c.start * 10, Y0 - r.stop * 10, X0 + c.stop * 10, Y0 - r.start * 10) for r, c in ROOFS]


def test_blocks_give_the_flags_of_one_whole_block(pair: tuple) -> None:
    before, after = pair
    whole = scan_pair_files_unet(before, after, Settings(), "rgb", tile_px=256)
    blocks = scan_pair_files_unet(before, after, Settings(), "rgb", tile_px=64, halo=64)
    assert len(whole) >= 2
    assert len(blocks) == len(whole)
    assert blocks["area_m2"].sum() == pytest.approx(whole["area_m2"].sum(), rel=1e-3)
    utm = blocks.to_crs(EPSG)
    on_roofs = 0.0
    for roof in _roof_boxes():  # both planted roofs are flagged (the model under-calls uniform roof interiors)
        covered = utm.geometry.intersection(roof).area.sum()
        assert covered / roof.area > 0.1
        on_roofs += covered
    assert on_roofs / utm.area.sum() > 0.8  # and little else is
    assert set(blocks["method"]) == {"pair-unet-rgb"}
    assert list(blocks["confidence"]) == sorted(blocks["confidence"], reverse=True)


def test_missing_model_bands_fail_with_one_clear_error(pair: tuple) -> None:
    before, after = pair
    with pytest.raises(InputFileError, match="needs bands"):
        scan_pair_files_unet({"B02": before["B02"]}, after, Settings(), "rgb")


def test_blocks_that_do_not_fit_the_models_pooling_fail_with_one_clear_error(pair: tuple) -> None:
    before, after = pair
    with pytest.raises(ConfigError, match="multiples of 8 pixels"):
        scan_pair_files_unet(before, after, Settings(), "rgb", tile_px=100)
