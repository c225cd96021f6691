"""Publishing: flag layers as RFC 7946 GeoJSON (one file per site plus a merged, ranked layer)."""

from pipeline.publish.geojson import (
    COORD_DECIMALS,
    merge_layers,
    read_geojson,
    to_feature_collection,
    validate_rfc7946,
    write_geojson,
)

__all__ = [
    "COORD_DECIMALS",
    "merge_layers",
    "read_geojson",
    "to_feature_collection",
    "validate_rfc7946",
    "write_geojson",
]
