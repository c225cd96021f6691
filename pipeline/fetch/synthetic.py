"""Built-in synthetic Sentinel-2 L2A time series with ground truth (the offline default source).

The generator is deterministic for a given seed and site id. It draws a landscape on the site's UTM grid
(arid soil, seasonal farmland with ploughing, roads, an existing town, water; :data:`SCENARIOS`), places
walled compounds that expand at known dates, and renders one scene per revisit with the confusers real
imagery has: crop cycles, ploughing, winter snow, clouds with shadows (flagged in SCL, but not perfectly), sensor
noise, sub-pixel misregistration (0.1-0.8 px) and the +1000 DN offset of processing baseline 04.00
(dates from 2022-01-25 on, recorded in ``boa_add_offset``).

Reflectances are unitless (0-1); the cube stores them as L2A digital numbers (× 10000, uint16).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
from scipy import ndimage

from pipeline.errors import ConfigError, InvalidAOIError
from pipeline.fetch import FetchRequest
from pipeline.fetch._cube import build_cube

__all__ = ["SyntheticFetcher", "TruthPolygon", "BASELINE_04_DATE", "SPECTRA", "SCENARIOS"]

BASELINE_04_DATE = dt.date(2022, 1, 25)
_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12")

# Surface reflectance spectra for the 13 bands above (B01 … B12, B8A after B08).
SPECTRA: dict[str, tuple[float, ...]] = {
    "arid": (0.14, 0.15, 0.19, 0.24, 0.26, 0.27, 0.28, 0.29, 0.30, 0.30, 0.05, 0.36, 0.32),
    "soil_wet": (0.08, 0.09, 0.11, 0.13, 0.15, 0.16, 0.17, 0.18, 0.19, 0.19, 0.03, 0.24, 0.20),
    "ploughed": (0.06, 0.065, 0.08, 0.095, 0.11, 0.12, 0.13, 0.14, 0.145, 0.15, 0.02, 0.19, 0.16),
    "crop": (0.03, 0.035, 0.07, 0.04, 0.10, 0.30, 0.38, 0.42, 0.43, 0.43, 0.01, 0.20, 0.10),
    "road": (0.10, 0.10, 0.11, 0.12, 0.13, 0.14, 0.145, 0.15, 0.155, 0.155, 0.02, 0.17, 0.16),
    "town": (0.13, 0.14, 0.15, 0.17, 0.18, 0.19, 0.20, 0.21, 0.215, 0.215, 0.03, 0.24, 0.22),
    "tree": (0.03, 0.04, 0.06, 0.05, 0.09, 0.22, 0.27, 0.30, 0.31, 0.31, 0.01, 0.17, 0.09),
    "water": (0.07, 0.07, 0.06, 0.04, 0.03, 0.02, 0.02, 0.02, 0.015, 0.015, 0.005, 0.01, 0.01),
    "concrete": (0.24, 0.27, 0.30, 0.33, 0.34, 0.35, 0.36, 0.37, 0.37, 0.37, 0.06, 0.40, 0.37),
    "roof_blue": (0.22, 0.26, 0.24, 0.17, 0.18, 0.19, 0.20, 0.20, 0.20, 0.20, 0.03, 0.17, 0.14),
    "roof_grey": (0.20, 0.21, 0.22, 0.23, 0.24, 0.24, 0.25, 0.25, 0.25, 0.25, 0.04, 0.22, 0.20),
    "cleared": (0.17, 0.19, 0.23, 0.28, 0.30, 0.31, 0.32, 0.33, 0.34, 0.34, 0.06, 0.41, 0.37),
    "snow": (0.85, 0.86, 0.85, 0.84, 0.82, 0.80, 0.78, 0.76, 0.74, 0.70, 0.10, 0.10, 0.08),
    "cloud": (0.60, 0.62, 0.62, 0.63, 0.63, 0.63, 0.64, 0.64, 0.64, 0.60, 0.30, 0.55, 0.45),
    "gravel": (0.19, 0.20, 0.21, 0.22, 0.23, 0.235, 0.24, 0.245, 0.25, 0.25, 0.04, 0.27, 0.25),
}

#: Landscapes of the synthetic scenes (a site's ``scenario``):
#: ``arid`` plain with roads; ``farmland`` seasonal fields, ploughing and a lake; ``town`` an existing town
#: with trees; ``control`` farmland and town with an unchanging compound and no construction (must stay
#: unflagged); ``grey-desert`` a large compound of grey blocks built on rough grey gravel, the case that
#: per-pixel change vectors do not solve: the compound's mean spectrum equals the desert's (within ~3 %), only
#: its structure changes (rows of roofs 25-35 % brighter than the gravel, their shadows 30 % darker, yards 5 %
#: darker: as large as the differences the gravel's own fine texture gives under sub-pixel misregistration).
SCENARIOS: tuple[str, ...] = ("arid", "farmland", "town", "control", "grey-desert")
#: Brightness of a grey-desert compound's parts relative to the gravel (yard, roof, second roof, wall, shadow):
#: 55 % yards, 30 % roofs, 15 % shadows average to 1.02 of the gravel.
_GREY_MIX = (0.95, 1.35, 1.25, 1.05, 0.7)

# SCL classes used by the renderer.
SCL_SHADOW, SCL_VEG, SCL_BARE, SCL_WATER, SCL_CLOUD_MED, SCL_CLOUD_HIGH, SCL_SNOW = 3, 4, 5, 6, 8, 9, 11


@dataclass(frozen=True)
class TruthPolygon:
    """One expansion: pixel rectangle (row0, row1, col0, col1), the first date index it shows, its kind."""

    truth_id: str
    rows: tuple[int, int]
    cols: tuple[int, int]
    first_index: int
    kind: str


@dataclass
class _Landscape:
    """Static per-pixel layers of a site (all ``(rows, cols)``)."""

    cover: np.ndarray  # int codes, see _COVER
    field_id: np.ndarray  # farmland field index (-1 elsewhere)
    texture: np.ndarray  # multiplicative brightness texture around 1
    compounds: list[TruthPolygon] = field(default_factory=list)
    existing: list[tuple[tuple[int, int], tuple[int, int]]] = field(default_factory=list)


_COVER = {"arid": 0, "field": 1, "road": 2, "town": 3, "water": 4, "tree": 5, "compound": 6}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma, mode="wrap")
    return (f - f.mean()) / (f.std() + 1e-9)


def _dates(start: dt.date, end: dt.date, revisit_days: int, rng: np.random.Generator) -> list[dt.date]:
    out: list[dt.date] = []
    d = start
    while d <= end:
        jitter = int(rng.integers(-3, 4))
        day = min(max(d + dt.timedelta(days=jitter), start), end)
        if not out or day > out[-1]:
            out.append(day)
        d += dt.timedelta(days=revisit_days)
    return out


class SyntheticFetcher:
    """Deterministic synthetic L2A scenes for a site; implements the :class:`~pipeline.fetch.Fetcher` protocol.

    ``seed`` fixes everything; the same (seed, site_id, grid, dates) gives bit-identical cubes. ``horizon``
    (a date on or after the request's end, or ``None`` = the end): the world (dates, compounds, construction
    dates) is planned up to it and the cube holds the dates up to the request's end, so a later end adds
    scenes and leaves the earlier ones bit-identical (simulated new imagery).
    """

    def __init__(self, seed: int = 42, revisit_days: int = 30, horizon: dt.date | None = None) -> None:
        self.seed = seed
        self.revisit_days = revisit_days
        self.horizon = horizon

    # -- public API ---------------------------------------------------------------------------------
    def fetch(self, request: FetchRequest) -> xr.Dataset:
        """Render the scene cube (see :mod:`pipeline.fetch` for the layout) for ``request``."""
        rng, dates, land = self._plan(request)
        return self._render(request, rng, dates, land, self._visible(request, dates))

    def truth(self, request: FetchRequest) -> pd.DataFrame:
        """Ground truth expansions as a GeoDataFrame in the site's UTM CRS.

        Columns: ``truth_id``, ``site_id``, ``kind``, ``appeared_after`` / ``appeared_before`` (ISO dates:
        the last date before ground works began / the first date showing the finished buildings; ground
        works are half visible on the date between, so a detector may rightly date the change to either of
        the two later dates), ``area_m2`` and ``geometry``.
        """
        import geopandas as gpd
        from shapely.geometry import box

        _, dates, land = self._plan(request)
        n_visible = self._visible(request, dates)
        a = request.grid.affine
        rows = []
        for tp in land.compounds:
            if tp.first_index >= n_visible:
                continue  # planned after the request's end: not built yet
            (r0, r1), (c0, c1) = tp.rows, tp.cols
            x0, y0 = a * (c0, r0)
            x1, y1 = a * (c1, r1)
            geom = box(min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1))
            rows.append(
                {
                    "truth_id": tp.truth_id,
                    "site_id": request.site_id,
                    "kind": tp.kind,
                    "appeared_after": dates[tp.first_index - 2].isoformat(),
                    "appeared_before": dates[tp.first_index].isoformat(),
                    "area_m2": float(geom.area),
                    "geometry": geom,
                }
            )
        cols = ["truth_id", "site_id", "kind", "appeared_after", "appeared_before", "area_m2", "geometry"]
        return gpd.GeoDataFrame(rows, columns=cols, geometry="geometry", crs=request.grid.epsg)

    def dates(self, request: FetchRequest) -> list[dt.date]:
        """Acquisition dates the cube will have."""
        dates = self._plan(request)[1]
        return dates[: self._visible(request, dates)]

    # -- planning -----------------------------------------------------------------------------------
    def _rng(self, request: FetchRequest, salt: str = "") -> np.random.Generator:
        key = f"{self.seed}:{request.site_id}:{salt}".encode()
        return np.random.default_rng(list(key))

    @staticmethod
    def _visible(request: FetchRequest, dates: list[dt.date]) -> int:
        """How many of the planned ``dates`` the request sees (those up to its end)."""
        return sum(d <= request.end for d in dates)

    def _plan(self, request: FetchRequest) -> tuple[np.random.Generator, list[dt.date], _Landscape]:
        """The render generator, every planned date (up to the horizon) and the landscape."""
        if self.horizon is not None and self.horizon < request.end:
            raise ConfigError(f"synthetic.horizon ({self.horizon}) is before fetch.end ({request.end}); move the "
                              "horizon later or the end earlier")
        rng = self._rng(request)
        dates = _dates(request.start, self.horizon or request.end, self.revisit_days, rng)
        land = self._landscape(request, rng, dates)
        return self._rng(request, "render"), dates, land

    def _landscape(self, request: FetchRequest, rng: np.random.Generator, dates: list[dt.date]) -> _Landscape:
        h, w = request.grid.shape
        scen = request.scenario
        if scen not in SCENARIOS:
            raise ConfigError(f"unknown synthetic scenario {scen!r}; use one of {', '.join(SCENARIOS)}")
        cover = np.zeros((h, w), np.int8)
        field_id = np.full((h, w), -1, np.int32)
        texture = 1.0 + 0.06 * _smooth_noise(rng, (h, w), 6) + 0.02 * rng.standard_normal((h, w))
        if scen == "grey-desert":  # rough gravel: fine texture, as strong as a compound's yards
            texture = 1.0 + 0.05 * _smooth_noise(rng, (h, w), 6) + 0.06 * _smooth_noise(rng, (h, w), 0.7)

        # farmland: a patchwork of fields over part of the scene
        if scen in ("farmland", "control", "town"):
            frac = {"farmland": 0.7, "control": 0.6, "town": 0.35}[scen]
            n_field = 0
            r = 0
            while r < h:
                fh = int(rng.integers(18, 40))
                c = 0
                while c < w:
                    fw = int(rng.integers(18, 45))
                    if rng.random() < frac:
                        cover[r + 1 : r + fh - 1, c + 1 : c + fw - 1] = _COVER["field"]
                        field_id[r + 1 : r + fh - 1, c + 1 : c + fw - 1] = n_field
                        n_field += 1
                    c += fw
                r += fh
        # water: a lake in farmland/control scenes, a river elsewhere
        if scen in ("farmland", "control"):
            cy, cx, ry, rx = int(h * 0.8), int(w * 0.15), int(rng.integers(12, 20)), int(rng.integers(15, 25))
            yy, xx = np.ogrid[:h, :w]
            lake = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
            cover[lake] = _COVER["water"]
            field_id[lake] = -1
        # town: blocks with trees
        if scen in ("town", "control"):
            t0, t1 = int(h * 0.05), int(h * 0.45)
            c0, c1 = int(w * 0.55), int(w * 0.95)
            cover[t0:t1, c0:c1] = _COVER["town"]
            field_id[t0:t1, c0:c1] = -1
            trees = (rng.random((h, w)) < 0.12) & (cover == _COVER["town"])
            cover[ndimage.binary_dilation(trees) & (cover == _COVER["town"])] = _COVER["tree"]
            texture[t0:t1, c0:c1] *= 1 + 0.15 * rng.standard_normal((t1 - t0, c1 - c0))
        # roads: a few straight lines, 1-2 px wide
        for k in range(3):
            width = 1 + int(rng.integers(0, 2))
            if k % 2 == 0:
                r = int(rng.integers(10, h - 10))
                cover[r : r + width, :] = _COVER["road"]
                field_id[r : r + width, :] = -1
            else:
                c = int(rng.integers(10, w - 10))
                cover[:, c : c + width] = _COVER["road"]
                field_id[:, c : c + width] = -1

        land = _Landscape(cover=cover, field_id=field_id, texture=texture.astype(np.float32))
        if scen == "control":
            # an existing, unchanging compound
            self._place(land, rng, dates, n_expansions=0, existing=True, new_ones=0)
        elif scen == "grey-desert":  # one large new compound (~20-35 ha), nothing else
            self._place(land, rng, dates, n_expansions=0, existing=False, new_ones=1, new_size=((40, 55), (50, 70)))
        else:
            self._place(land, rng, dates, n_expansions=2, existing=True, new_ones=1)
        return land

    def _place(
        self,
        land: _Landscape,
        rng: np.random.Generator,
        dates: list[dt.date],
        n_expansions: int,
        existing: bool,
        new_ones: int,
        new_size: tuple[tuple[int, int], tuple[int, int]] = ((12, 20), (14, 24)),
    ) -> None:
        """Place compounds: an existing core with ``n_expansions`` additions, plus ``new_ones`` new compounds
        of ``new_size`` ((min, max) rows, (min, max) columns, pixels)."""
        h, w = land.cover.shape
        first_ok = next((i for i, d in enumerate(dates) if d >= dates[0] + dt.timedelta(days=400)), None)
        last_ok = len(dates) - 6

        def when() -> int:
            """A random date index for construction: after a year of reference, before the last 6 dates."""
            if first_ok is None or first_ok >= last_ok:
                raise ConfigError(
                    f"the synthetic scenes need a series of about 16 months or more (a year of reference, then "
                    f"construction), got {len(dates)} dates from {dates[0]}; widen fetch.start/fetch.end"
                )
            return int(rng.integers(first_ok, last_ok))

        occupied = np.zeros((h, w), bool)

        def pick(ph: int, pw: int, near: tuple[int, int] | None = None) -> tuple[int, int]:
            if near is None and (h - ph - 16 <= 0 or w - pw - 16 <= 0):
                raise InvalidAOIError(
                    f"a {h}×{w} px site is too small for the synthetic scenes; enlarge the site (at least about "
                    "600 m × 600 m at 10 m)"
                )
            for _ in range(500):
                if near is None:
                    r0 = int(rng.integers(8, h - ph - 8))
                    c0 = int(rng.integers(8, w - pw - 8))
                else:
                    r0, c0 = near
                rr, cc = slice(r0 - 4, r0 + ph + 4), slice(c0 - 4, c0 + pw + 4)
                ok_cover = np.isin(land.cover[rr, cc], [_COVER["arid"], _COVER["field"], _COVER["road"]])
                if near is not None or (ok_cover.mean() > 0.97 and not occupied[rr, cc].any()):
                    return r0, c0
            raise InvalidAOIError(
                f"the synthetic generator could not place a compound in a {h}×{w} px site; enlarge the site "
                "(at least about 1 km × 1 km)"
            )

        n_truth = 0
        if existing:
            ch, cw = int(rng.integers(22, 30)), int(rng.integers(24, 34))
            r0, c0 = pick(ch + 2 * 16, cw + 2 * 16)
            r0, c0 = r0 + 16, c0 + 16
            self._draw(land, (r0, r0 + ch), (c0, c0 + cw))
            land.existing.append(((r0, r0 + ch), (c0, c0 + cw)))
            occupied[r0 - 16 : r0 + ch + 16, c0 - 16 : c0 + cw + 16] = True
            sides = list(rng.permutation(4))
            for k in range(n_expansions):
                side = sides[k]
                depth = int(rng.integers(9, 14))
                if side == 0:  # north
                    rows, cols = (r0 - depth, r0), (c0, c0 + cw)
                elif side == 1:  # south
                    rows, cols = (r0 + ch, r0 + ch + depth), (c0, c0 + cw)
                elif side == 2:  # west
                    rows, cols = (r0, r0 + ch), (c0 - depth, c0)
                else:  # east
                    rows, cols = (r0, r0 + ch), (c0 + cw, c0 + cw + depth)
                idx = when()
                land.compounds.append(TruthPolygon(f"T{n_truth + 1}", rows, cols, idx, "expansion"))
                n_truth += 1
        for _ in range(new_ones):
            ph, pw = int(rng.integers(*new_size[0])), int(rng.integers(*new_size[1]))
            r0, c0 = pick(ph, pw)
            occupied[r0 - 4 : r0 + ph + 4, c0 - 4 : c0 + pw + 4] = True
            idx = when()
            land.compounds.append(TruthPolygon(f"T{n_truth + 1}", (r0, r0 + ph), (c0, c0 + pw), idx, "new compound"))
            n_truth += 1
        for tp in land.compounds:
            land.field_id[tp.rows[0] : tp.rows[1], tp.cols[0] : tp.cols[1]] = -1

    @staticmethod
    def _draw(land: _Landscape, rows: tuple[int, int], cols: tuple[int, int]) -> None:
        land.cover[rows[0] : rows[1], cols[0] : cols[1]] = _COVER["compound"]
        land.field_id[rows[0] : rows[1], cols[0] : cols[1]] = -1

    # -- rendering ----------------------------------------------------------------------------------
    @staticmethod
    def _compound_pattern(shape: tuple[int, int], rng: np.random.Generator, shadows: bool = False) -> np.ndarray:
        """Per-pixel mixture index for a compound block: 0 concrete yard, 1 blue roof, 2 grey roof, 3 wall,
        4 a building's shadow (the row north of it; only with ``shadows``)."""
        h, w = shape
        pat = np.zeros((h, w), np.int8)
        for r in range(2, h - 2, 4):
            for c in range(2, w - 2, 5):
                pat[r : min(r + 2, h - 2), c : min(c + 3, w - 2)] = 1 + int(rng.integers(0, 2))
                if shadows:
                    pat[r - 1, c : min(c + 3, w - 2)] = 4
        pat[0, :] = pat[-1, :] = pat[:, 0] = pat[:, -1] = 3
        return pat

    def _render(
        self, request: FetchRequest, rng: np.random.Generator, dates: list[dt.date], land: _Landscape,
        n_visible: int,
    ) -> xr.Dataset:
        """Scenes of the first ``n_visible`` of the planned ``dates`` (the static patterns come from all of
        them, so the scenes do not depend on how many are visible)."""
        h, w = request.grid.shape
        band_idx = [_BANDS.index(b) for b in request.bands]
        spec = {k: np.asarray(v, np.float32)[band_idx] for k, v in SPECTRA.items()}
        nb, nt = len(band_idx), n_visible

        # static patterns
        n_fields = int(land.field_id.max()) + 1
        sow = rng.uniform(90, 150, max(n_fields, 1))  # day of year crops emerge
        season = rng.uniform(100, 150, max(n_fields, 1))  # growing season length (days)
        ploughs = rng.random(max(n_fields, 1)) < 0.5
        years = sorted({d.year for d in dates})
        sow_jitter = rng.uniform(-12, 12, (len(years), max(n_fields, 1)))  # farmers sow a bit earlier/later
        fid = np.where(land.field_id >= 0, land.field_id, 0)
        is_field = land.field_id >= 0
        blocks = []
        for (rr, cc) in land.existing:
            blocks.append((rr, cc, -1))
        for tp in land.compounds:
            blocks.append((tp.rows, tp.cols, tp.first_index))
        grey = request.scenario == "grey-desert"
        patterns = [self._compound_pattern((b[0][1] - b[0][0], b[1][1] - b[1][0]), rng, shadows=grey)
                    for b in blocks]
        mix = [spec["concrete"], spec["roof_blue"], spec["roof_grey"], spec["concrete"] * 1.05]
        if grey:  # the compound's parts are the gravel's own spectrum, brighter or darker
            mix = [spec["gravel"] * k for k in _GREY_MIX]
            spec["arid"] = spec["gravel"]

        base = np.broadcast_to(spec["arid"][:, None, None], (nb, h, w)).copy()
        cov = land.cover
        for name, code in (("arid", 0), ("road", 2), ("town", 3), ("water", 4), ("tree", 5)):
            m = cov == code
            base[:, m] = spec[name][:, None]
        base[:, cov == _COVER["field"]] = spec["soil_wet"][:, None]
        base *= land.texture[None]
        is_water = cov == _COVER["water"]
        is_tree = cov == _COVER["tree"]

        refl = np.empty((nt, nb, h, w), np.uint16)
        scl = np.empty((nt, h, w), np.uint8)
        offsets = np.zeros(nt, np.int16)
        scene_ids = []
        for t, day in enumerate(dates[:n_visible]):
            doy = day.timetuple().tm_yday
            img = base.copy()
            # crops: vegetation fraction rises and falls over the growing season; ploughed in autumn
            phase = (doy - sow - sow_jitter[years.index(day.year)]) / season
            veg = np.clip(np.sin(np.pi * phase), 0, None) * (phase >= 0) * (phase <= 1)
            vf = veg[fid] * is_field
            img = img * (1 - vf)[None] + spec["crop"][:, None, None] * vf[None]
            if 280 <= doy <= 340:
                pm = is_field & ploughs[fid]
                img[:, pm] = spec["ploughed"][:, None] * land.texture[pm][None]
            # deciduous trees lose leaves in winter
            if doy < 90 or doy > 310:
                img[:, is_tree] = spec["town"][:, None] * 0.9
            # compounds: existing blocks always; expansions from their first date (cleared the date before)
            for (rr, cc, first), pat in zip(blocks, patterns):
                if first >= 0 and t < first - 1:
                    continue
                sl = (slice(None), slice(rr[0], rr[1]), slice(cc[0], cc[1]))
                if first >= 0 and t == first - 1:
                    img[sl] = spec["arid"][:, None, None] * 0.5 + img[sl] * 0.5  # ground works begin
                    continue
                blk = np.stack([mix[int(k)] for k in pat.ravel()], axis=1).reshape(nb, *pat.shape)
                img[sl] = blk * land.texture[rr[0] : rr[1], cc[0] : cc[1]][None]
            # winter snow (patchy), mostly caught by SCL
            snow = np.zeros((h, w), bool)
            if (doy < 60 or doy > 335) and rng.random() < 0.6:
                snow = _smooth_noise(rng, (h, w), 12) > rng.uniform(-0.5, 0.8)
                img[:, snow] = spec["snow"][:, None] * rng.uniform(0.85, 1.0)
            # atmosphere / illumination
            img *= rng.uniform(0.96, 1.04)
            # misregistration: sub-pixel shift of the whole scene
            mag = rng.uniform(0.1, 0.8)
            ang = rng.uniform(0, 2 * np.pi)
            shift = (mag * np.sin(ang), mag * np.cos(ang))
            img = ndimage.shift(img, (0, *shift), order=1, mode="nearest")
            # clouds and their shadows
            cloud = np.zeros((h, w), np.float32)
            if rng.random() < 0.35:
                field_ = _smooth_noise(rng, (h, w), 10)
                cover_frac = rng.uniform(0.05, 0.6)
                thr = np.quantile(field_, 1 - cover_frac)
                cloud = np.clip((field_ - thr) * 1.5, 0, 1).astype(np.float32)
            shadow = np.roll(cloud > 0.15, (8, -6), axis=(0, 1)) & (cloud < 0.05)
            img[:, shadow] *= 0.45
            img = img * (1 - cloud)[None] + spec["cloud"][:, None, None] * cloud[None]
            # sensor noise
            img += rng.normal(0, 0.004, img.shape).astype(np.float32)

            # scene classification (imperfect: thin cloud edges and some shadow/snow are missed)
            s = np.where(vf > 0.3, SCL_VEG, SCL_BARE).astype(np.uint8)
            s[is_water] = SCL_WATER
            s[snow & (rng.random((h, w)) < 0.97)] = SCL_SNOW
            s[shadow & (rng.random((h, w)) < 0.9)] = SCL_SHADOW
            s[cloud > 0.25] = SCL_CLOUD_MED
            s[cloud > 0.6] = SCL_CLOUD_HIGH
            scl[t] = s

            off = 1000 if day >= BASELINE_04_DATE else 0
            offsets[t] = -off
            refl[t] = np.clip(np.round(img * 10000) + off, 1, 65535).astype(np.uint16)
            baseline = "N0400" if off else "N0213"
            scene_ids.append(f"SYN_MSIL2A_{day:%Y%m%d}T050000_{baseline}_{request.site_id}")

        attrs = {"source": "synthetic", "seed": self.seed}
        return build_cube(request, dates[:n_visible], refl, scl, offsets.tolist(), scene_ids, attrs)
