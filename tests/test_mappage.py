"""The offline map page: escaping, self-containment, and a real render in headless Chromium.

The browser test opens ``index.html`` from disk in Debian's ``chromium`` (installed by
``scripts/install-chromium.sh`` when missing and we are root; skipped with the reason otherwise) with every
host name resolving to nothing, drives it over the DevTools protocol on a pipe (no extra packages), and
checks: no console errors or exceptions, only file:/data:/blob: requests, the number of flags MapLibre
rendered equals the GeoJSON's, the date filter, the popup (properties and chip), the injection strings
render as text, and a non-blank screenshot (kept at ``build/test-artifacts/mappage.png``).
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

from pipeline.errors import InputFileError
from pipeline.publish.bundle import publish_all
from pipeline.publish.mappage import install_web_assets, maplibre_dist, safe_json_for_html, write_map_page

REPO = Path(__file__).resolve().parents[1]
INJECT_SITE = "<script>alert(1)</script>"
INJECT_PROP = '<img src=x onerror="alert(2)">'
INJECT_TITLE = "Run </title><script>alert(3)</script> & co"
SCREENSHOT = REPO / "build" / "test-artifacts" / "mappage.png"
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
    assert browser.eval("document.scripts.length") == 3
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
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    SCREENSHOT.write_bytes(png)
    with Image.open(io.BytesIO(png)) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=float)
    assert rgb.shape == (800, 1280, 3)
    mapped = rgb[:, 330:]  # right of the side panel
    assert mapped.std() > 15
    assert len(np.unique(mapped.reshape(-1, 3), axis=0)) > 100

    problems = _problems(browser.events)
    assert problems == [], "\n".join(problems)
