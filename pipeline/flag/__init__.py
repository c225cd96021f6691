"""Detection rasters → ranked flag polygons with their evidence.

:mod:`pipeline.flag.polygons` holds the flagger (``vectorise`` and its numpy core ``flag_rows``; the rules
are in its docstring) and is this package's API (its ``__all__``); :mod:`pipeline.flag._blobs` holds the
compiled blob labelling and pixel-edge tracing it runs. Pure: detection datasets or arrays in, GeoDataFrames
or plain rows out; never opens files.
"""

from pipeline.flag import polygons
from pipeline.flag.polygons import *  # noqa: F403  (the names of polygons.__all__)

__all__ = list(polygons.__all__)
