"""Settings from params.yaml: validation, error messages naming the key, the params hash."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.config import Settings, Source, load_settings, params_hash, settings_from_dict
from pipeline.errors import ConfigError, InputFileError

REPO = Path(__file__).resolve().parents[1]


def _repo_params() -> dict[str, Any]:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def _write(tmp_path: Path, data: dict[str, Any] | str) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_repository_params_load() -> None:
    s = load_settings(REPO / "params.yaml")
    assert isinstance(s, Settings)
    assert s.sites == ("arid-compound", "farmland-compound", "town-edge", "control-farmland", "grey-desert")
    assert s.fetch.source is Source.SYNTHETIC
    assert s.fetch.start == dt.date(2020, 6, 1) and s.fetch.end == dt.date(2023, 6, 30)
    assert s.detect.persistence == 0.8 and s.detect.threshold is None
    assert s.tile.tile_size_px == 256


def test_repository_params_have_no_yaml_dates() -> None:
    # DVC refuses YAML date values in params files ("Unsupported value of type 'date'"): keep them quoted.
    def walk(v: Any) -> None:
        if isinstance(v, dict):
            for x in v.values():
                walk(x)
        elif isinstance(v, list):
            for x in v:
                walk(x)
        else:
            assert not isinstance(v, (dt.date, dt.datetime)), v

    walk(_repo_params())


def test_missing_sections_take_defaults(tmp_path: Path) -> None:
    s = load_settings(_write(tmp_path, {"sites": ["a"]}))
    assert s.sites == ("a",) and s.detect == Settings().detect


@pytest.mark.parametrize(
    ("section", "key", "value", "needle"),
    [
        ("detect", "persistence", 1.5, "detect.persistence"),
        ("detect", "min_score", -1, "detect.min_score"),
        ("tile", "tile_size_px", 8, "tile.tile_size_px"),
        ("fetch", "bands", ["B02", "B13"], "fetch.bands"),
        ("fetch", "source", "ftp", "fetch.source"),
        ("flag", "min_area_m2", "big", "flag.min_area_m2"),
    ],
)
def test_bad_value_names_the_key(tmp_path: Path, section: str, key: str, value: Any, needle: str) -> None:
    data = _repo_params()
    data[section][key] = value
    path = _write(tmp_path, data)
    with pytest.raises(ConfigError) as info:
        load_settings(path)
    msg = str(info.value)
    assert needle in msg and str(path) in msg
    assert "\n" not in msg


def test_unknown_key_is_refused(tmp_path: Path) -> None:
    data = _repo_params()
    data["detect"]["persistance"] = 0.5  # typo
    with pytest.raises(ConfigError, match="detect.persistance"):
        load_settings(_write(tmp_path, data))


def test_end_before_start(tmp_path: Path) -> None:
    data = _repo_params()
    data["fetch"]["end"] = "2019-01-01"
    with pytest.raises(ConfigError, match="must be after start"):
        load_settings(_write(tmp_path, data))


def test_bad_yaml_gives_line(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"line \d+.*not valid YAML"):
        load_settings(_write(tmp_path, "detect:\n  persistence: [0.8\n  min_score: 6\n"))


def test_top_level_must_be_mapping(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="mapping"):
        load_settings(_write(tmp_path, "- a\n- b\n"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="not found"):
        load_settings(tmp_path / "nope.yaml")


def test_params_hash_is_stable_and_tracks_detect_but_not_evaluate() -> None:
    data = _repo_params()
    h = params_hash(settings_from_dict(data))
    assert len(h) == 12 and h == params_hash(settings_from_dict(_repo_params()))
    data["evaluate"]["iou_threshold"] = 0.5
    assert params_hash(settings_from_dict(data)) == h
    data["detect"]["min_score"] = 5.0
    assert params_hash(settings_from_dict(data)) != h
