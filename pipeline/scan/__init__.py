"""Screening areas larger than memory: tile by tile (``aoi``) or block by block from files (``pair_files``).

``tiling`` (fixed UTM tile grids per zone, pure), ``seams`` (clip pieces to tile cores, merge flags across
tile and zone seams), ``aoi`` (``compoundwatch scan``: an AOI tile by tile, resumable, on ``cluster``'s
dask), ``pair_files`` (two scenes on disk block by block: ``compoundwatch compare --blockwise``) and
``_memory`` (handing freed heap back to the OS between blocks). Import the modules; this package file
imports nothing, so ``tiling`` stays free of I/O libraries.
"""
