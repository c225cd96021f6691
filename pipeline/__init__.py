"""compoundwatch: find and measure the expansion of walled compounds in Sentinel-2 imagery.

The package is layered (see DESIGN.md): ``grid``/``errors`` are pure, ``fetch`` is the I/O edge,
``preprocess``/``detect`` are pure functions over xarray, ``flag``/``publish``/``evaluate`` turn rasters into
vector layers and scores, ``stages`` are the DVC entry points and ``cli`` the command line.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
