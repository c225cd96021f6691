"""Detection rasters → ranked flag polygons with their evidence.

:mod:`pipeline.flag.polygons` holds the flagger (``vectorise`` and its numpy core ``flag_rows``; the rules
are in its docstring); :mod:`pipeline.flag._blobs` the compiled blob labelling and pixel-edge tracing it
runs. Pure: detection datasets or arrays in, GeoDataFrames or plain rows out; never opens files.
"""

from pipeline.flag.polygons import (
    CLEAR_SCENE_FRACTION,
    FLAG_COLUMNS,
    MAX_SCENES,
    FlagLayers,
    close_gaps,
    empty_flags,
    flag_confidence,
    flag_id,
    flag_rows,
    flags_frame,
    grid_transform,
    join_radius,
    to_wgs84,
    vectorise,
)

__all__ = [
    "FLAG_COLUMNS",
    "MAX_SCENES",
    "CLEAR_SCENE_FRACTION",
    "vectorise",
    "FlagLayers",
    "flag_rows",
    "flags_frame",
    "empty_flags",
    "flag_id",
    "grid_transform",
    "close_gaps",
    "join_radius",
    "flag_confidence",
    "to_wgs84",
]
