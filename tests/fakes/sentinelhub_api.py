"""A loopback Sentinel Hub: OAuth client-credentials token endpoint, Catalog API search with paging and a
Process API that renders a real multi-band uint16 GeoTIFF (rasterio, in memory) for the requested
bbox/size/CRS, bands and date.

Pixel values are a pure function of (band, date, row): ``dn(band, date) + row % 5`` with
``dn = 1000 + 37 * band_number + day_of_month`` (plus 1000 for dates in ``offset_dates``), SCL 4 (vegetation),
or 9 (cloud) on ``cloudy`` dates; for an L1C request the last layer is the SCL-like code 7 (clear) / 9.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import re
import secrets
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import numpy as np
from affine import Affine
from rasterio.io import MemoryFile

from ._http import LoopbackServer, Response

TOKEN_PATH = "/oauth/token"
CATALOG_PATH = "/api/v1/catalog/1.0.0/search"
PROCESS_PATH = "/api/v1/process"


def band_number(band: str) -> int:
    return 8 if band == "B8A" else int(band[1:])


def dn(band: str, date: dt.date, offset: bool = False) -> int:
    """The fake's digital number of ``band`` on ``date`` at row 0 (rows add ``row % 5``)."""
    return 1000 + 37 * band_number(band) + date.day + (1000 if offset else 0)


@dataclass
class FakeScene:
    """One acquisition (one catalog feature): date, id, cloud cover %, whether SCL is all cloud."""

    date: dt.date
    scene_id: str
    cloud_cover: float = 5.0
    cloudy: bool = False
    properties: dict[str, Any] = field(default_factory=dict)


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()


class FakeSentinelHub(LoopbackServer):
    """Sentinel Hub on loopback.

    Parameters
    ----------
    client_id, client_secret
        The only credentials the token endpoint accepts.
    scenes
        The catalog.
    page_size
        Catalog page size cap (forces paging).

    Behaviour switches (set on the instance): ``fail_next[api]`` a list of ``(status, headers)`` answered
    to the next requests of ``api`` (``"token"``, ``"catalog"``, ``"process"``); ``fail_always[api]`` a status
    answered to every request; ``revoke_tokens_after`` revoke all tokens issued so far after that many
    successful Process responses (simulates expiry mid-run; the next request gets HTTP 401).
    """

    def __init__(self, client_id: str, client_secret: str, scenes: list[FakeScene], page_size: int = 2) -> None:
        super().__init__()
        self.client_id = client_id
        self.client_secret = client_secret
        self.scenes = scenes
        self.page_size = page_size
        self.tokens: dict[str, bool] = {}  # token -> valid
        self.fail_next: dict[str, list[tuple[int, dict[str, str]]]] = {"token": [], "catalog": [], "process": []}
        self.fail_always: dict[str, int | None] = {"token": None, "catalog": None, "process": None}
        self.revoke_tokens_after: int | None = None
        self.process_ok = 0
        self.process_bodies: list[dict[str, Any]] = []

    # -- helpers --------------------------------------------------------------------------------------
    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    def _injected(self, api: str) -> Response | None:
        with self.lock:
            if self.fail_next[api]:
                status, headers = self.fail_next[api].pop(0)
                error = {"status": status, "reason": "injected", "message": f"fake {api} error"}
                return _json(status, {"error": error}, headers)
            if self.fail_always[api]:
                status = self.fail_always[api]
                return _json(status, {"error": {"status": status, "reason": "injected", "message": "fake outage"}})
        return None

    def _authorised(self, headers: dict[str, str]) -> bool:
        auth = headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip()
        with self.lock:
            return self.tokens.get(token, False)

    def _new_token(self) -> str:
        payload = base64.urlsafe_b64encode(json.dumps({"azp": self.client_id}).encode()).decode().rstrip("=")
        return f"eyJhbGciOiJub25lIn0.{payload}.{secrets.token_hex(16)}"

    # -- endpoints ------------------------------------------------------------------------------------
    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> Response:
        if path == TOKEN_PATH and method == "POST":
            return self._token(body)
        if path == CATALOG_PATH and method == "POST":
            return self._catalog(headers, body)
        if path == PROCESS_PATH and method == "POST":
            return self._process(headers, body)
        return _json(404, {"error": {"status": 404, "message": f"no route {method} {path}"}})

    def _token(self, body: bytes) -> Response:
        injected = self._injected("token")
        if injected:
            return injected
        form = {k: v[0] for k, v in parse_qs(body.decode()).items()}
        if form.get("grant_type") != "client_credentials":
            return _json(400, {"error": "unsupported_grant_type"})
        if form.get("client_id") != self.client_id or form.get("client_secret") != self.client_secret:
            return _json(401, {"error": "invalid_client", "error_description": "Invalid client credentials"})
        token = self._new_token()
        with self.lock:
            self.tokens[token] = True
        return _json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 3600, "scope": ""})

    def _catalog(self, headers: dict[str, str], body: bytes) -> Response:
        if not self._authorised(headers):
            return _json(401, {"error": {"status": 401, "reason": "Unauthorized", "message": "token invalid"}})
        injected = self._injected("catalog")
        if injected:
            return injected
        q = json.loads(body)
        t0, t1 = (dt.datetime.fromisoformat(t.replace("Z", "+00:00")) for t in q["datetime"].split("/"))
        m = re.search(r"eo:cloud_cover\s*<=\s*([0-9.]+)", q.get("filter") or "")
        max_cc = float(m.group(1)) if m else 100.0
        hits = []
        for s in sorted(self.scenes, key=lambda s: (s.date, s.scene_id)):
            when = dt.datetime.combine(s.date, dt.time(5, 0), tzinfo=dt.timezone.utc)
            if t0 <= when <= t1 and s.cloud_cover <= max_cc:
                props = {"datetime": when.isoformat().replace("+00:00", "Z"), "eo:cloud_cover": s.cloud_cover,
                         **s.properties}
                hits.append({"type": "Feature", "stac_version": "1.0.0", "id": s.scene_id, "properties": props,
                             "bbox": q.get("bbox"), "geometry": None, "links": [], "assets": {}})
        start = int(q.get("next") or 0)
        limit = min(int(q.get("limit", 100)), self.page_size)
        page = hits[start : start + limit]
        ctx: dict[str, Any] = {"limit": limit, "returned": len(page)}
        if start + limit < len(hits):
            ctx["next"] = start + limit
        return _json(200, {"type": "FeatureCollection", "features": page, "links": [], "context": ctx})

    def _process(self, headers: dict[str, str], body: bytes) -> Response:
        if not self._authorised(headers):
            return _json(401, {"error": {"status": 401, "reason": "Unauthorized", "message": "token expired"}})
        injected = self._injected("process")
        if injected:
            return injected
        q = json.loads(body)
        with self.lock:
            self.process_bodies.append(q)
        bounds = q["input"]["bounds"]
        left, bottom, right, top = bounds["bbox"]
        epsg = int(bounds["properties"]["crs"].rstrip("/").split("/")[-1])
        width, height = int(q["output"]["width"]), int(q["output"]["height"])
        data = q["input"]["data"][0]
        day = dt.date.fromisoformat(data["dataFilter"]["timeRange"]["from"][:10])
        harmonize = data.get("processing", {}).get("harmonizeValues", True)
        m = re.search(r"bands:\s*(\[[^\]]*\])", q["evalscript"])
        inputs = json.loads(m.group(1)) if m else []
        scene = next((s for s in self.scenes if s.date == day), None)
        if scene is None:
            return _json(400, {"error": {"status": 400, "message": f"no data on {day}"}})
        offset = not harmonize and str(scene.properties.get("s2:processing_baseline", "02.14")) >= "04.00"
        rows = (np.arange(height) % 5)[:, None] * np.ones((1, width))
        layers = []
        for b in inputs:
            if b == "dataMask":
                continue
            if b == "SCL":
                layers.append(np.full((height, width), 9 if scene.cloudy else 4))
            elif b == "CLM":
                layers.append(np.full((height, width), 9 if scene.cloudy else 7))
            else:
                layers.append(dn(b, day, offset) + rows)
        arr = np.stack(layers).astype(np.uint16)
        transform = Affine((right - left) / width, 0, left, 0, -(top - bottom) / height, top)
        with MemoryFile() as mem:
            with mem.open(driver="GTiff", width=width, height=height, count=arr.shape[0], dtype="uint16",
                          crs=f"EPSG:{epsg}", transform=transform) as dst:
                dst.write(arr)
            payload = mem.read()
        with self.lock:
            self.process_ok += 1
            if self.revoke_tokens_after is not None and self.process_ok == self.revoke_tokens_after:
                self.tokens = {t: False for t in self.tokens}
        return 200, {"Content-Type": "image/tiff", "x-processingunits-spent": "0.05"}, payload


__all__ = ["FakeSentinelHub", "FakeScene", "dn", "TOKEN_PATH", "CATALOG_PATH", "PROCESS_PATH"]
