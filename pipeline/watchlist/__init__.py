"""Watchlists: facility lists (ASPI's Xinjiang Data Project, OSM camp outlines, any lon/lat table) turned
into sites files the pipeline runs on (``compoundwatch sites import``).

:mod:`~pipeline.watchlist.records` reads the rows, :mod:`~pipeline.watchlist.expr` filters them with a small
safe expression language, :mod:`~pipeline.watchlist.build` makes the sites (squares around points on the UTM
grid, footprints from polygons) and writes them.
"""

from pipeline.watchlist.build import (
    DEFAULT_SIZE_M,
    ImportOptions,
    ImportResult,
    import_sites,
    read_within,
    write_sites_file,
)
from pipeline.watchlist.expr import parse_where
from pipeline.watchlist.records import Record, read_records

__all__ = ["DEFAULT_SIZE_M", "ImportOptions", "ImportResult", "import_sites", "read_within", "write_sites_file",
           "parse_where", "Record", "read_records"]
