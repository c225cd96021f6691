"""The offline map page: escaping, self-containment, and a real render in headless Chromium.

The browser test opens ``index.html`` from disk in Debian's ``chromium`` (installed by
``scripts/install-chromium.sh`` when missing and we are root; skipped with the reason otherwise) with every
host name resolving to nothing, drives it over the DevTools protocol on a pipe (no extra packages), and
checks: no console errors or exceptions, only file:/data:/blob: requests, the number of flags MapLibre
rendered equals the GeoJSON's, the date filter, the popup (properties and chip), the injection strings
render as text, the flags table (one row per flag, in rank order, sorting, zoom on click, viewer links), and
the imagery under a flag outline: screenshots of the flag's screen box with the after scene, the before scene
and no imagery (the after one is kept at ``build/test-artifacts/mappage.png``).
"""

from __future__ import annotations

import base64
import fcntl
import io
import json
import os
import re
import select
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from _publish_data import SITE_ID, tiny_run
from PIL import Image
from shapely.geometry import Point
from shapely.geometry import shape as shp_shape

from pipeline.errors import InputFileError
from pipeline.publish.bundle import publish_all
from pipeline.publish.mappage import (
    flag_table,
    install_web_assets,
    maplibre_dist,
    safe_json_for_html,
    viewer_links,
    write_map_page,
)

REPO = Path(__file__).resolve().parents[1]
INJECT_SITE = "<script>alert(1)</script>"
INJECT_PROP = '<img src=x onerror="alert(2)">'
INJECT_TITLE = "Run </title><script>alert(3)</script> & co"
SCREENSHOT = REPO / "build" / "test-artifacts" / "mappage.png"
POPUP_SCREENSHOT = REPO / "build" / "test-artifacts" / "mappage-popup.png"
PANEL_PX = 420  # width of the side panel (app.css #panel)
_LOCK = Path(tempfile.gettempdir()) / "compoundwatch-test-installs.lock"


def _locked() -> Any:
    """An exclusive lock shared by pytest-xdist workers, so installs do not run twice at once."""
    fh = open(_LOCK, "w")
    fcntl.flock(fh, fcntl.LOCK_EX)
    return fh


@pytest.fixture(scope="module")
def web_dir() -> Path:
    """``web/`` with MapLibre installed (``npm ci --prefix web`` when missing)."""
    with _locked():
        try:
            install_web_assets(REPO / "web")
        except InputFileError as err:
            pytest.skip(f"MapLibre could not be installed from the npm registry: {err}")
    return REPO / "web"


def _chromium() -> str:
    for b in ("/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if os.access(b, os.X_OK):
            return b
    with _locked():
        if not os.access("/usr/bin/chromium", os.X_OK):
            proc = subprocess.run(
                ["bash", str(REPO / "scripts" / "install-chromium.sh")],
                capture_output=True,
                text=True,
                timeout=900,
                check=False,
            )
            if proc.returncode != 0:
                tail = (proc.stdout + proc.stderr).strip().splitlines()[-3:]
                pytest.skip(
                    f"chromium is not installed and scripts/install-chromium.sh failed: {' | '.join(tail)}"
                )
    return "/usr/bin/chromium"


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory, web_dir: Path) -> dict[str, Any]:
    """publish_all on the tiny run, with injection strings in a site name, a property and the title."""
    tmp = tmp_path_factory.mktemp("publish")
    run = tiny_run(tmp, site_name=INJECT_SITE)
    flags = run.flags.copy()
    flags.loc[flags.index[1], "method"] = INJECT_PROP
    out = tmp / "out"
    written = publish_all(
        flags.to_crs(4326), [run.site], run.tiles, out, run.settings, web_dir=web_dir, title=INJECT_TITLE
    )
    fc = json.loads(written["flags_geojson"].read_text())
    return {"out": out, "written": written, "fc": fc, "injected_flag": flags.iloc[1]["flag_id"], "run": run}


# ------------------------------------------------------------------------------------------ no browser
def test_safe_json_round_trips_and_cannot_close_the_script() -> None:
    value = {"name": "</script><script>alert(1)</script>", "amp": "a & b", "sep": "x\u2028y\u2029z", "n": 1.5}
    text = safe_json_for_html(value)
    assert "<" not in text and ">" not in text and "&" not in text
    assert "\u2028" not in text and "\u2029" not in text
    assert json.loads(text) == value


def test_missing_maplibre_says_how_to_install(tmp_path: Path) -> None:
    with pytest.raises(InputFileError, match="npm ci --prefix"):
        maplibre_dist(tmp_path)
    with pytest.raises(InputFileError, match="npm ci"):
        write_map_page(
            tmp_path / "out",
            {"type": "FeatureCollection", "features": []},
            {"type": "FeatureCollection", "features": []},
            web_dir=tmp_path,
        )


def test_output_folder_is_complete_and_self_contained(published: dict[str, Any]) -> None:
    out: Path = published["out"]
    w = published["written"]
    for name in (
        "index.html",
        "maplibre-gl.js",
        "maplibre-gl.css",
        "maplibre-gl.LICENSE.txt",
        "flags.geojson",
        "flags.fgb",
        "flags.parquet",
        "site_summary.geojson",
        "site_summary.fgb",
        "site_summary.parquet",
        "compoundwatch.pmtiles",
        "stac/catalog.json",
    ):
        assert (out / name).is_file(), name
    assert w["map"] == out / "index.html"
    # a chip for every flag, linked by relative path
    for f in published["fc"]["features"]:
        chip = f["properties"]["chip"]
        assert chip == f"chips/{f['properties']['flag_id']}.png"
        assert (out / chip).stat().st_size > 0
    page = (out / "index.html").read_text()
    refs = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sorted(refs) == ["maplibre-gl.css", "maplibre-gl.js"]  # nothing from a CDN
    assert "//" not in "".join(refs)
    assert len(re.findall(r"<script\b", page, re.IGNORECASE)) == 3
    assert "<script>alert" not in page and "alert(1)" in page  # present only as escaped data
    assert "<title>Run &lt;/title&gt;&lt;script&gt;alert(3)&lt;/script&gt; &amp; co</title>" in page
    data = json.loads(
        re.search(r'<script type="application/json" id="cw-data">(.*?)</script>', page, re.S)[1]
    )
    assert data["flags"] == published["fc"]
    assert data["sites"]["features"][0]["properties"]["name"] == INJECT_SITE
    # the table rows: one per flag, in rank order, each with viewer links at a point inside the flag
    rows = data["flag_table"]
    assert [r["flag_id"] for r in rows] == [f["properties"]["flag_id"] for f in published["fc"]["features"]]
    assert [r["rank"] for r in rows] == [1, 2, 3]
    for r, f in zip(rows, published["fc"]["features"]):
        poly = shp_shape(f["geometry"])
        for url in r["links"].values():
            lat = float(re.search(r"(?:[?&]lat|mlat)=(-?[0-9.]+)", url)[1])
            lon = float(re.search(r"(?:[?&]lng|mlon)=(-?[0-9.]+)", url)[1])
            assert poly.contains(Point(lon, lat)), url
        assert r["area_m2"] == f["properties"]["area_m2"]
        assert r["bbox"] == pytest.approx(list(poly.bounds), abs=1e-6)
    # the imagery of the one site, and its files
    (im,) = data["imagery"]
    assert im["site_id"] == SITE_ID and im["script"] == f"imagery/{SITE_ID}.js"
    assert (out / im["script"]).is_file()
    assert len(list((out / "imagery" / SITE_ID / "after").rglob("*.png"))) >= 5  # z 10-14
    assert data["basemap"]["type"] == "FeatureCollection" and len(data["basemap"]["features"]) > 150


def test_viewer_links_and_flag_table_rows() -> None:
    links = viewer_links(88.3125, 43.371)
    assert links == {
        "copernicus": "https://browser.dataspace.copernicus.eu/?zoom=16&lat=43.371000&lng=88.312500",
        "eo_browser": "https://apps.sentinel-hub.com/eo-browser/?zoom=16&lat=43.371000&lng=88.312500",
        "osm": "https://www.openstreetmap.org/?mlat=43.371000&mlon=88.312500#map=17/43.371000/88.312500",
    }
    square = {"type": "Polygon", "coordinates": [[[10, 20], [10.01, 20], [10.01, 20.01], [10, 20.01], [10, 20]]]}
    fc = {
        "type": "FeatureCollection",
        "features": [
            {"type": "Feature", "properties": {"flag_id": "a", "rank": 1, "site_id": INJECT_SITE}, "geometry": square},
            {"type": "Feature", "properties": {"flag_id": "b"}, "geometry": None},
        ],
    }
    (row,) = flag_table(fc)
    assert row["flag_id"] == "a" and row["site_id"] == INJECT_SITE and row["confidence"] is None
    assert row["bbox"] == [10, 20, 10.01, 20.01]
    assert 10 < row["lon"] < 10.01 and 20 < row["lat"] < 20.01
    assert "<" not in safe_json_for_html(row)


def test_publish_all_without_flags(tmp_path: Path, web_dir: Path) -> None:
    from pipeline.publish.geojson import merge_layers, write_geojson
    from pipeline.publish.vector import read_layer

    run = tiny_run(tmp_path)
    empty_file = write_geojson(run.flags.iloc[:0], tmp_path / "flags" / f"{SITE_ID}.geojson")
    flags = merge_layers([empty_file])  # what the stage passes when no site has flags
    w = publish_all(flags, [run.site], run.tiles, tmp_path / "out", run.settings, web_dir=web_dir)
    assert len(read_layer(w["flags_fgb"])) == 0
    summary = read_layer(w["summary_parquet"])
    assert list(summary["n_flags"]) == [0] and list(summary["construction_ongoing"]) == ["no"]
    assert summary["latest_clear_date"].iloc[0] == "2021-12-11"  # last date of the tiny cube, all clear
    assert list((tmp_path / "out" / "chips").iterdir()) == []
    assert w["map"].is_file() and w["pmtiles"].stat().st_size > 127


# ------------------------------------------------------------------------------------------ browser
class Chromium:
    """Headless Chromium driven over the DevTools protocol on ``--remote-debugging-pipe`` (fds 3 and 4)."""

    def __init__(self, binary: str, profile: Path) -> None:
        r_in, w_in = os.pipe()
        r_out, w_out = os.pipe()

        def _fds() -> None:  # in the child: its fd 3 reads our commands, fd 4 writes its replies
            a, b = os.dup(r_in), os.dup(w_out)
            os.dup2(a, 3)
            os.dup2(b, 4)

        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--use-angle=swiftshader",
            "--enable-unsafe-swiftshader",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-default-apps",
            "--disable-extensions",
            "--host-resolver-rules=MAP * ~NOTFOUND",
            f"--user-data-dir={profile}",
            "--window-size=1280,800",
            "--remote-debugging-pipe",
            "about:blank",
        ]
        self.log = open(profile / "chromium.log", "wb")
        self.proc = subprocess.Popen(
            args, pass_fds=(3, 4), preexec_fn=_fds, stdin=subprocess.DEVNULL, stdout=self.log, stderr=self.log
        )
        os.close(r_in)
        os.close(w_out)
        self.w, self.r = w_in, r_out
        self.buf = b""
        self.next_id = 0
        self.events: list[dict[str, Any]] = []
        self.session: str | None = None

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.r], [], [], timeout)
        if ready:
            chunk = os.read(self.r, 1 << 20)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe (crashed?); see chromium.log")
            self.buf += chunk
        while b"\0" in self.buf:
            msg, self.buf = self.buf.split(b"\0", 1)
            self.events.append(json.loads(msg))

    def send(
        self, method: str, params: dict[str, Any] | None = None, timeout: float = 30, session: bool = True
    ) -> dict[str, Any]:
        self.next_id += 1
        mid = self.next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params or {}}
        if session and self.session:
            msg["sessionId"] = self.session
        os.write(self.w, json.dumps(msg).encode() + b"\0")
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            for i, m in enumerate(self.events):
                if m.get("id") == mid:
                    del self.events[i]
                    if "error" in m:
                        raise RuntimeError(f"{method}: {m['error']}")
                    return m.get("result", {})
            self._read(0.1)
        raise TimeoutError(f"no reply to {method} within {timeout} s")

    def eval(self, expression: str, timeout: float = 30) -> Any:
        r = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
            timeout=timeout,
        )
        if "exceptionDetails" in r:
            raise RuntimeError(f"{expression}: {r['exceptionDetails']}")
        return r["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 30) -> Any:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            value = self.eval(expression)
            if value:
                return value
            self._read(0.1)
        raise TimeoutError(f"{expression} stayed falsy for {timeout} s")

    def open(self, url: str) -> None:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)["targetId"]
        self.session = self.send(
            "Target.attachToTarget", {"targetId": target, "flatten": True}, session=False
        )["sessionId"]
        for m in ("Runtime.enable", "Log.enable", "Page.enable", "Network.enable"):
            self.send(m)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False},
        )
        # MapLibre skips camera animations for reduced motion: software WebGL renders them slowly
        self.send(
            "Emulation.setEmulatedMedia",
            {"features": [{"name": "prefers-reduced-motion", "value": "reduce"}]},
        )
        self.send("Page.navigate", {"url": url})

    def screenshot(self) -> bytes:
        return base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"])

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5, session=False)
            self.proc.wait(timeout=10)
        except Exception:
            pass
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self.w)
        os.close(self.r)
        self.log.close()


@pytest.fixture
def browser(tmp_path: Path) -> Iterator[Chromium]:
    binary = _chromium()
    profile = tmp_path / "profile"
    profile.mkdir()
    b = Chromium(binary, profile)
    try:
        yield b
    finally:
        b.close()


def _problems(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append(
                "console.error: " + " ".join(str(a.get("value", a.get("description"))) for a in p["args"])
            )
        elif m == "Runtime.exceptionThrown":
            d = p["exceptionDetails"]
            out.append(f"exception: {d.get('exception', {}).get('description', d.get('text'))}")
        elif m == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log error: {p['entry']['text']} ({p['entry'].get('url')})")
        elif m == "Page.javascriptDialogOpening":
            out.append(f"dialog opened: {p.get('message')}")
        elif m == "Network.requestWillBeSent":
            url = p["request"]["url"]
            if not url.startswith(("file://", "data:", "blob:")):
                out.append(f"network request: {url}")
    return out


def test_page_renders_offline_in_headless_chromium(published: dict[str, Any], browser: Chromium) -> None:
    n = len(published["fc"]["features"])
    assert n == 3
    browser.open((published["out"] / "index.html").as_uri())
    browser.wait_for("document.body && document.body.dataset.ready === '1'", timeout=45)
    ds = browser.eval("Object.assign({}, document.body.dataset)")
    assert ds.get("error") is None
    assert int(ds["totalFlags"]) == n
    assert int(ds["visibleFlags"]) == n
    assert int(ds["renderedFlags"]) == n  # MapLibre drew every flag of the GeoJSON

    # injection strings are text, not markup
    assert browser.eval("document.title") == INJECT_TITLE
    assert browser.eval("document.querySelector('#sites .site-name').textContent") == INJECT_SITE
    assert browser.eval("document.getElementById('title').textContent") == INJECT_TITLE
    # the page's 3 scripts, plus the site's imagery script once MapLibre asked for one of its tiles
    srcs = browser.eval("Array.from(document.scripts).map(s => s.getAttribute('src'))")
    imagery_scripts = [x for x in srcs if x is not None and x.startswith("imagery/")]
    assert [x for x in srcs if x not in imagery_scripts] == [None, "maplibre-gl.js", None]
    assert set(imagery_scripts) <= {f"imagery/{SITE_ID}.js"} and len(imagery_scripts) <= 1
    assert browser.eval("document.querySelectorAll('img[src=\"x\"]').length") == 0

    # the date filter: only the earliest appeared_before left
    dates = sorted({f["properties"]["appeared_before"] for f in published["fc"]["features"]})
    idle = int(ds["idleCount"])
    browser.eval(
        "(() => { const s = document.getElementById('date-filter'); s.value = '0';"
        " s.dispatchEvent(new Event('input')); return true; })()"
    )
    assert browser.eval("document.getElementById('date-label').textContent") == dates[0]
    assert browser.eval("document.body.dataset.visibleFlags") == "1"
    assert browser.eval("document.querySelectorAll('#flag-table tbody tr:not([hidden])').length") == 1
    browser.wait_for(
        f"Number(document.body.dataset.idleCount) > {idle} && document.body.dataset.renderedFlags === '1'"
    )
    idle = int(browser.eval("document.body.dataset.idleCount"))
    browser.eval(
        "(() => { const s = document.getElementById('date-filter'); s.value = s.max;"
        " s.dispatchEvent(new Event('input')); return true; })()"
    )
    browser.wait_for(
        f"Number(document.body.dataset.idleCount) > {idle} && document.body.dataset.renderedFlags === '{n}'"
    )

    # zoom to the site (button in the list): flags are drawn as polygons there
    idle = int(browser.eval("document.body.dataset.idleCount"))
    browser.eval("document.querySelector('#sites .site-name').click()")
    browser.wait_for(
        f"Number(document.body.dataset.idleCount) > {idle} && !compoundwatch.map.isMoving()"
        " && compoundwatch.map.getZoom() > 12"
    )
    browser.wait_for(f"document.body.dataset.renderedFlags === '{n}'")
    polys = browser.eval(
        "new Set(compoundwatch.map.queryRenderedFeatures({layers: ['flags-fill']})"
        ".map(f => f.properties.flag_id)).size"
    )
    assert polys == n

    # popup of the flag with the injected property: text, plus its chip image loaded from disk
    fid = published["injected_flag"]
    browser.eval(f"!!compoundwatch.openFlagPopup({json.dumps(fid)})")
    browser.wait_for(
        "(() => { const i = document.querySelector('.cw-popup img');"
        " return i && i.complete && i.naturalWidth > 0; })()"
    )
    popup_text = browser.eval("document.querySelector('.cw-popup').textContent")
    assert INJECT_PROP in popup_text and fid in popup_text and "appeared_before" in popup_text
    assert browser.eval("document.querySelector('.cw-popup img').getAttribute('src')") == f"chips/{fid}.png"
    assert browser.eval("document.querySelectorAll('.cw-popup img').length") == 1
    browser._read(0.5)

    png = browser.screenshot()
    POPUP_SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    POPUP_SCREENSHOT.write_bytes(png)
    with Image.open(io.BytesIO(png)) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=float)
    assert rgb.shape == (800, 1280, 3)
    mapped = rgb[:, PANEL_PX + 10 :]  # right of the side panel
    assert mapped.std() > 15
    assert len(np.unique(mapped.reshape(-1, 3), axis=0)) > 100

    problems = _problems(browser.events)
    assert problems == [], "\n".join(problems)


def _render(browser: Chromium, action: str) -> None:
    """Run ``action`` (JavaScript) and wait until the map has rendered it with every tile loaded."""
    idle = int(browser.eval("document.body.dataset.idleCount"))
    browser.eval(action)
    browser.wait_for(
        f"Number(document.body.dataset.idleCount) > {idle} && !compoundwatch.map.isMoving()"
        " && compoundwatch.map.areTilesLoaded()",
        timeout=45,
    )


def _shot(browser: Chromium) -> tuple[bytes, np.ndarray]:
    png = browser.screenshot()
    with Image.open(io.BytesIO(png)) as im:
        return png, np.asarray(im.convert("RGB"), dtype=float)


def _table(browser: Chromium) -> list[list[str]]:
    return browser.eval(
        "Array.from(document.querySelectorAll('#flag-table tbody tr'))"
        ".map(tr => [tr.dataset.flagId, tr.cells[0].textContent, tr.cells[1].textContent])"
    )


def test_flags_table_and_imagery_under_the_flag(published: dict[str, Any], browser: Chromium) -> None:
    feats = [f["properties"] for f in published["fc"]["features"]]
    n = len(feats)
    browser.open((published["out"] / "index.html").as_uri())
    browser.wait_for("document.body && document.body.dataset.ready === '1'", timeout=45)

    # the table lists every flag once, in rank order; site names are text
    assert browser.eval("document.body.dataset.tableRows") == str(n)
    rows = _table(browser)
    assert [r[0] for r in rows] == [p["flag_id"] for p in feats]
    assert [r[1] for r in rows] == [str(p["rank"]) for p in feats] == ["1", "2", "3"]
    assert {r[2] for r in rows} == {INJECT_SITE}
    assert browser.eval("document.querySelectorAll('#flag-table img, #flag-table script').length") == 0
    dates_text = browser.eval("Array.from(document.querySelectorAll('#imagery-dates li')).map(li => li.textContent)")
    assert dates_text == [f"{INJECT_SITE}: before 2021-02-14 (100 % clear) · after 2021-12-11 (100 % clear)"]
    assert browser.eval("document.querySelectorAll('#imagery-dates *').length") == 1  # text only, no markup
    links = browser.eval(
        "Array.from(document.querySelectorAll('#flag-table tbody tr'))"
        ".map(tr => Array.from(tr.querySelectorAll('a')).map(a => [a.href, a.target, a.rel]))"
    )
    for row_links in links:
        hosts = [re.match(r"https://([^/]+)/", h)[1] for h, _, _ in row_links]
        assert hosts == ["browser.dataspace.copernicus.eu", "apps.sentinel-hub.com", "www.openstreetmap.org"]
        assert all(t == "_blank" and "noopener" in r for _, t, r in row_links)

    # sorting: area (largest first, then smallest), date (newest first), rank again
    def order(key: str, reverse: bool) -> list[str]:
        ranked = sorted(feats, key=lambda p: p["rank"])
        return [p["flag_id"] for p in sorted(ranked, key=lambda p: p[key], reverse=reverse)]

    def click_head(key: str) -> None:
        browser.eval(f"document.querySelector('#flag-table th[data-key=\"{key}\"] button').click()")

    click_head("area_m2")
    assert [r[0] for r in _table(browser)] == order("area_m2", True)
    assert browser.eval("document.querySelector('th[data-key=\"area_m2\"]').getAttribute('aria-sort')") == (
        "descending"
    )
    click_head("area_m2")
    assert [r[0] for r in _table(browser)] == order("area_m2", False)
    click_head("appeared_before")
    assert [r[0] for r in _table(browser)] == order("appeared_before", True)
    assert order("appeared_before", True) != order("rank", False)  # the sorts are told apart
    click_head("rank")
    assert [r[0] for r in _table(browser)] == order("rank", False)

    # click the first row: the map zooms to that flag and loads the site's imagery
    _render(browser, "document.querySelector('#flag-table tbody tr').click()")
    assert browser.eval("document.querySelector('#flag-table tbody tr').classList.contains('selected')")
    assert int(browser.eval("document.body.dataset.imageryTiles")) > 0
    assert browser.eval("document.body.dataset.imageryMode") == "after"
    centre = browser.eval("compoundwatch.map.getCenter().toArray()")
    west, south, east, north = shp_shape(published["fc"]["features"][0]["geometry"]).bounds
    assert west < centre[0] < east and south < centre[1] < north

    # the flag's box on screen (map canvas offset by the panel)
    left = browser.eval("document.getElementById('map').getBoundingClientRect().left")
    corners = browser.eval(
        f"[compoundwatch.map.project([{west}, {north}]), compoundwatch.map.project([{east}, {south}])]"
        ".map(p => [p.x, p.y])"
    )
    x0, y0 = corners[0][0] + left, corners[0][1]
    x1, y1 = corners[1][0] + left, corners[1][1]
    assert x1 - x0 > 40 and y1 - y0 > 40  # the 120 m flag is drawn large enough to judge
    inset = 6
    inner = (slice(int(y0) + inset, int(y1) - inset), slice(int(x0) + inset, int(x1) - inset))

    png_after, after = _shot(browser)
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(png_after)
    _render(browser, "document.querySelector('input[name=\"imagery-mode\"][value=\"before\"]').click()")
    assert browser.eval("document.body.dataset.imageryMode") == "before"
    _, before = _shot(browser)
    _render(browser, "document.querySelector('input[name=\"imagery-mode\"][value=\"none\"]').click()")
    _, off = _shot(browser)

    # inside the flag (inset past its outline): no imagery is one flat colour; the after scene's roof and
    # the before scene's soil differ from it everywhere, and from each other by far (the planted change)
    a, b, o = after[inner], before[inner], off[inner]
    assert a.shape[0] * a.shape[1] > 900
    assert o.std(axis=(0, 1)).max() < 1.0
    flat = np.median(o.reshape(-1, 3), axis=0)
    for img in (a, b):
        assert (np.abs(img - flat).max(axis=-1) > 8).mean() > 0.95  # imagery pixels, not the background
    assert a.mean() - b.mean() > 100  # bright roof after, dark soil before (shared stretch)
    # around the flag (its box grown by its size): textured imagery after, a flat basemap without it
    w, h = int(x1 - x0), int(y1 - y0)
    around = (slice(max(int(y0) - h, 0), int(y1) + h), slice(max(int(x0) - w, PANEL_PX + 1), int(x1) + w))

    def colours(img: np.ndarray) -> int:
        return len(np.unique(img[around].reshape(-1, 3), axis=0))

    assert colours(after) > 100 and colours(before) > 100  # measured 218 and 234 at z 15
    assert colours(off) < 0.2 * min(colours(after), colours(before))  # measured 19: land, tint, outlines
    assert after[around].std() > 2 * off[around].std()
    # the flag's outline is drawn on top of the imagery: the confidence colour (#b30000) along its box
    ring = np.zeros(after.shape[:2], bool)
    ring[int(y0) - 3 : int(y1) + 4, int(x0) - 3 : int(x1) + 4] = True
    ring[int(y0) + 4 : int(y1) - 3, int(x0) + 4 : int(x1) - 3] = False
    red = (np.abs(after - [0xB3, 0, 0]).max(axis=-1) < 40)
    perimeter = 2 * ((x1 - x0) + (y1 - y0))
    assert red[ring].sum() > 0.8 * perimeter  # the outline goes all round (measured 1.00 perimeters at z 15)
    assert red[inner].mean() < 0.01  # and the imagery inside is not covered by it
    print(f"imagery under flag: after mean {a.mean():.0f}, before {b.mean():.0f}, colours around "
          f"{colours(after)}/{colours(before)}/{colours(off)}, outline {red[ring].sum() / perimeter:.2f} perimeters")
    problems = _problems(browser.events)
    assert problems == [], "\n".join(problems)


def test_without_imagery_the_basemap_shows(tmp_path: Path, web_dir: Path, browser: Chromium) -> None:
    """A run published without imagery: the offline basemap (land, sea, borders) under the flags."""
    run = tiny_run(tmp_path)
    out = tmp_path / "out"
    publish_all(run.flags.to_crs(4326), [run.site], run.tiles, out, run.settings, web_dir=web_dir,
                with_imagery=False)
    assert not (out / "imagery").exists()
    browser.open((out / "index.html").as_uri())
    browser.wait_for("document.body && document.body.dataset.ready === '1'", timeout=45)
    assert browser.eval("document.body.dataset.imagerySites") == "0"
    assert browser.eval("document.querySelector('input[name=\"imagery-mode\"]').disabled") is True
    assert browser.eval("document.body.dataset.tableRows") == "3"
    _render(browser, "(compoundwatch.map.jumpTo({center: [87.0, 43.0], zoom: 2}), true)")  # central Asia, wide
    _, rgb = _shot(browser)
    mapped = rgb[:, PANEL_PX + 10 :]
    land = (np.abs(mapped - [0xEC, 0xEE, 0xE8]).max(axis=-1) <= 2).mean()
    sea = (np.abs(mapped - [0xC9, 0xDB, 0xE6]).max(axis=-1) <= 2).mean()
    assert land > 0.3 and sea > 0.05, (land, sea)  # Eurasia and the oceans around it
    problems = _problems(browser.events)
    assert problems == [], "\n".join(problems)
