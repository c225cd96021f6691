"""One vector layer written as GeoJSON, FlatGeobuf and GeoParquet with identical features.

Every format is written from the *same* cleaned feature collection: the layer first goes through
:func:`pipeline.publish.geojson.to_feature_collection` (EPSG:4326, coordinates rounded to 1e-7°, valid,
RFC 7946 ring orientation), and the FlatGeobuf / GeoParquet files are written from that collection read
back. So the three files hold the same features, the same property values (ISO dates stay ISO strings,
which sort correctly in QGIS and SQL) and the same coordinates, and the stable ``flag_id`` travels as an
ordinary property in each (FlatGeobuf has integer feature ids only).

FlatGeobuf is written with a packed Hilbert R-tree (``SPATIAL_INDEX=YES``), which reorders features on
disk; the ranking is therefore carried by a ``rank`` property where the caller adds one (see
:mod:`pipeline.publish.bundle`), and :func:`read_layer` returns the rows in file order.
GeoParquet is GeoParquet 1.1 (WKB geometry, ``bbox`` covering column for row-group pruning) via geopandas /
pyarrow.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyogrio

from pipeline._files import atomic_path
from pipeline.errors import InputFileError
from pipeline.publish.geojson import read_geojson, to_feature_collection, write_geojson

__all__ = ["FORMATS", "write_layer", "read_layer", "write_flatgeobuf", "write_geoparquet", "feature_records"]

#: Format name → file suffix of the files :func:`write_layer` writes.
FORMATS: dict[str, str] = {"geojson": ".geojson", "fgb": ".fgb", "parquet": ".parquet"}


def _atomic(path: Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary path next to ``path``, then move it into place."""
    with atomic_path(path) as tmp:
        write(tmp)
    return path


def _geometry_type(gdf: gpd.GeoDataFrame) -> str:
    """OGR geometry type for the layer: the single type when uniform, else ``Unknown`` (mixed)."""
    types = set(gdf.geometry.geom_type.dropna())
    if len(types) == 1:
        return types.pop()
    if not types:
        return "Polygon"
    return "Unknown"


def write_flatgeobuf(gdf: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write an EPSG:4326 layer as FlatGeobuf with a spatial index (no promotion to Multi* types)."""
    path = Path(path)

    def _write(tmp: Path) -> None:
        pyogrio.write_dataframe(
            gdf,
            tmp,
            driver="FlatGeobuf",
            geometry_type=_geometry_type(gdf),
            promote_to_multi=False,
            layer=path.stem,
            SPATIAL_INDEX="YES",
        )

    return _atomic(path, _write)


def write_geoparquet(gdf: gpd.GeoDataFrame, path: str | Path) -> Path:
    """Write an EPSG:4326 layer as GeoParquet 1.1 (WKB geometry plus a ``bbox`` covering column)."""
    path = Path(path)
    return _atomic(
        path,
        lambda tmp: gdf.to_parquet(
            tmp, index=False, compression="zstd", schema_version="1.1.0", write_covering_bbox=True
        ),
    )


def write_layer(gdf: gpd.GeoDataFrame, out_dir: str | Path, name: str) -> dict[str, Path]:
    """Write ``gdf`` (any CRS) as ``<out_dir>/<name>.geojson``, ``.fgb`` and ``.parquet``.

    Parameters
    ----------
    gdf
        The layer; reprojected to EPSG:4326. Rows whose geometry is empty or not polygonal are left out
        of every format alike (see :func:`pipeline.publish.geojson.to_feature_collection`).
    out_dir
        Output folder (created).
    name
        File stem.

    Returns
    -------
    dict
        ``{"geojson": Path, "fgb": Path, "parquet": Path}``.
    """
    out_dir = Path(out_dir)
    gj = write_geojson(gdf, out_dir / f"{name}{FORMATS['geojson']}")
    # the other formats are written from exactly what the GeoJSON holds
    clean = read_geojson(gj, columns=[c for c in gdf.columns if c != gdf.geometry.name])
    clean = _restore_dtypes(clean, gdf)
    return {
        "geojson": gj,
        "fgb": write_flatgeobuf(clean, out_dir / f"{name}{FORMATS['fgb']}"),
        "parquet": write_geoparquet(clean, out_dir / f"{name}{FORMATS['parquet']}"),
    }


def _restore_dtypes(clean: gpd.GeoDataFrame, source: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    """Give numeric / boolean columns read back from JSON the source's column kind (float, int, bool).

    JSON keeps values, not column types: an all-null float column reads back as ``object`` and an integer
    column with nulls as ``float``; typed columns make typed fields in FlatGeobuf and Parquet.
    """
    out = clean.copy()
    for col in source.columns:
        if col == source.geometry.name or col not in out.columns:
            continue
        kind = source[col].dtype.kind
        if kind == "f":
            out[col] = pd.to_numeric(out[col], errors="coerce").astype("float64")
        elif kind in "iu":
            s = pd.to_numeric(out[col], errors="coerce")
            out[col] = s.astype("int64") if s.notna().all() else s.astype("Int64")
        elif kind == "b":
            out[col] = out[col].astype("bool") if out[col].notna().all() else out[col].astype("boolean")
        else:
            out[col] = out[col].astype("object")
    return out


def read_layer(path: str | Path) -> gpd.GeoDataFrame:
    """Read a layer written by :func:`write_layer` (any of the three formats) in EPSG:4326.

    Raises
    ------
    InputFileError
        When the file is missing or its suffix is not one of :data:`FORMATS`.
    """
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"layer {path} not found; run `compoundwatch publish` (or dvc repro) first")
    if path.suffix == ".geojson":
        return read_geojson(path)
    if path.suffix == ".fgb":
        return pyogrio.read_dataframe(path).to_crs(4326)
    if path.suffix == ".parquet":
        gdf = gpd.read_parquet(path)
        return gdf.drop(columns=[c for c in ("bbox",) if c in gdf.columns]).to_crs(4326)
    raise InputFileError(f"{path}: unknown layer format; expected one of {', '.join(FORMATS.values())}")


def feature_records(gdf: gpd.GeoDataFrame) -> dict[str, dict[str, object]]:
    """``{flag_id or row number: {property: JSON value, ..., "geometry": WKT}}``: a format-neutral view
    of a layer for comparing files (values normalised through JSON, so 1 == 1.0 and NaN == null)."""
    fc = to_feature_collection(gdf)
    out: dict[str, dict[str, object]] = {}
    for i, feat in enumerate(fc["features"]):
        props = json.loads(json.dumps(feat["properties"]))
        key = str(props.get("flag_id", props.get("site_id", i)))
        props["geometry"] = json.dumps(feat["geometry"], sort_keys=True)
        out[key] = props
    return out
