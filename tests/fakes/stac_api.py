"""A loopback STAC API (landing page, conformance, collection, ``/search`` GET/POST with paging) that
serves small Cloud-Optimised GeoTIFFs from a folder with HTTP range requests, as GDAL's ``/vsicurl`` needs.

Items are given as dicts ``{"id", "datetime", "bbox" (WGS84), "geometry", "properties", "assets": {key:
{"href": "/data/<file>.tif", ...}}}``; hrefs starting with ``/`` are made absolute on the server's URL.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from pathlib import Path
from typing import Any

from ._http import LoopbackServer, Response

ITEM_SEARCH = "https://api.stacspec.org/v1.0.0/item-search"
QUERY = "https://api.stacspec.org/v1.0.0/item-search#query"
CORE = "https://api.stacspec.org/v1.0.0/core"


def _json(status: int, obj: Any, headers: dict[str, str] | None = None) -> Response:
    return status, {"Content-Type": "application/json", **(headers or {})}, json.dumps(obj).encode()


class FakeStacApi(LoopbackServer):
    """STAC API over ``items`` of one ``collection``, assets read from ``data_dir``.

    ``fail_next`` is a list of ``(status, headers)`` answered to the next ``/search`` requests.
    """

    def __init__(self, collection: str, items: list[dict[str, Any]], data_dir: Path, page_size: int = 2) -> None:
        super().__init__()
        self.collection = collection
        self.items = items
        self.data_dir = Path(data_dir)
        self.page_size = page_size
        self.fail_next: list[tuple[int, dict[str, str]]] = []

    def _abs(self, obj: dict[str, Any]) -> dict[str, Any]:
        item = json.loads(json.dumps(obj))
        for a in item.get("assets", {}).values():
            if a["href"].startswith("/"):
                a["href"] = self.url + a["href"]
        item.setdefault("type", "Feature")
        item.setdefault("stac_version", "1.0.0")
        item.setdefault("stac_extensions", [])
        item["collection"] = self.collection
        item["links"] = [{"rel": "collection", "href": f"{self.url}/collections/{self.collection}"}]
        return item

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> Response:
        if path in ("", "/"):
            return _json(200, {
                "type": "Catalog", "id": "fake", "stac_version": "1.0.0", "description": "loopback STAC API",
                "conformsTo": [CORE, ITEM_SEARCH, QUERY],
                "links": [
                    {"rel": "self", "href": self.url + "/"},
                    {"rel": "root", "href": self.url + "/"},
                    {"rel": "search", "href": self.url + "/search", "method": "POST", "type": "application/geo+json"},
                    {"rel": "search", "href": self.url + "/search", "method": "GET", "type": "application/geo+json"},
                    {"rel": "data", "href": self.url + "/collections"},
                ],
            })
        if path == "/conformance":
            return _json(200, {"conformsTo": [CORE, ITEM_SEARCH, QUERY]})
        if path == f"/collections/{self.collection}":
            return _json(200, {
                "type": "Collection", "id": self.collection, "stac_version": "1.0.0", "description": "fake",
                "license": "proprietary", "links": [],
                "extent": {"spatial": {"bbox": [[-180, -90, 180, 90]]}, "temporal": {"interval": [[None, None]]}},
            })
        if path == "/search":
            return self._search(method, query, body)
        if path.startswith("/data/"):
            return self._file(method, path, headers)
        return _json(404, {"code": "NotFound", "description": path})

    def _search(self, method: str, query: dict[str, list[str]], body: bytes) -> Response:
        with self.lock:
            if self.fail_next:
                status, headers = self.fail_next.pop(0)
                return _json(status, {"code": "Injected", "description": f"fake {status}"}, headers)
        if method == "POST":
            q = json.loads(body or b"{}")
        else:
            q = {k: v[0] for k, v in query.items()}
            if "bbox" in q:
                q["bbox"] = [float(v) for v in q["bbox"].split(",")]
            if "collections" in q:
                q["collections"] = q["collections"].split(",")
            if "query" in q:
                q["query"] = json.loads(q["query"])
        hits = []
        t0 = t1 = None
        if q.get("datetime"):
            a, b = q["datetime"].split("/")
            t0 = dt.datetime.fromisoformat(a.replace("Z", "+00:00")) if a not in ("", "..") else None
            t1 = dt.datetime.fromisoformat(b.replace("Z", "+00:00")) if b not in ("", "..") else None
        max_cc = None
        cc = (q.get("query") or {}).get("eo:cloud_cover", {})
        if isinstance(cc, dict):
            max_cc = cc.get("lte", cc.get("lt"))
        for it in self.items:
            when = dt.datetime.fromisoformat(it["properties"]["datetime"].replace("Z", "+00:00"))
            if (t0 and when < t0) or (t1 and when > t1):
                continue
            if q.get("collections") and self.collection not in q["collections"]:
                continue
            if max_cc is not None and it["properties"].get("eo:cloud_cover", 0) > float(max_cc):
                continue
            if q.get("bbox"):
                a = q["bbox"]
                b = it["bbox"]
                if a[2] < b[0] or b[2] < a[0] or a[3] < b[1] or b[3] < a[1]:
                    continue
            hits.append(it)
        start = int(q.get("token") or 0)
        limit = min(int(q.get("limit") or self.page_size), self.page_size)
        page = hits[start : start + limit]
        links = []
        if start + limit < len(hits):
            links.append({"rel": "next", "href": self.url + "/search", "method": "POST",
                          "body": {**{k: v for k, v in q.items() if k != "token"}, "token": str(start + limit)},
                          "merge": False})
        return 200, {"Content-Type": "application/geo+json"}, json.dumps({
            "type": "FeatureCollection", "features": [self._abs(i) for i in page], "links": links,
            "numberReturned": len(page), "numberMatched": len(hits),
        }).encode()

    def _file(self, method: str, path: str, headers: dict[str, str]) -> Response:
        f = self.data_dir / path.removeprefix("/data/")
        if not f.is_file():
            return 404, {"Content-Type": "text/plain"}, b"not found"
        blob = f.read_bytes()
        base = {"Content-Type": "image/tiff", "Accept-Ranges": "bytes"}
        if method == "HEAD":
            return 200, {**base, "Content-Length": str(len(blob))}, b""
        rng = headers.get("Range") or headers.get("range")
        m = re.match(r"bytes=(\d+)-(\d*)", rng or "")
        if not m:
            return 200, base, blob
        a = int(m.group(1))
        b = min(int(m.group(2)) if m.group(2) else len(blob) - 1, len(blob) - 1)
        part = blob[a : b + 1]
        return 206, {**base, "Content-Range": f"bytes {a}-{b}/{len(blob)}"}, part
