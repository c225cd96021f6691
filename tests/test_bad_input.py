"""The bad-input table (docs/bad-input.md): every case through the real command line.

Each case builds its bad input in a fresh temporary folder holding a small project (dvc.yaml, params.yaml,
a sites file, ``.dvc/``, earlier outputs) and a good pair of scenes, runs one ``compoundwatch`` command and
checks: exit code 1, exactly one line on stderr (``error: …`` with the case's text: what failed, where, what
to do), no traceback, and every file under the folder byte-identical to before (nothing written, nothing
lost, no ``.bak`` left). ``test_table_lists_every_case`` keeps the docs table and this module in step.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from affine import Affine
from conftest import scene_pair_factory, write_tif
from fakes.sentinelhub_api import FakeScene, FakeSentinelHub
from small_project import SMALL_SITES, small_params, write_sites
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.cli._project import project_lock

REPO = Path(__file__).resolve().parents[1]
TABLE = REPO / "docs" / "bad-input.md"
CLIENT_ID, CLIENT_SECRET = "bad-input-client-31", "bad-input-secret-never-shown"
SITE = SMALL_SITES[0][0]
BANDS6 = ("B02", "B03", "B04", "B08", "B11", "B12")


@dataclass
class Env:
    """One case's world: ``root`` (snapshotted), the project ``proj`` (the working directory), a good pair."""

    root: Path
    proj: Path
    before: Path
    after: Path
    out: Path
    stack: ExitStack
    monkeypatch: pytest.MonkeyPatch
    extra: dict[str, Any] = field(default_factory=dict)

    def file(self, name: str, data: str | bytes) -> Path:
        path = self.root / "in" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, bytes):
            path.write_bytes(data)
        else:
            path.write_text(data, encoding="utf-8")
        return path

    def compare(self, before: Path | None = None, after: Path | None = None, *more: str) -> list[str]:
        return ["compare", str(before or self.before), str(after or self.after), "--out", str(self.out), *more]

    def params_with(self, edit: Callable[[dict[str, Any]], None], raw: str | None = None) -> list[str]:
        """``run --params F`` with F = the project's params edited by ``edit`` (or the text ``raw``)."""
        params = yaml.safe_load((self.proj / "params.yaml").read_text())
        edit(params)
        text = raw if raw is not None else yaml.safe_dump(params, sort_keys=False)
        f = self.file("new-params.yaml", text)
        return ["run", "--params", str(f)]

    def sites_with(self, features: list[dict[str, Any]] | str, site_ids: list[str] | None = None) -> list[str]:
        """``run --params F`` with F naming a new sites file (given features, or raw text)."""
        text = features if isinstance(features, str) else json.dumps(
            {"type": "FeatureCollection", "features": features})
        sites = self.proj / "configs" / "new-sites.geojson"
        sites.write_text(text, encoding="utf-8")

        def edit(p: dict[str, Any]) -> None:
            p["sites_file"] = "configs/new-sites.geojson"
            if site_ids is not None:
                p["sites"] = site_ids
        return self.params_with(edit)

    def aoi(self, doc: dict[str, Any] | str, *more: str) -> list[str]:
        text = doc if isinstance(doc, str) else json.dumps(doc)
        path = self.file("aoi.geojson", text)
        return ["scan", str(path), "--out", str(self.root / "scan.geojson"), "--resume-dir",
                str(self.root / "scan-tiles"), *more]


Case = Callable[[Env], list[str]]
CASES: dict[str, tuple[Case, str]] = {}


def case(case_id: str, expect: str) -> Callable[[Case], Case]:
    """Register a case: ``expect`` is a regular expression the one stderr line must contain."""
    def register(fn: Case) -> Case:
        assert case_id not in CASES, case_id
        CASES[case_id] = (fn, expect)
        return fn
    return register


# ------------------------------------------------------------------------------------------- helpers
def ring(lon: float, lat: float, w: float = 0.0149, h: float = 0.0108) -> list[list[float]]:
    return [[lon, lat], [lon + w, lat], [lon + w, lat + h], [lon, lat + h], [lon, lat]]


def feature(geometry: dict[str, Any] | None, **props: Any) -> dict[str, Any]:
    return {"type": "Feature", "properties": props, "geometry": geometry}


def poly(coords: list[list[float]]) -> dict[str, Any]:
    return {"type": "Polygon", "coordinates": [coords]}


def collection(*features: dict[str, Any]) -> dict[str, Any]:
    return {"type": "FeatureCollection", "features": list(features)}


def site(site_id: str, lon: float = 88.30, lat: float = 43.36, **props: Any) -> dict[str, Any]:
    return feature(poly(ring(lon, lat)), site_id=site_id, **props)


def utm_tif(env: Env, name: str, data: np.ndarray, descriptions: tuple[str, ...] | None = BANDS6,
            crs: int | None = 32645, x0: float = 500000.0) -> Path:
    path = env.root / "in" / name
    return write_tif(path, data, crs, Affine(10.0, 0, x0, 0, -10.0, 4800000.0),
                     descriptions=list(descriptions) if descriptions else None)


def dn_stack(n_bands: int = 6, size: int = 32, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(500, 3000, size=(n_bands, size, size)).astype(np.uint16)


def sentinelhub(env: Env, **behaviour: Any) -> FakeSentinelHub:
    """Start a loopback Sentinel Hub for this case and point the project at it (credentials in the env)."""
    scenes = [FakeScene(dt.date(2021, 5, 3), "S2A_MSIL2A_20210503T050000_N0300_R019_T45TVK", 5.0),
              FakeScene(dt.date(2022, 5, 8), "S2B_MSIL2A_20220508T050000_N0400_R019_T45TVK", 9.0)]
    fake = env.stack.enter_context(FakeSentinelHub(CLIENT_ID, CLIENT_SECRET, scenes))
    for key, value in behaviour.items():
        setattr(fake, key, value)
    env.monkeypatch.setenv("SH_CLIENT_ID", CLIENT_ID)
    env.monkeypatch.setenv("SH_CLIENT_SECRET", CLIENT_SECRET)
    env.monkeypatch.delenv("SH_PROFILE", raising=False)
    env.monkeypatch.setenv("OAUTHLIB_INSECURE_TRANSPORT", "1")
    params = yaml.safe_load((env.proj / "params.yaml").read_text())
    params["sentinelhub"] = {"base_url": fake.url, "token_url": fake.token_url, "backoff": 0.0,
                             "max_retries": 2, "cache_dir": str(env.extra["cache"]), "timeout_s": 5}
    (env.proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return fake


FETCH_SH = ["fetch", SITE, "--source", "sentinelhub"]


# ------------------------------------------------------------------------------------- rasters (compare)
@case("raster-text", "before.tif is not a raster GDAL can read")
def _raster_text(env: Env) -> list[str]:
    return env.compare(env.file("before.tif", "this is not an image\n" * 20))


@case("raster-random-bytes", "noise.tif is not a raster GDAL can read")
def _raster_random(env: Env) -> list[str]:
    return env.compare(env.file("noise.tif", np.random.default_rng(1).bytes(8192)))


@case("raster-empty-file", "empty.tif is not a raster GDAL can read")
def _raster_empty(env: Env) -> list[str]:
    return env.compare(env.file("empty.tif", b""))


@case("raster-truncated", r"cut\.tif (is not a raster GDAL can read|could not be read .*truncated)")
def _raster_truncated(env: Env) -> list[str]:
    path = utm_tif(env, "cut.tif", dn_stack(size=256, seed=2))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return env.compare(path)


@case("raster-no-crs", "nocrs.tif has no coordinate reference system")
def _raster_no_crs(env: Env) -> list[str]:
    return env.compare(utm_tif(env, "nocrs.tif", dn_stack(), crs=None))


@case("raster-single-band-no-bands", r"gray\.tif has 1 band\(s\) without band descriptions.*--bands")
def _raster_single(env: Env) -> list[str]:
    return env.compare(utm_tif(env, "gray.tif", dn_stack(1), descriptions=None))


@case("raster-undescribed-no-bands", r"rgbn\.tif has 4 band\(s\) without band descriptions")
def _raster_undescribed(env: Env) -> list[str]:
    return env.compare(utm_tif(env, "rgbn.tif", dn_stack(4), descriptions=None))


@case("bands-unknown-name", r"'BXX' is not a Sentinel-2 band name")
def _bands_unknown(env: Env) -> list[str]:
    return env.compare(None, None, "--bands", "B02,B03,B04,BXX")


@case("bands-too-many", r"has 4 band\(s\) but 5 band name\(s\) were given")
def _bands_too_many(env: Env) -> list[str]:
    path = utm_tif(env, "rgbn.tif", dn_stack(4), descriptions=None)
    return env.compare(path, path, "--bands", "B02,B03,B04,B08,B11")


@case("bands-too-few", r"has 4 band\(s\) but 3 band name\(s\) were given")
def _bands_too_few(env: Env) -> list[str]:
    path = utm_tif(env, "rgbn.tif", dn_stack(4), descriptions=None)
    return env.compare(path, path, "--bands", "B02,B03,B04")


@case("bands-duplicate", "band B02 is listed twice")
def _bands_twice(env: Env) -> list[str]:
    return env.compare(None, None, "--bands", "B02,B03,B04,b2")


@case("bands-missing-required", r"lacks band\(s\) B04|has no band\(s\).*B04|B04")
def _bands_missing(env: Env) -> list[str]:
    return env.compare(None, None, "--bands", "B02,B03")


@case("bands-not-in-file", r"has no band\(s\) B05")
def _bands_absent(env: Env) -> list[str]:
    return env.compare(None, None, "--bands", "B02,B03,B04,B05")


@case("raster-all-nodata", r"blank\.tif has no valid pixels")
def _raster_blank(env: Env) -> list[str]:
    return env.compare(utm_tif(env, "blank.tif", np.zeros((6, 32, 32), np.uint16)))


@case("raster-no-overlap", r"do not overlap")
def _raster_apart(env: Env) -> list[str]:
    far = utm_tif(env, "far.tif", dn_stack(seed=3), crs=32645)
    near = utm_tif(env, "S2_20230615_near.tif", dn_stack(seed=4), crs=32645, x0=600000.0)
    return env.compare(far, near)


@case("raster-wrong-date-order", r"BEFORE .*2023-06-15.* is later than AFTER .*2020-06-10.*swap")
def _raster_dates(env: Env) -> list[str]:
    later = env.root / "in" / "S2_20230615_a.tif"
    earlier = env.root / "in" / "S2_20200610_b.tif"
    later.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(env.before, later)
    shutil.copy(env.before, earlier)
    return env.compare(later, earlier)


@case("raster-missing", "missing.tif does not exist")
def _raster_missing(env: Env) -> list[str]:
    return env.compare(env.root / "missing.tif")


@case("raster-empty-folder", "has no band files")
def _raster_empty_dir(env: Env) -> list[str]:
    (env.root / "in" / "granule").mkdir(parents=True)
    return env.compare(env.root / "in" / "granule")


@case("raster-folder-without-band-names", "has no band files")
def _raster_unnamed(env: Env) -> list[str]:
    folder = env.root / "in" / "granule"
    utm_tif(env, "granule/preview.tif", dn_stack(1), descriptions=None)
    (folder / "README.txt").write_text("bands\n")
    return env.compare(folder)


@case("raster-folder-band-twice", "has two files for band B02")
def _raster_twice(env: Env) -> list[str]:
    folder = env.after
    shutil.copy(next(folder.glob("*_B02.tif")), folder / "copy_B02.tif")
    return env.compare()


@case("min-area-negative", r"--min-area-m2 must be >= 0")
def _min_area(env: Env) -> list[str]:
    return env.compare(None, None, "--min-area-m2", "-5")


# ------------------------------------------------------------------------------------------ --out paths
@case("out-is-folder", r"--out .*out-dir is a folder; give a file name")
def _out_folder(env: Env) -> list[str]:
    (env.root / "out-dir").mkdir()
    env.out = env.root / "out-dir"
    return env.compare()


@case("out-in-missing-folder", r"--out .*no-such-folder does not exist; create it first")
def _out_missing(env: Env) -> list[str]:
    env.out = env.root / "no-such-folder" / "flags.geojson"
    return env.compare()


@case("out-under-a-file", r"--out .*notes\.txt is a file, not a folder")
def _out_under_file(env: Env) -> list[str]:
    (env.root / "notes.txt").write_text("keep me\n")
    env.out = env.root / "notes.txt" / "flags.geojson"
    return env.compare()


@case("out-overwrites-input", r"--out .* is the BEFORE scene; choose another file")
def _out_is_input(env: Env) -> list[str]:
    env.out = env.before
    return env.compare()


@case("change-raster-is-folder", r"--change-raster .*cr-dir is a folder; give a file name")
def _change_raster_folder(env: Env) -> list[str]:
    (env.root / "cr-dir").mkdir()
    return env.compare(None, None, "--change-raster", str(env.root / "cr-dir"))


@case("change-raster-with-blockwise", "--change-raster is not written with --blockwise")
def _change_raster_blockwise(env: Env) -> list[str]:
    return env.compare(None, None, "--blockwise", "--change-raster", str(env.root / "c.tif"))


@case("scan-out-is-folder", r"--out .*scan-dir is a folder; give a file name")
def _scan_out_folder(env: Env) -> list[str]:
    (env.root / "scan-dir").mkdir()
    args = env.aoi(collection(site("tiny")))
    args[args.index("--out") + 1] = str(env.root / "scan-dir")
    return args


# ------------------------------------------------------------------------------------------ AOIs (scan)
@case("aoi-missing", "AOI file .*nowhere.geojson not found")
def _aoi_missing(env: Env) -> list[str]:
    return ["scan", str(env.root / "nowhere.geojson"), "--out", str(env.root / "scan.geojson")]


@case("aoi-not-json", r"aoi\.geojson is not a readable vector file")
def _aoi_not_json(env: Env) -> list[str]:
    return env.aoi("{this is: not json")


@case("aoi-empty-file", r"aoi\.geojson is not a readable vector file")
def _aoi_empty_file(env: Env) -> list[str]:
    return env.aoi("")


@case("aoi-no-features", "the AOI has no features")
def _aoi_empty(env: Env) -> list[str]:
    return env.aoi(collection())


@case("aoi-point", r"AOI feature 1 \(pt\) must be a valid, non-empty Polygon or MultiPolygon, got a Point")
def _aoi_point(env: Env) -> list[str]:
    return env.aoi(collection(feature({"type": "Point", "coordinates": [88.3, 43.36]}, site_id="pt")))


@case("aoi-line", r"AOI feature 1 \(aoi\) must be a valid, non-empty Polygon or MultiPolygon, got a LineString")
def _aoi_line(env: Env) -> list[str]:
    return env.aoi(collection(feature({"type": "LineString", "coordinates": [[88.3, 43.3], [88.4, 43.4]]})))


@case("aoi-null-geometry", "has no geometry")
def _aoi_null(env: Env) -> list[str]:
    return env.aoi(collection(feature(None, site_id="nothing")))


@case("aoi-out-of-range", r"outside lon -180\.\.180, lat -80\.\.84")
def _aoi_range(env: Env) -> list[str]:
    return env.aoi(collection(feature(poly(ring(200.0, 43.0)), site_id="far")))


@case("aoi-projected-metres", r"is not in WGS84 lon/lat degrees.*outside lon -180\.\.180")
def _aoi_metres(env: Env) -> list[str]:
    return env.aoi(collection(feature(poly(ring(500000.0, 4800000.0, 1000.0, 1000.0)), site_id="utm")))


@case("aoi-self-intersecting", r"self-intersect.*fix the outline")
def _aoi_bowtie(env: Env) -> list[str]:
    bowtie = [[88.30, 43.36], [88.31, 43.37], [88.31, 43.36], [88.30, 43.37], [88.30, 43.36]]
    return env.aoi(collection(feature(poly(bowtie), site_id="bowtie")))


@case("aoi-antimeridian", r"crosses the antimeridian.*split it at 180")
def _aoi_antimeridian(env: Env) -> list[str]:
    wrap = [[179.9, -17.0], [-179.9, -17.0], [-179.9, -16.9], [179.9, -16.9], [179.9, -17.0]]
    return env.aoi(collection(feature(poly(wrap), site_id="fiji")))


@case("aoi-huge", r"about [\d,]+ km².*[\d,]+ tiles.*[\d,]+ scene.*processing units.*hours.*--yes")
def _aoi_huge(env: Env) -> list[str]:
    xinjiang = [[73.5, 34.3], [96.4, 34.3], [96.4, 49.2], [73.5, 49.2], [73.5, 34.3]]
    return env.aoi(collection(feature(poly(xinjiang), site_id="xinjiang")))


@case("aoi-several-zones-large", r"spans 2 UTM zones.*--yes")
def _aoi_zones(env: Env) -> list[str]:
    wide = [[83.0, 43.0], [85.0, 43.0], [85.0, 44.0], [83.0, 44.0], [83.0, 43.0]]
    return env.aoi(collection(feature(poly(wide), site_id="wide")))


@case("aoi-unsafe-name", r"AOI feature 1 needs a site_id of lowercase letters, digits and hyphens.*got '\.\./\.\./etc'")
def _aoi_unsafe(env: Env) -> list[str]:
    return env.aoi(collection(site("../../etc")))


@case("aoi-html-name", r"AOI feature 1 needs a site_id of lowercase letters, digits and hyphens.*got '<b>x</b>'")
def _aoi_html(env: Env) -> list[str]:
    return env.aoi(collection(site("<b>x</b>")))


@case("aoi-duplicate-names", r"'twin' is used twice")
def _aoi_twice(env: Env) -> list[str]:
    return env.aoi(collection(site("twin"), site("twin", lon=88.4)))


@case("aoi-bad-tile-size", r"--tile-px \(0\) must be >= 1")
def _aoi_tile(env: Env) -> list[str]:
    return env.aoi(collection(site("tiny")), "--tile-px", "0")


# ------------------------------------------------------------------------------ sites files (run --params)
@case("sites-duplicate-id", r"site_id 'dup' is used twice")
def _sites_dup(env: Env) -> list[str]:
    return env.sites_with([site("dup"), site("dup", lon=88.4)], ["dup"])


@case("sites-dotdot-id", r"site_id of lowercase letters, digits and hyphens.*got '\.\./\.\./etc'")
def _sites_dotdot(env: Env) -> list[str]:
    return env.sites_with([site("../../etc")], ["x"])  # the sites file is read before its ids are matched


@case("sites-slash-id", r"got 'a/b'")
def _sites_slash(env: Env) -> list[str]:
    return env.sites_with([site("a/b")], ["x"])  # the sites file is read before its ids are matched


@case("sites-unicode-id", r"got 'sité'")
def _sites_unicode(env: Env) -> list[str]:
    return env.sites_with([site("sité")], ["x"])  # the sites file is read before its ids are matched


@case("sites-html-id", r"got '<script>'")
def _sites_html(env: Env) -> list[str]:
    return env.sites_with([site("<script>")], ["x"])  # the sites file is read before its ids are matched


@case("sites-html-name", r"site 'ok' has a name with markup or control characters")
def _sites_html_name(env: Env) -> list[str]:
    return env.sites_with([site("ok", name="<img src=x onerror=alert(1)>")], ["ok"])


@case("sites-control-char-name", r"site 'ok' has a name with markup or control characters")
def _sites_ctrl_name(env: Env) -> list[str]:
    return env.sites_with([site("ok", name="line\nbreak\x1b[31m")], ["ok"])


@case("sites-not-json", r"new-sites\.geojson is not valid JSON")
def _sites_not_json(env: Env) -> list[str]:
    return env.sites_with("{'single': quotes}", ["x"])


@case("sites-no-features", "must be a GeoJSON FeatureCollection with at least one feature")
def _sites_none(env: Env) -> list[str]:
    return env.sites_with([], ["x"])


@case("sites-point", r"site 'pt' must be a valid, non-empty Polygon")
def _sites_point(env: Env) -> list[str]:
    return env.sites_with([feature({"type": "Point", "coordinates": [88.3, 43.3]}, site_id="pt")], ["pt"])


@case("sites-self-intersecting", r"site 'bow' .*self-intersect")
def _sites_bowtie(env: Env) -> list[str]:
    bowtie = [[88.30, 43.36], [88.31, 43.37], [88.31, 43.36], [88.30, 43.37], [88.30, 43.36]]
    return env.sites_with([feature(poly(bowtie), site_id="bow")], ["bow"])


@case("sites-out-of-range", r"site 'far' is not in WGS84 lon/lat degrees")
def _sites_range(env: Env) -> list[str]:
    return env.sites_with([feature(poly(ring(200.0, 43.0)), site_id="far")], ["far"])


@case("sites-several-zones", r"site 'wide' spans 3 UTM zones")
def _sites_zones(env: Env) -> list[str]:
    wide = [[80.5, 43.0], [91.5, 43.0], [91.5, 43.2], [80.5, 43.2], [80.5, 43.0]]
    return env.sites_with([feature(poly(wide), site_id="wide")], ["wide"])


@case("sites-too-large", r"site 'big' is 1\d\d km × \d\d km \(\d+ Mpx at 10 m\); a site is fetched and held as one "
      r"cube of at most 4 Mpx: split it .*compoundwatch scan")
def _sites_big(env: Env) -> list[str]:
    return env.sites_with([feature(poly(ring(88.0, 43.0, 1.0, 1.0)), site_id="big")], ["big"])


@case("sites-missing-file", r"sites file .*gone\.geojson not found")
def _sites_missing(env: Env) -> list[str]:
    def edit(p: dict[str, Any]) -> None:
        p["sites_file"] = "configs/gone.geojson"
    return env.params_with(edit)


@case("sites-unknown-site", r"sites: nope not in configs/sites\.geojson")
def _sites_unknown(env: Env) -> list[str]:
    return env.params_with(lambda p: p.update(sites=["nope"]))


@case("sites-empty-list", "sites: the list is empty")
def _sites_empty(env: Env) -> list[str]:
    return env.params_with(lambda p: p.update(sites=[]))


@case("site-unknown-on-command-line", r"unknown site\(s\) no-such-site")
def _site_cli(env: Env) -> list[str]:
    return ["fetch", "no-such-site"]


# ------------------------------------------------------------------------------------ params (run --params)
@case("params-wrong-type", r"detect\.min_score: Input should be a valid number.*'high'")
def _params_type(env: Env) -> list[str]:
    return env.params_with(lambda p: p["detect"].update(min_score="high"))


@case("params-out-of-range", r"detect\.persistence: Input should be less than or equal to 1 \(got 3\.0\)")
def _params_range(env: Env) -> list[str]:
    return env.params_with(lambda p: p["detect"].update(persistence=3.0))


@case("params-negative-area", r"flag\.min_area_m2: Input should be greater than or equal to 0")
def _params_negative(env: Env) -> list[str]:
    return env.params_with(lambda p: p["flag"].update(min_area_m2=-5))


@case("params-unknown-key", r"detect\.min_scroe: Extra inputs are not permitted")
def _params_key(env: Env) -> list[str]:
    return env.params_with(lambda p: p["detect"].update(min_scroe=5))


@case("params-unknown-section", r"detct: Extra inputs are not permitted")
def _params_section(env: Env) -> list[str]:
    return env.params_with(lambda p: p.update(detct={"min_score": 5}))


@case("params-unknown-source", r"fetch\.source: Input should be 'synthetic', 'sentinelhub', 'stac' or 'local'")
def _params_source(env: Env) -> list[str]:
    return env.params_with(lambda p: p["fetch"].update(source="planet"))


@case("params-yaml-syntax", r"new-params\.yaml: line \d+ is not valid YAML")
def _params_yaml(env: Env) -> list[str]:
    return env.params_with(lambda p: None, raw="detect:\n  min_score: [6\nflag: {\n")


@case("params-not-a-mapping", "top level must be a mapping of sections, got list")
def _params_list(env: Env) -> list[str]:
    return env.params_with(lambda p: None, raw="- detect\n- flag\n")


@case("params-missing-file", r"config file .*absent\.yaml not found")
def _params_missing(env: Env) -> list[str]:
    return ["run", "--params", str(env.root / "absent.yaml")]


@case("params-end-before-start", r"end \(2020-01-01\) must be after start \(2021-01-01\)")
def _params_dates(env: Env) -> list[str]:
    return env.params_with(lambda p: p["fetch"].update(start="2021-01-01", end="2020-01-01"))


@case("params-bad-date", r"fetch\.start: Input should be a valid date")
def _params_bad_date(env: Env) -> list[str]:
    return env.params_with(lambda p: p["fetch"].update(start="2021-13-45"))


@case("params-unknown-band", r"unknown Sentinel-2 band\(s\) \['B13'\]")
def _params_band(env: Env) -> list[str]:
    return env.params_with(lambda p: p["fetch"].update(bands=["B02", "B13"]))


@case("params-url-with-credentials", "must not contain credentials")
def _params_url(env: Env) -> list[str]:
    return env.params_with(lambda p: p.update(sentinelhub={"base_url": "https://user:pw@example.org"}))


@case("params-local-without-section", "there is no `local:` section")
def _params_local(env: Env) -> list[str]:
    return env.params_with(lambda p: p["fetch"].update(source="local"))


@case("params-unsafe-site-id", r"sites: Value error, site ids are lowercase letters, digits and hyphens \(they name "
      r"files\), got \['\.\./\.\./etc'\]")
def _params_site_id(env: Env) -> list[str]:
    return env.params_with(lambda p: p.update(sites=["../../etc"]))


@case("params-bad-scheduler", "expected a scheduler address such as tcp://host:8786")
def _params_scheduler(env: Env) -> list[str]:
    return env.params_with(lambda p: p.update(dask={"scheduler": "localhost"}))


# ------------------------------------------------------------------------- services (loopback Sentinel Hub)
@case("fetch-missing-credentials", "SH_CLIENT_ID")
def _fetch_no_creds(env: Env) -> list[str]:
    sentinelhub(env)
    env.monkeypatch.delenv("SH_CLIENT_ID")
    env.monkeypatch.delenv("SH_CLIENT_SECRET")
    env.monkeypatch.setenv("SH_PROFILE", "cw-no-such-profile")
    env.monkeypatch.setenv("XDG_CONFIG_HOME", str(env.extra["cache"]))
    return FETCH_SH


@case("fetch-refused-credentials", r"token endpoint .* refused to issue an access token.*check SH_CLIENT_ID")
def _fetch_refused(env: Env) -> list[str]:
    sentinelhub(env)
    env.monkeypatch.setenv("SH_CLIENT_SECRET", "wrong-secret")
    return FETCH_SH


@case("fetch-expired-token", r"token endpoint .* refused to issue an access token.*check SH_CLIENT_ID")
def _fetch_expired(env: Env) -> list[str]:
    fake = sentinelhub(env, revoke_tokens_after=1)
    issued = {"n": 0}
    token = fake._token

    def only_one_token(body: bytes) -> Any:
        issued["n"] += 1
        if issued["n"] > 1:  # the refresh after expiry is refused too
            return 401, {"Content-Type": "application/json"}, b'{"error": "invalid_client"}'
        return token(body)

    fake._token = only_one_token  # type: ignore[method-assign]
    return FETCH_SH


@case("fetch-429-storm", r"HTTP 429 .*3 attempt")
def _fetch_429(env: Env) -> list[str]:
    sentinelhub(env, fail_always={"token": None, "catalog": None, "process": 429})
    return FETCH_SH


@case("fetch-5xx-storm", r"HTTP 503 .*3 attempt")
def _fetch_503(env: Env) -> list[str]:
    sentinelhub(env, fail_always={"token": None, "catalog": 503, "process": None})
    return FETCH_SH


@case("fetch-connection-cut", r"Process API: the connection to .* failed on 3 attempt\(s\) \(ChunkedEncodingError")
def _fetch_cut(env: Env) -> list[str]:
    fake = sentinelhub(env)

    def cut(headers: dict[str, str], body: bytes) -> Any:
        # announce 64 KiB, send 10 bytes, close: the client sees the connection end mid-download
        return 200, {"Content-Type": "image/tiff", "Content-Length": "65536", "Connection": "close"}, b"II*\x00" * 3

    fake._process = cut  # type: ignore[method-assign]
    return FETCH_SH


@case("fetch-stac-unreachable", r"STAC API http://127\.0\.0\.1:9/v1 could not be reached \(connection failed\)")
def _fetch_stac(env: Env) -> list[str]:
    params = yaml.safe_load((env.proj / "params.yaml").read_text())
    params["stac"] = {"url": "http://127.0.0.1:9/v1", "max_retries": 0, "backoff": 0.0}
    (env.proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return ["fetch", SITE, "--source", "stac"]


# ------------------------------------------------------------------------------------ project and stages
@case("stage-before-its-input", r"data/raw/small-expanding\.zarr not found.*dvc repro")
def _stage_input(env: Env) -> list[str]:
    return ["tile", SITE]


@case("not-a-project", "has no dvc.yaml")
def _not_project(env: Env) -> list[str]:
    (env.root / "elsewhere").mkdir()
    return ["run", "-C", str(env.root / "elsewhere")]


@case("two-runs-at-once", r"another compoundwatch run \(pid \d+\) is working in")
def _two_runs(env: Env) -> list[str]:
    env.stack.enter_context(project_lock(env.proj))
    return ["run", "--params", str(env.proj / "params.yaml")]


@case("stage-during-a-run", r"another compoundwatch run \(pid \d+\) is working in")
def _stage_during_run(env: Env) -> list[str]:
    env.stack.enter_context(project_lock(env.proj))
    return ["fetch", SITE]


# ------------------------------------------------------------------------ watchlists (compoundwatch sites import)
ASPI_LIKE = "Number,Name_Code,Lat,Long,Tier\n1,Alpha Facility #1,43.36,88.30,3\n2,Beta Facility #1,43.40,88.35,N/A\n"


def _import(env: Env, name: str, text: str, *more: str, out: Path | None = None) -> list[str]:
    path = env.file(name, text)
    return ["sites", "import", str(path), "--out", str(out or env.root / "sites.geojson"), *more]


@case("import-missing-list", r"facility list .*nope\.csv not found; give a CSV with longitude/latitude columns")
def _import_missing(env: Env) -> list[str]:
    return ["sites", "import", str(env.root / "nope.csv"), "--out", str(env.root / "sites.geojson")]


@case("import-no-lonlat-columns", r"list\.csv has no longitude column \(looked for lon, long, longitude, lng, x\); "
      r"name it with --lon COLUMN")
def _import_no_lonlat(env: Env) -> list[str]:
    return _import(env, "list.csv", "name,easting,northing\nA,1,2\n")


@case("import-bad-coordinates", r"list\.csv row 2: \(88\.35, 95\.0\) is outside lon -180\.\.180, lat -80\.\.84 .*"
      r"fix the row, or pass --skip-invalid")
def _import_bad_coords(env: Env) -> list[str]:
    return _import(env, "list.csv", ASPI_LIKE.replace("43.40,88.35", "95.0,88.35"))


@case("import-where-syntax", r"--where 'Tier >= ': expected a number or quoted text at position 9, got the end")
def _import_where_syntax(env: Env) -> list[str]:
    return _import(env, "list.csv", ASPI_LIKE, "--where", "Tier >= ")


@case("import-where-unknown-column", r"--where 'Teir >= 3': the list has no column 'Teir'; did you mean 'Tier'")
def _import_where_column(env: Env) -> list[str]:
    return _import(env, "list.csv", ASPI_LIKE, "--where", "Teir >= 3")


@case("import-where-python", r"--where .*: cannot read the text at position 17 \(\".system\('tou\"\); quote column")
def _import_where_python(env: Env) -> list[str]:
    return _import(env, "list.csv", ASPI_LIKE, "--where", "__import__('os').system('touch pwned')")


@case("import-all-filtered", r"no site left to write from .*list\.csv \(2 row\(s\): 2 filtered out .*\); loosen")
def _import_all_filtered(env: Env) -> list[str]:
    return _import(env, "list.csv", ASPI_LIKE, "--where", "Tier > 10")


@case("import-size-too-large", r"--size-m 50000 gives 5000 × 5000 px sites; a site is held as one cube of at most "
      r"4 Mpx \(20,000 m a side at 10 m\)")
def _import_too_large(env: Env) -> list[str]:
    return _import(env, "list.csv", ASPI_LIKE, "--size-m", "50000")


@case("import-out-is-folder", r"--out .* is a folder; give a file name")
def _import_out_folder(env: Env) -> list[str]:
    (env.root / "outdir").mkdir()
    return _import(env, "list.csv", ASPI_LIKE, out=env.root / "outdir")


@case("import-out-is-the-list", r"--out .*list\.csv is the facility list itself; choose another file")
def _import_out_input(env: Env) -> list[str]:
    return _import(env, "list.csv", ASPI_LIKE, out=env.root / "in" / "list.csv")


@case("import-not-json", r"list\.geojson is not valid JSON \(.*\); give a GeoJSON FeatureCollection or a CSV")
def _import_not_json(env: Env) -> list[str]:
    return _import(env, "list.geojson", "{'single': quotes}")


@case("import-unknown-format", r"list\.xlsx: unknown list format '\.xlsx'; give a \.csv .* or a \.geojson file")
def _import_unknown_format(env: Env) -> list[str]:
    return _import(env, "list.xlsx", "PK\x03\x04")


@case("import-within-a-point", r"--within .*aoi\.geojson: feature 1 is not a Polygon or MultiPolygon")
def _import_within_point(env: Env) -> list[str]:
    aoi = env.file("aoi.geojson", json.dumps({"type": "FeatureCollection", "features": [
        feature({"type": "Point", "coordinates": [88.3, 43.36]})]}))
    return _import(env, "list.csv", ASPI_LIKE, "--within", str(aoi))


# ---------------------------------------------------------------------------------------- compoundwatch watch
@case("watch-end-not-a-date", r"--end '2023-13-45' is not a date; give YYYY-MM-DD or 'today'")
def _watch_bad_date(env: Env) -> list[str]:
    return ["watch", "--end", "2023-13-45"]


@case("watch-end-backwards", r"--end 2020-01-01 is before fetch\.end 2022-09-30 of the last run; watch only moves "
      r"forward")
def _watch_backwards(env: Env) -> list[str]:
    return ["watch", "--end", "2020-01-01"]


@case("watch-end-past-horizon", r"params\.yaml with fetch\.end 2023-06-30: .*synthetic\.horizon \(2022-10-31\) is "
      r"before fetch\.end \(2023-06-30\)")
def _watch_past_horizon(env: Env) -> list[str]:
    params = yaml.safe_load((env.proj / "params.yaml").read_text())
    params["synthetic"]["horizon"] = "2022-10-31"
    (env.proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return ["watch", "--end", "2023-06-30"]


@case("watch-no-run-with-end", r"--no-run compares what is already published; drop --end")
def _watch_no_run_end(env: Env) -> list[str]:
    return ["watch", "--no-run", "--end", "2023-06-30"]


@case("watch-bad-growth", r"--min-growth-m2 must be >= 0 and --min-growth-fraction between 0 and 10, got -5")
def _watch_bad_growth(env: Env) -> list[str]:
    return ["watch", "--no-run", "--min-growth-m2", "-5"]


@case("watch-broken-pointer", r"published/LATEST names run '0003-2023-06-27', but .*published/0003-2023-06-27 is "
      r"not there; restore the run folder, or delete .*LATEST")
def _watch_broken_pointer(env: Env) -> list[str]:
    (env.proj / "published").mkdir()
    (env.proj / "published" / "LATEST").write_text("0003-2023-06-27\n")
    return ["watch", "--no-run"]


@case("watch-not-a-project", "has no dvc.yaml; run from the compoundwatch project root or pass -C")
def _watch_not_project(env: Env) -> list[str]:
    (env.root / "elsewhere").mkdir()
    return ["watch", "-C", str(env.root / "elsewhere")]


# ------------------------------------------------------------------------------------------- the runner
def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".dvc/tmp" not in str(p)}


@pytest.fixture(scope="module")
def good_pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A good BEFORE (6-band GeoTIFF) / AFTER (band folder) pair, made once (copied into each case)."""
    pair = scene_pair_factory(tmp_path_factory.mktemp("pair"))(size=48)
    return pair.before, pair.after


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, good_pair: tuple[Path, Path]) -> Iterator[Env]:
    root = tmp_path / "world"
    proj = root / "proj"
    proj.mkdir(parents=True)
    shutil.copy(REPO / "dvc.yaml", proj / "dvc.yaml")
    (proj / ".dvc").mkdir()
    write_sites(proj / "configs" / "sites.geojson")
    params = small_params(REPO / "params.yaml", "configs/sites.geojson", [s[0] for s in SMALL_SITES])
    (proj / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    # earlier outputs that no failed command may touch
    (proj / "data" / "out").mkdir(parents=True)
    (proj / "data" / "out" / "flags.geojson").write_text('{"type": "FeatureCollection", "features": []}\n')
    (proj / "metrics.json").write_text('{"object_recall": 1.0}\n')
    before = root / "scenes" / good_pair[0].name
    before.parent.mkdir()
    shutil.copy(good_pair[0], before)
    after = root / "scenes" / good_pair[1].name
    shutil.copytree(good_pair[1], after)
    out = root / "flags.geojson"
    out.write_text('{"type": "FeatureCollection", "features": [], "earlier": true}\n')
    monkeypatch.chdir(proj)
    for var in ("SH_CLIENT_ID", "SH_CLIENT_SECRET", "SH_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    with ExitStack() as stack:
        yield Env(root, proj, before, after, out, stack, monkeypatch, {"cache": tmp_path / "cache"})


@pytest.mark.parametrize("case_id", sorted(CASES))
def test_bad_input(case_id: str, env: Env) -> None:
    make, expect = CASES[case_id]
    args = make(env)
    snapshot = _snapshot(env.root)
    res = CliRunner().invoke(app, args)
    lines = res.stderr.strip().splitlines()
    assert res.exit_code == 1, (res.exit_code, res.output, res.exception)
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: "), lines[0]
    assert re.search(expect, lines[0]), lines[0]
    assert "Traceback" not in res.output
    after = _snapshot(env.root)
    assert after.keys() == snapshot.keys(), set(after) ^ set(snapshot)
    changed = [k for k in after if after[k] != snapshot[k]]
    assert not changed, changed
    assert not list(env.proj.glob("*.bak"))


def test_debug_shows_the_traceback_and_the_cause(env: Env) -> None:
    res = CliRunner().invoke(app, ["--debug", *CASES["raster-no-crs"][0](env)])
    assert res.exit_code == 1 and res.exception is not None and not isinstance(res.exception, SystemExit)
    # errors keep what caused them (raise … from err): GDAL's own error under ours, the YAML parser's under ours
    res = CliRunner().invoke(app, ["--debug", *CASES["raster-text"][0](env)])
    assert type(res.exception).__name__ == "NotARasterError"
    assert type(res.exception.__cause__).__name__ == "RasterioIOError"
    res = CliRunner().invoke(app, ["--debug", *CASES["params-yaml-syntax"][0](env)])
    assert type(res.exception).__name__ == "ConfigError" and isinstance(res.exception.__cause__, yaml.YAMLError)


def _table_ids() -> list[str]:
    rows = [line for line in TABLE.read_text().splitlines() if line.startswith("| `")]
    return [re.match(r"\| `([^`]+)`", row).group(1) for row in rows]  # type: ignore[union-attr]


def test_table_lists_every_case() -> None:
    ids = _table_ids()
    assert len(ids) == len(set(ids)), "a case id is listed twice in docs/bad-input.md"
    # cases tested on their own: below, and in tests/test_faults.py (a stage failing inside a real dvc repro)
    extra = {"disk-full", "corrupt-cached-scene", "disk-full-params", "run-failing-stage"}
    assert set(ids) == set(CASES) | extra, sorted(set(ids) ^ (set(CASES) | extra))
    assert len(ids) >= 50
    n = re.search(r"(\d+) cases", TABLE.read_text())
    assert n and int(n.group(1)) == len(ids)


# ------------------------------------------------------------------------- cases that need a real process
def _cli(args: list[str], cwd: Path, fsize: int | None = None, secrets: bool = False
         ) -> subprocess.CompletedProcess[str]:
    """``compoundwatch ARGS`` in a child process, optionally with a file-size limit of ``fsize`` bytes (a
    full disk for the writes: EFBIG instead of ENOSPC, same OSError path)."""
    import resource
    import signal

    def limit() -> None:
        if fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # write() fails with EFBIG instead of killing us
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    env = {k: v for k, v in os.environ.items() if secrets or not k.startswith("SH_")}
    exe = Path(sys.executable).parent / "compoundwatch"
    return subprocess.run([str(exe), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, preexec_fn=limit)


def test_disk_full(env: Env) -> None:
    """A full disk while writing the flags: one line, exit 1, the earlier --out file byte-identical."""
    snapshot = _snapshot(env.root)
    proc = _cli(env.compare(), env.proj, fsize=200)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and "File too large" in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert _snapshot(env.root) == snapshot
    assert not [p for p in env.root.rglob(".*") if p.is_file()], "a temporary file was left behind"


def test_disk_full_params(env: Env) -> None:
    """``run --params F`` on a full disk: params.yaml is replaced whole or not at all (here: not at all)."""
    big = yaml.safe_load((env.proj / "params.yaml").read_text())
    big["flag"]["min_area_m2"] = 4000.0
    f = env.file("big.yaml", yaml.safe_dump(big, sort_keys=False) + "#" * 8192 + "\n")
    snapshot = _snapshot(env.root)
    proc = _cli(["run", "--params", str(f)], env.proj, fsize=4096)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and "File too large" in lines[0], proc.stderr
    assert _snapshot(env.root) == snapshot


def test_corrupt_cached_scene(env: Env, caplog: pytest.LogCaptureFixture) -> None:
    """A cached band cut short (a killed run, a bad disk) is detected, refetched alone, and the cube is the same."""
    from fakes.sentinelhub_api import PROCESS_PATH

    from pipeline.io import read_cube

    fake = sentinelhub(env)
    first = CliRunner().invoke(app, FETCH_SH)
    assert first.exit_code == 0, first.output
    cube = env.proj / "data" / "raw" / f"{SITE}.zarr"
    values = read_cube(cube)["reflectance"].values.copy()
    n_requests = len(fake.requests_to(PROCESS_PATH))
    cached = sorted(env.extra["cache"].rglob("B04.npy"))
    assert len(cached) == 2
    cached[0].write_bytes(cached[0].read_bytes()[:100])  # truncated mid-array
    (cached[1].parent / "meta.json").write_text('{"date": "2022-05')  # metadata cut short
    again = CliRunner().invoke(app, FETCH_SH)
    assert again.exit_code == 0, again.output
    assert len(fake.requests_to(PROCESS_PATH)) == n_requests + 2  # the two damaged dates, nothing else
    np.testing.assert_array_equal(read_cube(cube)["reflectance"].values, values)
    warnings = [r.getMessage() for r in caplog.records if "corrupt" in r.getMessage()]
    assert len(warnings) == 2 and "fetching it again" in warnings[0] + warnings[1]


@pytest.mark.parametrize("case_id", ["raster-no-crs", "aoi-self-intersecting"])
def test_real_process_stderr_is_one_line(case_id: str, env: Env) -> None:
    """The same cases through a real ``compoundwatch`` process: library warnings (rasterio's
    NotGeoreferencedWarning) and logging do not add lines to stderr."""
    make, expect = CASES[case_id]
    proc = _cli(make(env), env.proj)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert len(lines) == 1 and lines[0].startswith("error: ") and re.search(expect, lines[0]), proc.stderr


def test_real_process_storm_logs_each_retry_then_one_error(env: Env) -> None:
    """Through a real process, a 429 storm says what it does while it waits (one line per retry, as it
    happens: long work is never silent) and ends with the one error line."""
    sentinelhub(env, fail_always={"token": None, "catalog": None, "process": 429})
    proc = _cli(FETCH_SH, env.proj, secrets=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1, proc.stderr
    assert [re.sub(r"127\.0\.0\.1:\d+", "HOST", x) for x in lines[:-1]] == [
        f"Sentinel Hub Process API: HTTP 429 on http://HOST/api/v1/process, retry {i}/2 in 0.00s" for i in (1, 2)]
    assert re.search(CASES["fetch-429-storm"][1], lines[-1]) and lines[-1].startswith("error: ")
