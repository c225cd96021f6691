"""Change detectors: pure functions from reflectance arrays to change rasters (no file or config I/O)."""

from pipeline.detect.pair import detect_pair
from pipeline.detect.persistence import detect_series

__all__ = ["detect_series", "detect_pair"]
