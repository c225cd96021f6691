"""The per-scene ``boa_add_offset`` (DN) of the scene cube, read from product metadata.

Sentinel-2 processing baseline 04.00 and later (operational from 2022-01-25) store
``DN = 10000 × reflectance + 1000``; the metadata field ``BOA_ADD_OFFSET`` (L2A; ``RADIO_ADD_OFFSET`` for
L1C) is ``-1000``. The cube keeps DNs as delivered and records that offset per date in the
``boa_add_offset`` coordinate; :func:`pipeline.preprocess.harmonise.to_reflectance` adds it back.

Sources describe the baseline differently; :func:`boa_add_offset` looks, in order, at

1. an explicit ``BOA_ADD_OFFSET``/``RADIO_ADD_OFFSET`` (property or tag, any case);
2. a flag saying the offset was already removed (Earth Search ``earthsearch:boa_offset_applied: true``) -> 0;
3. a STAC ``raster:bands`` ``offset`` on an asset (reflectance units, e.g. ``-0.1`` -> ``-1000`` DN);
4. the processing baseline (``s2:processing_baseline``, ``processing:version``, ``PROCESSING_BASELINE`` or the
   ``_Nxxxx_`` field of a product id) -> ``-1000`` from 04.00 on, else 0;
5. the acquisition date (on/after 2022-01-25 -> ``-1000``), when nothing else is known.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping
from typing import Any

__all__ = ["BASELINE_04_DATE", "OFFSET_DN", "boa_add_offset", "processing_baseline"]

BASELINE_04_DATE = dt.date(2022, 1, 25)
OFFSET_DN = -1000
_ID_BASELINE = re.compile(r"_N(\d{2})(\d{2})(?:_|$)")
_BASELINE_KEYS = ("s2:processing_baseline", "processing:version", "processing_baseline", "PROCESSING_BASELINE")
_OFFSET_KEYS = ("BOA_ADD_OFFSET", "RADIO_ADD_OFFSET", "boa_add_offset", "s2:boa_add_offset")


def processing_baseline(meta: Mapping[str, Any], scene_id: str | None = None) -> float | None:
    """Processing baseline as a number (``4.0`` for ``"04.00"``/``N0400``) or ``None`` if not stated."""
    for key in _BASELINE_KEYS:
        if meta.get(key) not in (None, ""):
            try:
                return float(str(meta[key]).strip().lstrip("N").replace(",", "."))
            except ValueError:
                m = re.match(r"(\d{2})(\d{2})$", str(meta[key]).strip().lstrip("N"))
                if m:
                    return int(m.group(1)) + int(m.group(2)) / 100
    for text in (scene_id, meta.get("s2:product_uri"), meta.get("id"), meta.get("PRODUCT_ID")):
        if text:
            m = _ID_BASELINE.search(str(text))
            if m:
                return int(m.group(1)) + int(m.group(2)) / 100
    return None


def boa_add_offset(
    meta: Mapping[str, Any],
    date: dt.date | None = None,
    *,
    scene_id: str | None = None,
    assets: Mapping[str, Mapping[str, Any]] | None = None,
) -> int:
    """The offset (DN, ``-1000`` or ``0``) to add to the scene's DNs; see the module docstring for the order.

    Parameters
    ----------
    meta
        Scene properties or raster tags.
    date
        Acquisition date (UTC), the last-resort rule.
    scene_id
        Product id such as ``S2B_MSIL2A_20220612T050659_N0400_R019_T45TVK_...``.
    assets
        STAC assets (``{"B04": {"raster:bands": [{"offset": -0.1, "scale": 0.0001}]}}``).
    """
    lower = {str(k).lower(): v for k, v in meta.items()}
    for key in _OFFSET_KEYS:
        val = meta.get(key, lower.get(key.lower()))
        if val not in (None, ""):
            try:
                return int(round(float(val)))
            except (TypeError, ValueError):
                pass
    if meta.get("earthsearch:boa_offset_applied") is True:
        return 0
    for asset in (assets or {}).values():
        for rb in asset.get("raster:bands", []) or []:
            if isinstance(rb, Mapping) and rb.get("offset"):
                scale = float(rb.get("scale") or 1e-4)
                return int(round(float(rb["offset"]) / scale))
    baseline = processing_baseline(meta, scene_id)
    if baseline is not None:
        return OFFSET_DN if baseline >= 4.0 else 0
    if date is not None:
        return OFFSET_DN if date >= BASELINE_04_DATE else 0
    return 0
