"""Sentinel-2 from Sentinel Hub or the Copernicus Data Space Ecosystem through sentinelhub-py.

One Catalog API search (paged) finds the acquisitions over the site's grid in the date range with
``eo:cloud_cover`` at most ``max_cloud_cover``; one Process API request per acquisition date then returns a
multi-band uint16 GeoTIFF on the site's UTM grid (``bbox`` = grid bounds in its EPSG, ``size`` = grid shape,
so 10 m pixels): the requested bands as digital numbers (``units: "DN"``, ``harmonizeValues: false``, so the
baseline 04.00 offset is still in and recorded per date in ``boa_add_offset``) plus ``SCL`` (L2A) or an
SCL-like cloud mask from ``CLM`` (L1C; see :data:`pipeline.fetch._cube.L1C_SCL_CODES`). Tiles of one date
are mosaicked least-cloudy first.

Downloaded bands go to a :class:`~pipeline.fetch.cache.SceneCache` before the cube is built, so an
interrupted run resumes, and a changed band list or date range fetches only what is missing. Scenes whose
SCL has no clear pixel are skipped and listed in ``ds.attrs["skipped"]``.

Credentials: ``SH_CLIENT_ID``/``SH_CLIENT_SECRET`` or a sentinelhub-py profile (``settings.profile`` or
``SH_PROFILE``). They are never logged (OAuth debug records are redacted), never in ``repr`` or errors and
never in the cube. HTTP 429/5xx are retried with backoff + jitter honouring ``Retry-After`` (Sentinel Hub
sends milliseconds); an HTTP 401 on a data request drops the token and fetches a new one once.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import rasterio
import requests
import xarray as xr
from rasterio.io import MemoryFile
from sentinelhub import (
    CRS,
    BBox,
    DataCollection,
    MimeType,
    MosaickingOrder,
    SentinelHubCatalog,
    SentinelHubDownloadClient,
    SentinelHubRequest,
    SentinelHubSession,
    SHConfig,
)
from sentinelhub.download.models import DownloadRequest, DownloadResponse

from pipeline.config import Collection, SentinelHubSettings
from pipeline.errors import FetchError
from pipeline.fetch import FetchRequest
from pipeline.fetch._cube import DEFAULT_INVALID_SCL, build_cube, empty_note, has_clear
from pipeline.fetch._secrets import redact, redacting_logs
from pipeline.fetch.cache import SCL_KEY, SceneCache
from pipeline.fetch.harmonise_meta import boa_add_offset
from pipeline.fetch.retry import RetryPolicy, send_with_retry

__all__ = ["SentinelHubFetcher", "FetchPlan", "SceneInfo", "estimate_pu", "evalscript", "sh_config"]

LOGGER = logging.getLogger(__name__)
PU_AREA_PX = 512 * 512
PU_MIN_PER_REQUEST = 0.01
CATALOG_PAGE = 100


def estimate_pu(width: int, height: int, n_bands: int, n_dates: int = 1) -> float:
    """Processing units of Process API requests, one per date (Sentinel Hub's rule of thumb).

    ``PU = (width × height / 512²) × (n_bands / 3) × n_dates`` for 16-bit output, at least
    :data:`PU_MIN_PER_REQUEST` (0.01) per request. ``n_bands`` counts every input band including SCL/CLM
    (``dataMask`` is free).
    """
    per_request = max((width * height / PU_AREA_PX) * (n_bands / 3.0), PU_MIN_PER_REQUEST)
    return per_request * n_dates


@dataclass(frozen=True)
class SceneInfo:
    """One acquisition date found by the Catalog API: least-cloudy tile id, cloud cover (%) and offset (DN)."""

    date: dt.date
    scene_id: str
    cloud_cover: float
    boa_add_offset: int
    n_tiles: int = 1


@dataclass(frozen=True)
class FetchPlan:
    """What a fetch would do: searched scenes, what the cache already has, requests and processing units."""

    source: str
    service: str
    n_scenes: int
    n_cached: int
    n_search_requests: int
    n_process_requests: int
    width: int
    height: int
    n_bands: int
    processing_units: float

    def summary(self) -> str:
        """One line for the CLI (``--dry-run`` prints it)."""
        return (
            f"{self.source} ({self.service}): {self.n_scenes} scene date(s) found, {self.n_cached} cached; "
            f"{self.n_search_requests} catalog request(s) + {self.n_process_requests} process request(s) of "
            f"{self.width}x{self.height} px x {self.n_bands} band(s) ~ {self.processing_units:.2f} PU"
        )


def evalscript(bands: Sequence[str], mask: str | None) -> str:
    """Process API evalscript returning ``bands`` (DN) then the mask layer as UINT16.

    ``mask`` is ``"SCL"`` (L2A scene classification), ``"CLM"`` (L1C cloud mask, mapped to SCL-like codes
    7 clear / 9 cloud / 0 no data) or ``None``. Pixels outside the data (``dataMask == 0``) are 0.
    """
    inputs = [*bands, *([mask] if mask else []), "dataMask"]
    values = [f"s.{b}" for b in bands]
    if mask == "SCL":
        values.append("s.SCL")
    elif mask == "CLM":
        values.append("(s.CLM == 1 ? 9 : (s.CLM == 0 ? 7 : 0))")
    n_out = len(values)
    zeros = ", ".join(["0"] * n_out)
    return (
        "//VERSION=3\n"
        "function setup() {\n"
        f"  return {{input: [{{bands: {inputs!r}, units: \"DN\"}}],\n".replace("'", '"')
        + f"          output: {{id: \"default\", bands: {n_out}, sampleType: \"UINT16\"}}}};\n"
        "}\n"
        "function evaluatePixel(s) {\n"
        f"  if (s.dataMask == 0) {{ return [{zeros}]; }}\n"
        f"  return [{', '.join(values)}];\n"
        "}\n"
    )


def sh_config(settings: SentinelHubSettings) -> SHConfig:
    """An ``SHConfig`` for ``settings``: URLs, timeouts and retry limits from settings; credentials from
    ``SH_CLIENT_ID``/``SH_CLIENT_SECRET`` or the sentinelhub profile (``settings.profile``/``SH_PROFILE``).

    Raises
    ------
    FetchError
        No credentials found.
    """
    params: dict[str, Any] = dict(
        sh_base_url=settings.base_url,
        sh_token_url=settings.token_url,
        download_timeout_seconds=settings.timeout_s,
        max_download_attempts=settings.max_retries + 1,
        download_sleep_time=settings.backoff,
    )
    env_id, env_secret = os.environ.get("SH_CLIENT_ID"), os.environ.get("SH_CLIENT_SECRET")
    if settings.profile is None and env_id and env_secret:
        config = SHConfig(use_defaults=True, sh_client_id=env_id, sh_client_secret=env_secret, **params)
    else:
        try:
            config = SHConfig(profile=settings.profile, **params)
        except (KeyError, OSError, ValueError) as err:
            raise FetchError(
                f"sentinelhub profile {settings.profile!r} could not be read ({type(err).__name__}); "
                "create it with `sentinelhub.config --profile NAME --sh_client_id ... --sh_client_secret ...` "
                "or set SH_CLIENT_ID and SH_CLIENT_SECRET"
            ) from err
    if not (config.sh_client_id and config.sh_client_secret):
        raise FetchError(
            f"no credentials for {_service_label(settings.base_url)}: set the environment variables SH_CLIENT_ID "
            "and SH_CLIENT_SECRET (an OAuth client of your account) or a sentinelhub-py profile "
            "(sentinelhub.config --profile NAME ...; then sentinelhub.profile: NAME); see README 'Using real imagery'"
        )
    return config


def _service_label(base_url: str) -> str:
    return "Copernicus Data Space" if "dataspace.copernicus.eu" in base_url else "Sentinel Hub"


def _api_name(url: str) -> str:
    if "/catalog/" in url:
        return "Catalog API"
    if "/process" in url:
        return "Process API"
    return "API"


class _Client(SentinelHubDownloadClient):
    """sentinelhub-py's download client with compoundwatch's retry policy and 401 token refresh.

    The session (OAuth token) is owned by this client, not sentinelhub-py's process-wide cache, so that
    a rejected token can be dropped and fetched again.
    """

    def __init__(self, *, config: SHConfig, policy: RetryPolicy, label: str) -> None:
        super().__init__(config=config)
        self._policy = policy
        self._label = label
        self._own_session: SentinelHubSession | None = None
        self.token_requests = 0
        self.data_requests = 0

    def __repr__(self) -> str:
        return f"_Client({self._label}, {self.config.sh_base_url})"

    def get_session(self) -> SentinelHubSession:
        if self._own_session is None:
            self.token_requests += 1
            try:
                self._own_session = SentinelHubSession(config=self.config)
            except Exception as err:  # oauthlib, requests and sentinelhub raise several types
                status = getattr(getattr(err, "response", None), "status_code", None)
                if status is None:
                    req_exc = getattr(err, "request_exception", None)
                    status = getattr(getattr(req_exc, "response", None), "status_code", None)
                what = f"HTTP {status}" if status else type(err).__name__
                detail = redact(str(err).splitlines()[-1] if str(err) else "", self._secrets())
                raise FetchError(
                    f"{self._label} token endpoint {self.config.sh_token_url} refused to issue an access token "
                    f"({what}: {detail}); check SH_CLIENT_ID/SH_CLIENT_SECRET (or the sentinelhub profile) "
                    "and sentinelhub.token_url"
                ) from err
        return self._own_session

    def _secrets(self) -> tuple[str, ...]:
        return (self.config.sh_client_id, self.config.sh_client_secret)

    def drop_token(self) -> None:
        """Forget the current token; the next request fetches a new one."""
        self._own_session = None

    def _execute_download(self, request: DownloadRequest) -> DownloadResponse:
        if request.url is None:
            raise FetchError("internal error: a Sentinel Hub download request without URL; please report it")
        url = request.url

        def send() -> requests.Response:
            headers = self._prepare_headers(request)
            self.data_requests += 1
            return requests.request(
                request.request_type.value,
                url=url,
                json=request.post_values,
                headers=headers,
                timeout=self.config.download_timeout_seconds,
            )

        resp = send_with_retry(
            send,
            service=f"{self._label} {_api_name(url)}",
            url=url,
            policy=self._policy,
            on_unauthorized=self.drop_token if request.use_session else None,
        )
        return DownloadResponse.from_response(resp, request)


class SentinelHubFetcher:
    """Scene cubes from Sentinel Hub / CDSE (implements :class:`~pipeline.fetch.Fetcher`).

    Parameters
    ----------
    settings
        Service URLs, collection, cloud limit, retry limits and cache folder.
    invalid_scl
        SCL classes that are not clear; a scene without any other class over the grid is skipped.
    sleep
        Replaces ``time.sleep`` between retries (tests).
    """

    def __init__(
        self,
        settings: SentinelHubSettings,
        *,
        invalid_scl: Sequence[int] = DEFAULT_INVALID_SCL,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.settings = settings
        self.invalid_scl = tuple(invalid_scl)
        self.label = _service_label(settings.base_url)
        policy_kw: dict[str, Any] = dict(
            max_attempts=settings.max_retries + 1, backoff_s=settings.backoff, retry_after_unit="ms"
        )
        if sleep is not None:
            policy_kw["sleep"] = sleep
        self.policy = RetryPolicy(**policy_kw)
        self._client: _Client | None = None

    def __repr__(self) -> str:  # no credentials, ever
        s = self.settings
        return f"SentinelHubFetcher(base_url={s.base_url!r}, collection={s.collection.value!r})"

    # -- plumbing -------------------------------------------------------------------------------------
    @property
    def client(self) -> _Client:
        """The download client (created on first use; reads the credentials then)."""
        if self._client is None:
            self._client = _Client(config=sh_config(self.settings), policy=self.policy, label=self.label)
        return self._client

    def _collection(self) -> DataCollection:
        l1c = self.settings.collection is Collection.L1C
        base = DataCollection.SENTINEL2_L1C if l1c else DataCollection.SENTINEL2_L2A
        tag = hashlib.sha1(self.settings.base_url.encode()).hexdigest()[:8]
        return base.define_from(f"CW_{base.name}_{tag}", service_url=self.settings.base_url)

    def _query(self) -> dict[str, Any]:
        s = self.settings
        return {"base_url": s.base_url, "collection": s.collection.value, "max_cloud_cover": s.max_cloud_cover}

    def cache_for(self, request: FetchRequest) -> SceneCache:
        """The scene cache of ``request`` under ``settings.cache_dir``."""
        return SceneCache(self.settings.cache_dir, request.site_id, request.grid, "sentinelhub", self._query())

    @staticmethod
    def _bbox(request: FetchRequest) -> BBox:
        return BBox(request.grid.bounds, crs=CRS(request.grid.epsg))

    # -- catalog --------------------------------------------------------------------------------------
    def search(self, request: FetchRequest) -> list[SceneInfo]:
        """Acquisition dates over the grid in ``[start, end]`` with cloud cover <= ``max_cloud_cover``."""
        client = self.client
        with redacting_logs(client._secrets()):
            catalog = SentinelHubCatalog(config=client.config)
            catalog.client = client
            t0 = dt.datetime.combine(request.start, dt.time(0, 0), tzinfo=dt.timezone.utc)
            t1 = dt.datetime.combine(request.end, dt.time(23, 59, 59), tzinfo=dt.timezone.utc)
            results = catalog.search(
                self._collection(),
                time=(t0, t1),
                bbox=self._bbox(request),
                filter=f"eo:cloud_cover <= {self.settings.max_cloud_cover:g}",
                limit=CATALOG_PAGE,
            )
            features = list(results)
        by_date: dict[dt.date, list[dict[str, Any]]] = {}
        for feat in features:
            props = feat.get("properties", {})
            when = dt.datetime.fromisoformat(str(props["datetime"]).replace("Z", "+00:00")).date()
            if request.start <= when <= request.end:
                by_date.setdefault(when, []).append(feat)
        scenes = []
        for day in sorted(by_date):
            feats = sorted(by_date[day], key=lambda f: (f["properties"].get("eo:cloud_cover", 100.0), f["id"]))
            best = feats[0]
            props = best.get("properties", {})
            scenes.append(
                SceneInfo(
                    date=day,
                    scene_id=str(best["id"]),
                    cloud_cover=float(props.get("eo:cloud_cover", float("nan"))),
                    boa_add_offset=boa_add_offset(props, day, scene_id=str(best["id"])),
                    n_tiles=len(feats),
                )
            )
        return scenes

    # -- planning -------------------------------------------------------------------------------------
    def plan(self, request: FetchRequest, scenes: Sequence[SceneInfo] | None = None) -> FetchPlan:
        """Requests and processing units a :meth:`fetch` of ``request`` would spend (searches the catalog
        unless ``scenes`` is given; the search itself costs no processing units)."""
        if scenes is None:
            scenes = self.search(request)
        cache = self.cache_for(request)
        todo = [cache.missing(s.date, request.bands) for s in scenes]
        todo = [m for m in todo if m]
        h, w = request.grid.shape
        pu = sum(estimate_pu(w, h, len(m)) for m in todo)
        return FetchPlan(
            source="sentinelhub",
            service=f"{self.label} {self.settings.base_url}",
            n_scenes=len(scenes),
            n_cached=len(scenes) - len(todo),
            n_search_requests=max(1, math.ceil(len(scenes) / CATALOG_PAGE)),
            n_process_requests=len(todo),
            width=w,
            height=h,
            n_bands=len(request.bands) + 1,
            processing_units=round(pu, 4),
        )

    # -- download -------------------------------------------------------------------------------------
    def _download(self, request: FetchRequest, scene: SceneInfo, bands: Sequence[str]) -> dict[str, np.ndarray]:
        """One Process API request for ``scene.date``: the given bands (and SCL) on the grid."""
        spectral = [b for b in bands if b != SCL_KEY]
        mask = None
        if SCL_KEY in bands:
            mask = "CLM" if self.settings.collection is Collection.L1C else "SCL"
        start = dt.datetime.combine(scene.date, dt.time(0, 0), tzinfo=dt.timezone.utc)
        end = dt.datetime.combine(scene.date, dt.time(23, 59, 59), tzinfo=dt.timezone.utc)
        h, w = request.grid.shape
        sh_req = SentinelHubRequest(
            evalscript=evalscript(spectral, mask),
            input_data=[
                SentinelHubRequest.input_data(
                    data_collection=self._collection(),
                    time_interval=(start, end),
                    maxcc=self.settings.max_cloud_cover / 100.0,
                    mosaicking_order=MosaickingOrder.LEAST_CC,
                    other_args={"processing": {"harmonizeValues": False}},
                )
            ],
            responses=[SentinelHubRequest.output_response("default", MimeType.TIFF)],
            bbox=self._bbox(request),
            size=(w, h),
            config=self.client.config,
        )
        response = self.client.download(sh_req.download_list, max_threads=1, decode_data=False)[0]
        names = [*spectral, *([SCL_KEY] if mask else [])]
        try:
            with MemoryFile(response.content) as mem, mem.open() as src:
                data = src.read()
        except rasterio.errors.RasterioError as err:
            raise FetchError(
                f"{self.label} Process API returned no readable GeoTIFF for {scene.date} ({err}); "
                "check the evalscript bands for the collection"
            ) from err
        if data.shape != (len(names), h, w):
            raise FetchError(
                f"{self.label} Process API returned an image of shape {data.shape} for {scene.date}, "
                f"expected {(len(names), h, w)} (bands, rows, cols)"
            )
        out = {n: data[i].astype(np.uint16) for i, n in enumerate(names)}
        if SCL_KEY in out:
            out[SCL_KEY] = out[SCL_KEY].astype(np.uint8)
        return out

    def fetch(self, request: FetchRequest) -> xr.Dataset:
        """Search, download what the cache lacks, and return the cube (see :mod:`pipeline.fetch`)."""
        with redacting_logs(self.client._secrets()):
            scenes = self.search(request)
            plan = self.plan(request, scenes)
            LOGGER.info("fetch %s: %s", request.site_id, plan.summary())
            cache = self.cache_for(request)
            for scene in scenes:
                missing = cache.missing(scene.date, request.bands)
                if not missing:
                    continue
                arrays = self._download(request, scene, missing)
                meta: dict[str, Any] = {
                    "scene_id": scene.scene_id,
                    "boa_add_offset": scene.boa_add_offset,
                    "cloud_cover": scene.cloud_cover,
                    "n_tiles": scene.n_tiles,
                }
                scl = arrays.get(SCL_KEY)
                if scl is not None and not has_clear(scl, self.invalid_scl):
                    meta["skipped"] = "no clear pixel over the AOI"
                    cache.put(scene.date, {}, meta)
                    LOGGER.info("skip %s %s: no clear pixel", scene.date, scene.scene_id)
                    continue
                cache.put(scene.date, arrays, meta)
        return self._assemble(request, scenes, cache)

    def _assemble(self, request: FetchRequest, scenes: Sequence[SceneInfo], cache: SceneCache) -> xr.Dataset:
        dates, refl, scl, offsets, ids, skipped = [], [], [], [], [], []
        for scene in scenes:
            meta = cache.meta(scene.date) or {}
            if meta.get("skipped"):
                skipped.append(empty_note(scene.date, meta.get("scene_id", scene.scene_id), meta["skipped"]))
                continue
            dates.append(scene.date)
            refl.append(np.stack([cache.get(scene.date, b) for b in request.bands]))
            scl.append(cache.get(scene.date, SCL_KEY))
            offsets.append(int(meta.get("boa_add_offset", scene.boa_add_offset)))
            ids.append(str(meta.get("scene_id", scene.scene_id)))
        attrs = {
            "source": "sentinelhub",
            "service": self.label,
            "base_url": self.settings.base_url,
            "collection": self.settings.collection.value,
            "max_cloud_cover": self.settings.max_cloud_cover,
        }
        return build_cube(
            request,
            dates,
            np.stack(refl).astype(np.uint16) if refl else None,
            np.stack(scl).astype(np.uint8) if scl else None,
            offsets,
            ids,
            attrs,
            skipped,
        )

