"""One typed, validated settings object built from ``params.yaml``.

Precedence (highest first): explicit overrides passed by the CLI > ``params.yaml`` > the defaults below.
Secrets never live here: Sentinel Hub / CDSE OAuth client id and secret come from the environment
(``SH_CLIENT_ID``, ``SH_CLIENT_SECRET``) or from a sentinelhub-py config profile, so they never reach
params.yaml, dvc.lock or the logs.

Service presets
---------------
Sentinel Hub (default): ``base_url: https://services.sentinel-hub.com``,
``token_url: https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token``.
Copernicus Data Space Ecosystem: ``base_url: https://sh.dataspace.copernicus.eu``,
``token_url: https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import re
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pipeline.errors import ConfigError, InputFileError

__all__ = [
    "Source",
    "FetchSettings",
    "SyntheticSettings",
    "TileSettings",
    "PreprocessSettings",
    "PairMethod",
    "DetectSettings",
    "FlagSettings",
    "EvaluateSettings",
    "Collection",
    "SentinelHubSettings",
    "StacSettings",
    "LocalSettings",
    "SH_URLS",
    "CDSE_URLS",
    "DaskSettings",
    "Settings",
    "load_settings",
    "params_hash",
    "DEFAULT_PARAMS",
    "SITE_ID_PATTERN",
]

DEFAULT_PARAMS = Path("params.yaml")
#: A site id: it names files and folders (``data/raw/<site>.zarr``) and appears in web pages.
SITE_ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
#: Bands every two-date detector needs (blue, green, red, NIR at 10 m).
MIN_BANDS = ("B02", "B03", "B04", "B08")
S2_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")


class Source(str, Enum):
    """Where imagery comes from."""

    SYNTHETIC = "synthetic"
    SENTINELHUB = "sentinelhub"
    STAC = "stac"
    LOCAL = "local"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FetchSettings(_Section):
    """What to fetch: source, time range (UTC dates) and bands, on a UTM grid of ``resolution_m`` metres."""

    source: Source = Source.SYNTHETIC
    start: dt.date = dt.date(2020, 6, 1)
    end: dt.date = dt.date(2023, 6, 30)
    bands: tuple[str, ...] = ("B02", "B03", "B04", "B08", "B11", "B12")
    resolution_m: float = Field(10.0, gt=0, le=60)
    max_cloud_cover: float = Field(80.0, ge=0, le=100)

    @field_validator("bands")
    @classmethod
    def _known_bands(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [b for b in v if b not in S2_BANDS]
        if unknown:
            raise ValueError(f"unknown Sentinel-2 band(s) {unknown}; use names like B02, B8A, B11")
        if not v:
            raise ValueError("at least one band is needed")
        return v

    @model_validator(mode="after")
    def _ordered(self) -> FetchSettings:
        if self.end <= self.start:
            raise ValueError(f"end ({self.end}) must be after start ({self.start})")
        return self


class SyntheticSettings(_Section):
    """The built-in scene generator: seed and revisit interval in days.

    ``horizon``: the date up to which the synthetic world is planned (acquisition dates, compounds and their
    construction dates); the cube holds the dates up to ``fetch.end``. With a horizon later than
    ``fetch.end``, moving ``fetch.end`` forward adds new scenes and keeps every earlier scene identical: the
    offline way to simulate new imagery (``compoundwatch watch --end``). ``null``: planned up to ``fetch.end``.
    """

    seed: int = 42
    revisit_days: int = Field(30, ge=5, le=120)
    horizon: dt.date | None = None


class TileSettings(_Section):
    """Chunking of the per-site cubes: square tiles of ``tile_size_px`` pixels."""

    tile_size_px: int = Field(256, ge=32, le=4096)


class PreprocessSettings(_Section):
    """SCL classes treated as not clear, and whether to remove the 2022 processing-baseline offset.

    ``normalise``: map every date linearly (per band) onto the series' median composite over likely-unchanged
    pixels (:func:`pipeline.preprocess.radiometry.normalise_series`); for series mixing products or exports
    (display-stretched true colour next to raw reflectance, L1C next to L2A). Off by default: a series of one
    L2A product is already on one radiometric scale.
    """

    invalid_scl: tuple[int, ...] = (0, 1, 3, 8, 9, 10, 11)
    harmonise: bool = True
    normalise: bool = False


class PairMethod(str, Enum):
    """Two-date detector used by ``compare``: the learned model where one fits the bands, or plain CVA."""

    AUTO = "auto"
    LEARNED = "learned"
    CVA = "cva"


class DetectSettings(_Section):
    """Persistent change-vector detector.

    ``reference_months``: months at the start of the series that form the per-pixel reference.
    ``threshold``: ``None`` for an automatic (Otsu) threshold on the score, else a fixed score.
    ``min_score``: floor for the automatic threshold (score units: robust z of the change vector).
    ``persistence``: fraction of clear dates after the break that must stay changed (0-1).
    ``min_post_obs``: clear dates after the break needed to call a change.
    ``pair_method``: two-date detector of ``compare``: ``auto`` (learned model when one exists for the
    scenes' bands, else CVA), ``learned`` (error if no model fits) or ``cva``.
    ``texture``: also run the texture channel (local contrast; grey blocks on grey ground whose mean colour
    does not change, :mod:`pipeline.detect.texture`); about 2.6× the series detector's time, so a very wide
    scan may turn it off.
    """

    method: str = "persistent-cva"
    reference_months: int = Field(12, ge=1, le=60)
    threshold: float | None = Field(None, gt=0)
    min_score: float = Field(6.0, gt=0)
    persistence: float = Field(0.8, gt=0, le=1)
    min_post_obs: int = Field(3, ge=1)
    max_ndvi_gain: float = Field(0.1, ge=0, le=2)
    pair_method: PairMethod = PairMethod.AUTO
    texture: bool = True


class FlagSettings(_Section):
    """Vectorising: drop blobs below ``min_area_m2`` square metres.

    ``join_gap_m``: changed pixels separated by gaps up to this many metres form one flag (a compound's roof
    blocks around its courtyards); ``None`` = the default closing that bridges gaps of up to 2 pixels.
    ``support_area_m2``: ``None`` = a flag's confidence is the mean confidence of its changed pixels; a
    value makes it grow with the flag's changed area: the doubt ``1 - mean`` is multiplied by
    ``sqrt(support_area_m2 / changed area)`` (at most 1), as the uncertainty of a mean falls with the square
    root of the number of pixels averaged. See :func:`pipeline.flag.flag_confidence`.
    """

    min_area_m2: float = Field(5000.0, ge=0)
    simplify_m: float = Field(0.0, ge=0)
    join_gap_m: float | None = Field(None, gt=0, le=500)
    support_area_m2: float | None = Field(None, gt=0)


class EvaluateSettings(_Section):
    """Object-level matching: a truth polygon >= ``min_truth_area_m2`` is found at IoU >= ``iou_threshold``."""

    iou_threshold: float = Field(0.3, gt=0, le=1)
    min_truth_area_m2: float = Field(5000.0, ge=0)


SH_URLS = (
    "https://services.sentinel-hub.com",
    "https://services.sentinel-hub.com/auth/realms/main/protocol/openid-connect/token",
)
CDSE_URLS = (
    "https://sh.dataspace.copernicus.eu",
    "https://identity.dataspace.copernicus.eu/auth/realms/CDSE/protocol/openid-connect/token",
)


class Collection(str, Enum):
    """Sentinel-2 product level."""

    L2A = "l2a"
    L1C = "l1c"


def _http(v: str) -> str:
    if not v.startswith(("http://", "https://")):
        raise ValueError(f"must be an http(s) URL, got {v!r}")
    if "@" in v.split("/")[2]:
        raise ValueError("must not contain credentials (user:password@host); use SH_CLIENT_ID/SH_CLIENT_SECRET")
    return v.rstrip("/")


class SentinelHubSettings(_Section):
    """Sentinel Hub or CDSE through sentinelhub-py (Catalog + Process API).

    ``max_cloud_cover``: scene cloud cover limit in percent (Catalog filter ``eo:cloud_cover``).
    ``max_retries``: retries after the first attempt for 429/5xx/connection errors.
    ``backoff``: first retry delay in seconds (doubles each retry, ±25 % jitter; ``Retry-After`` wins).
    ``profile``: sentinelhub-py config profile holding the credentials (``None``: env vars / default profile).
    ``cache_dir``: where downloaded scenes are kept between runs (resume, no refetch).
    ``timeout_s``: per-request timeout in seconds.
    """

    base_url: str = SH_URLS[0]
    token_url: str = SH_URLS[1]
    collection: Collection = Collection.L2A
    max_cloud_cover: float = Field(80.0, ge=0, le=100)
    max_retries: int = Field(5, ge=0, le=20)
    backoff: float = Field(2.0, ge=0, le=600)
    profile: str | None = None
    cache_dir: Path = Path("data/cache/sentinelhub")
    timeout_s: float = Field(120.0, gt=0)

    @field_validator("base_url", "token_url")
    @classmethod
    def _urls(cls, v: str) -> str:
        return _http(v)


class StacSettings(_Section):
    """Any STAC API through pystac-client + odc-stac.

    ``url``: the API root (Earth Search: ``https://earth-search.aws.element84.com/v1``; Planetary Computer:
    ``https://planetarycomputer.microsoft.com/api/stac/v1`` with ``sign: true``, which needs the
    ``planetary-computer`` package). ``collection``: e.g. ``sentinel-2-l2a``. ``band_assets``: band -> asset key
    overrides (the default understands ``B04`` as well as Earth Search's ``red``); ``scl_asset``: the scene
    classification asset (``None``: auto, ``SCL`` or ``scl``).
    """

    url: str = "https://earth-search.aws.element84.com/v1"
    collection: str = "sentinel-2-l2a"
    sign: bool = False
    max_cloud_cover: float = Field(80.0, ge=0, le=100)
    band_assets: dict[str, str] = Field(default_factory=dict)
    scl_asset: str | None = None
    max_retries: int = Field(5, ge=0, le=20)
    backoff: float = Field(2.0, ge=0, le=600)
    chunk_px: int = Field(512, ge=32, le=8192)

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        return _http(v)


class LocalSettings(_Section):
    """A folder of scenes on disk.

    ``path``: the folder; ``pattern``: glob(s) relative to it matching scene files (multiband GeoTIFF/COG,
    bands named by their descriptions) or band folders (``*_B02.tif`` …). ``band_order``: band names in file
    order for files without band descriptions (e.g. ``[B04, B03, B02]`` for an RGB export).
    ``dn_scale``: multiply stored integer values by this to get L2A DNs (1 for L2A products; ``39.2157`` =
    10000/255 for 8-bit "raw" EO Browser exports). Dates come from tags or ``YYYYMMDD``/``YYYY-MM-DD`` in names.
    """

    path: Path
    pattern: tuple[str, ...] = ("*.tif",)
    band_order: tuple[str, ...] | None = None
    dn_scale: float = Field(1.0, gt=0)

    @field_validator("pattern", mode="before")
    @classmethod
    def _one_or_many(cls, v: object) -> object:
        return (v,) if isinstance(v, str) else v


class DaskSettings(_Section):
    """Where dask work runs.

    ``scheduler``: address of an existing ``dask.distributed`` scheduler (``tcp://host:8786``,
    ``tls://…``, ``inproc://…``); ``None`` = do not join one. ``n_workers``: start a LocalCluster with this
    many single-threaded worker processes (``None`` = dask's default local threaded scheduler, no
    ``distributed`` needed). ``threads_per_worker``: threads of each LocalCluster worker.
    """

    scheduler: str | None = None
    n_workers: int | None = Field(None, ge=1, le=1024)
    threads_per_worker: int = Field(1, ge=1, le=256)

    @field_validator("scheduler")
    @classmethod
    def _address(cls, v: str | None) -> str | None:
        if v is None or v == "":
            return None
        if "://" not in v and ":" not in v:
            raise ValueError(f"expected a scheduler address such as tcp://host:8786, got {v!r}")
        return v


class Settings(_Section):
    """All settings of one run (the parsed ``params.yaml``)."""

    sites: tuple[str, ...] = ()
    sites_file: Path = Path("configs/sites.geojson")
    fetch: FetchSettings = FetchSettings()
    synthetic: SyntheticSettings = SyntheticSettings()
    tile: TileSettings = TileSettings()
    preprocess: PreprocessSettings = PreprocessSettings()
    detect: DetectSettings = DetectSettings()
    flag: FlagSettings = FlagSettings()
    evaluate: EvaluateSettings = EvaluateSettings()
    sentinelhub: SentinelHubSettings = SentinelHubSettings()
    stac: StacSettings = StacSettings()
    local: LocalSettings | None = None
    dask: DaskSettings = DaskSettings()

    @field_validator("sites")
    @classmethod
    def _safe_site_ids(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in v if not SITE_ID_PATTERN.match(s)]
        if bad:
            raise ValueError(f"site ids are lowercase letters, digits and hyphens (they name files), got {bad}")
        return v

    @model_validator(mode="after")
    def _source_section(self) -> Settings:
        if self.fetch.source is Source.LOCAL and self.local is None:
            raise ValueError("fetch.source is 'local' but there is no `local:` section with the scenes' path")
        horizon = self.synthetic.horizon
        if horizon is not None and horizon < self.fetch.end:
            raise ValueError(f"synthetic.horizon ({horizon}) is before fetch.end ({self.fetch.end}): the synthetic "
                             "world is planned up to its horizon; move the horizon later or the end earlier")
        return self


def _format_error(err: ValidationError, origin: str) -> str:
    first = err.errors()[0]
    key = ".".join(str(p) for p in first["loc"]) or "(top level)"
    msg = first["msg"]
    got = first.get("input")
    got_txt = "" if isinstance(got, dict) else f" (got {got!r})"
    more = len(err.errors()) - 1
    tail = f"; and {more} more problem(s)" if more else ""
    return f"{origin}: {key}: {msg}{got_txt}{tail}"


def settings_from_dict(data: dict[str, Any], origin: str = "params") -> Settings:
    """Validate a mapping into :class:`Settings`; raise :class:`ConfigError` naming the bad key."""
    try:
        return Settings.model_validate(data)
    except ValidationError as err:
        raise ConfigError(_format_error(err, origin)) from err


def load_settings(path: str | Path = DEFAULT_PARAMS) -> Settings:
    """Read and validate ``params.yaml`` (missing file -> :class:`InputFileError`)."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"config file {path} not found; run from the project root or pass --params")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}:{where} is not valid YAML ({getattr(err, 'problem', err)})") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections, got {type(data).__name__}")
    return settings_from_dict(data, origin=str(path))


def params_hash(settings: Settings, sections: tuple[str, ...] = (
        "fetch", "synthetic", "sentinelhub", "stac", "local", "preprocess", "detect", "flag"
    )) -> str:
    """Short, stable hash of the settings sections that shape the flags (12 hex digits)."""
    dump = settings.model_dump(mode="json", include=set(sections))
    blob = json.dumps(dump, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(blob).hexdigest()[:12]
