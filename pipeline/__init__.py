"""compoundwatch: find and measure the expansion of walled compounds in Sentinel-2 imagery.

The package is layered (see DESIGN.md): ``config``/``errors``/``grid``/``sites``/``io`` are the core,
``preprocess``/``detect`` pure functions over arrays and xarray, ``fetch`` the I/O edge (sources and scene
readers), ``flag``/``publish``/``evaluate`` turn rasters into vector layers and scores, ``scan``/``compare``/
``api``/``train`` run whole chains, ``stages`` are the DVC entry points and ``cli`` the command line.
"""

__version__ = "0.1.0"

__all__ = ["__version__"]
