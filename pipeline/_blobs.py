"""Compiled connected-component labelling for the flagger (:func:`pipeline.flag.flag_rows`).

:func:`label_blobs` does in one compiled two-pass scan what ``scipy.ndimage.label`` (8-connectivity),
``numpy.bincount`` (sizes), ``ndimage.find_objects`` (bounding boxes) and a border test do in four
passes over the block: the per-block cost of a wide-area scan is dominated by these whole-grid passes,
not by the few blobs it keeps. Labels are numbered like scipy's (1, 2 … in raster order of each blob's
first pixel), so the flags, their ids and their order do not depend on which labeller ran
(``tests/test_blobs.py`` checks it against scipy).

Pure: arrays in, arrays out. Compiled on first use and cached on disk (numba ``cache=True``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

__all__ = ["Blobs", "label_blobs"]


@njit(cache=True, nogil=True)
def _find(parent, i):
    root = i
    while parent[root] != root:
        root = parent[root]
    while parent[i] != root:  # path compression
        nxt = parent[i]
        parent[i] = root
        i = nxt
    return root


@njit(cache=True, nogil=True)
def _union(parent, a, b):
    ra = _find(parent, a)
    rb = _find(parent, b)
    if ra < rb:
        parent[rb] = ra
    elif rb < ra:
        parent[ra] = rb
    return min(ra, rb)


@njit(cache=True, nogil=True)
def _label8(mask):
    ny, nx = mask.shape
    labels = np.zeros((ny, nx), np.int32)
    cap = 1024
    parent = np.empty(cap, np.int32)
    parent[0] = 0
    n = 0
    for y in range(ny):
        row = mask[y]
        lab = labels[y]
        up = labels[y - 1] if y > 0 else labels[y]  # row above (unused on row 0)
        for x in range(nx):
            if not row[x]:
                continue
            cur = 0
            if x > 0 and lab[x - 1]:
                cur = lab[x - 1]
            if y > 0:
                for dx in (-1, 0, 1):
                    xx = x + dx
                    if 0 <= xx < nx and up[xx]:
                        cur = up[xx] if cur == 0 else _union(parent, cur, up[xx])
            if cur == 0:
                n += 1
                if n >= cap:
                    grown = np.empty(cap * 2, np.int32)
                    grown[:cap] = parent
                    parent = grown
                    cap *= 2
                parent[n] = n
                cur = n
            lab[x] = cur
    # roots are each component's smallest provisional label, i.e. the label of its first pixel in raster
    # order: numbering the roots in increasing order numbers blobs as scipy does
    final = np.zeros(n + 1, np.int32)
    count = 0
    for i in range(1, n + 1):
        r = _find(parent, i)
        if r == i:
            count += 1
            final[i] = count
        else:
            final[i] = final[r]
    sizes = np.zeros(count + 1, np.int64)
    box = np.empty((count + 1, 4), np.int64)  # row0, row1 (exclusive), col0, col1
    box[:, 0] = ny
    box[:, 1] = 0
    box[:, 2] = nx
    box[:, 3] = 0
    edge = np.zeros(count + 1, np.bool_)
    for y in range(ny):
        lab = labels[y]
        for x in range(nx):
            p = lab[x]
            if p == 0:
                continue
            k = final[p]
            lab[x] = k
            sizes[k] += 1
            box[k, 0] = min(box[k, 0], y)
            box[k, 1] = max(box[k, 1], y + 1)
            box[k, 2] = min(box[k, 2], x)
            box[k, 3] = max(box[k, 3], x + 1)
            if y == 0 or x == 0 or y == ny - 1 or x == nx - 1:
                edge[k] = True
    return labels, count, sizes, box, edge


@dataclass(frozen=True)
class Blobs:
    """8-connected components of a 2-D bool mask.

    ``labels`` int32 (0 = background, blobs 1 … ``n`` in raster order of their first pixel, as
    ``scipy.ndimage.label``); index ``k`` of ``sizes`` (pixels), ``boxes`` (``row0, row1, col0, col1``,
    end exclusive: ``labels[row0:row1, col0:col1]`` holds the whole blob) and ``edge`` (the blob touches
    the grid border) describes blob ``k`` (index 0 is the background and unused).
    """

    labels: np.ndarray
    n: int
    sizes: np.ndarray
    boxes: np.ndarray
    edge: np.ndarray

    def slices(self, k: int) -> tuple[slice, slice]:
        """Bounding box of blob ``k`` as ``(rows, cols)`` slices (like ``ndimage.find_objects``)."""
        r0, r1, c0, c1 = self.boxes[k]
        return slice(int(r0), int(r1)), slice(int(c0), int(c1))


def label_blobs(mask: np.ndarray) -> Blobs:
    """Label the 8-connected blobs of ``mask`` (2-D, bool or 0/1) with their sizes, boxes and border contact."""
    m = np.ascontiguousarray(mask, dtype=np.bool_)
    if m.ndim != 2:
        raise ValueError(f"label_blobs needs a 2-D mask, got shape {m.shape}")
    labels, n, sizes, boxes, edge = _label8(m)
    return Blobs(labels, int(n), sizes, boxes, edge)
