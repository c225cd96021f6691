"""Loopback HTTP fakes of imagery services for tests (no internet): Sentinel Hub and a STAC API.

Each fake runs a ``ThreadingHTTPServer`` on ``127.0.0.1`` (random port) in a daemon thread; use them as
context managers. They speak just enough of the real protocols for the real clients (sentinelhub-py,
requests-oauthlib, pystac-client, odc-stac/GDAL) to work against them.
"""

from ._http import LoopbackServer
from .sentinelhub_api import FakeSentinelHub
from .stac_api import FakeStacApi

__all__ = ["LoopbackServer", "FakeSentinelHub", "FakeStacApi"]
