"""The one error hierarchy of compoundwatch.

Every error the package raises on purpose derives from :class:`CompoundwatchError`; most also derive
from the matching built-in so callers can catch either. Messages say what failed and what to do.
This module imports nothing.
"""

__all__ = [
    "CompoundwatchError",
    "ConfigError",
    "InvalidAOIError",
    "InputFileError",
    "NotARasterError",
    "BandError",
    "SceneMismatchError",
    "FetchError",
    "DetectionError",
    "LabelError",
]


class CompoundwatchError(Exception):
    """Root of every error raised on purpose by compoundwatch."""


class ConfigError(CompoundwatchError, ValueError):
    """A configuration value (params.yaml, CLI option) is missing or invalid."""


class InvalidAOIError(CompoundwatchError, ValueError):
    """A site or area of interest has an invalid geometry or identifier."""


class InputFileError(CompoundwatchError, FileNotFoundError):
    """An input file or folder does not exist or cannot be read."""


class NotARasterError(CompoundwatchError, ValueError):
    """A file that should be a raster cannot be opened as one."""


class BandError(CompoundwatchError, ValueError):
    """Required spectral bands are missing or cannot be identified."""


class SceneMismatchError(CompoundwatchError, ValueError):
    """Two scenes cannot be compared (they do not overlap, or are given in the wrong order)."""


class FetchError(CompoundwatchError, OSError):
    """Imagery could not be fetched from a source."""


class DetectionError(CompoundwatchError, RuntimeError):
    """The detector cannot run on the given arrays (shapes, grids, no clear observations)."""


class LabelError(CompoundwatchError, ValueError):
    """Reference labels cannot be used as given (shapes differ from the prediction, a pixel in two classes)."""
