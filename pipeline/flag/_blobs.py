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
import shapely
from affine import Affine
from numba import njit
from scipy import ndimage
from shapely.geometry import MultiPolygon, Polygon
from shapely.geometry.base import BaseGeometry

__all__ = ["Blobs", "label_blobs", "trace"]

_CROSS = ndimage.generate_binary_structure(2, 1)


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


# ------------------------------------------------------------------------------------------- tracing
# Directions in array coordinates (row down): E, S, W, N. A boundary edge runs along pixel sides with its
# blob pixel on the left; at a vertex where two blob pixels touch only diagonally the ring turns left,
# hugging its own pixel, so those pixels stay apart (4-connected polygons, as GDAL's connectivity=4).
_DR = np.array([0, 1, 0, -1], np.int64)
_DC = np.array([1, 0, -1, 0], np.int64)


@njit(cache=True, nogil=True)
def _rings(blob):
    """Pixel-edge rings of a bool array: (vertex rows, vertex cols, ring starts, ring kinds, left pixels).

    Vertices are pixel corners ``(row, col)``; collinear vertices are dropped; each ring is closed (last
    vertex = first). Kind 0 = exterior (negative shoelace area in (col, row)), 1 = hole. The left pixel
    (flat index) of a ring's first edge is a blob pixel of the polygon the ring bounds.
    """
    h, w = blob.shape
    # out[r, c, d]: a boundary edge leaves vertex (r, c) in direction d
    out = np.zeros((h + 1, w + 1, 4), np.bool_)
    n_edges = 0
    for r in range(h):
        for c in range(w):
            if not blob[r, c]:
                continue
            if r == 0 or not blob[r - 1, c]:
                out[r, c + 1, 2] = True  # top side, westwards
                n_edges += 1
            if r == h - 1 or not blob[r + 1, c]:
                out[r + 1, c, 0] = True  # bottom side, eastwards
                n_edges += 1
            if c == 0 or not blob[r, c - 1]:
                out[r, c, 1] = True  # left side, southwards
                n_edges += 1
            if c == w - 1 or not blob[r, c + 1]:
                out[r + 1, c + 1, 3] = True  # right side, northwards
                n_edges += 1
    # at most one vertex per edge, plus one closing vertex per ring (a ring has at least 4 edges)
    cap = n_edges + n_edges // 4 + 2
    vr = np.empty(cap, np.int64)
    vc = np.empty(cap, np.int64)
    seen = np.zeros((h + 1, w + 1, 4), np.bool_)
    starts = []
    kinds = []
    lefts = []
    nv = 0
    # the first vertex (raster order) with an edge not yet traced is the top-left corner of its ring
    for r0 in range(h + 1):
        for c0 in range(w + 1):
            for d0 in range(4):
                if not out[r0, c0, d0] or seen[r0, c0, d0]:
                    continue
                start = nv
                dr = 1 if d0 == 0 or d0 == 3 else 0
                dc = 1 if d0 == 2 or d0 == 3 else 0
                left = (r0 - dr) * w + c0 - dc  # the pixel on the left of the first edge
                vr[nv] = r0
                vc[nv] = c0
                nv += 1
                seen[r0, c0, d0] = True
                r, c, d = r0, c0, d0
                while True:
                    r += _DR[d]
                    c += _DC[d]
                    nd = d
                    for turn in (3, 0, 1):  # left, straight, right: the first edge leaving this vertex
                        k = (d + turn) % 4
                        if out[r, c, k]:
                            nd = k
                            break
                    if r == r0 and c == c0 and nd == d0:
                        break
                    seen[r, c, nd] = True
                    if nd != d:  # a corner: keep the vertex (collinear ones are dropped)
                        vr[nv] = r
                        vc[nv] = c
                        nv += 1
                    d = nd
                vr[nv] = r0  # closed
                vc[nv] = c0
                nv += 1
                area = 0
                for i in range(start, nv - 1):
                    area += vc[i] * vr[i + 1] - vc[i + 1] * vr[i]
                starts.append(start)
                kinds.append(0 if area < 0 else 1)
                lefts.append(left)
    starts.append(nv)
    return vr[:nv], vc[:nv], np.array(starts, np.int64), np.array(kinds, np.int64), np.array(lefts, np.int64)


def trace(blob: np.ndarray, transform: Affine) -> BaseGeometry:
    """One blob (2-D bool, e.g. its bounding box) traced along pixel edges into a valid (Multi)Polygon.

    ``transform`` maps (col, row) pixel corners to map coordinates. Pixels touching only at a corner are
    separate polygons (4-connectivity, as ``rasterio.features.shapes(connectivity=4)``); the area is
    the pixel count × pixel area; collinear vertices are dropped.
    """
    b = np.ascontiguousarray(blob, dtype=np.bool_)
    vr, vc, starts, kinds, lefts = _rings(b)
    if kinds.size == 0:
        return Polygon()
    t = transform
    xy = np.column_stack([t.a * vc + t.b * vr + t.c, t.d * vc + t.e * vr + t.f])
    rings = [xy[starts[i]:starts[i + 1]] for i in range(kinds.size)]
    shells = np.flatnonzero(kinds == 0)
    holes = np.flatnonzero(kinds == 1)
    if shells.size == 1:
        geom: BaseGeometry = Polygon(rings[shells[0]], [rings[i] for i in holes])
    else:
        if holes.size:  # each ring bounds the 4-connected part holding the pixel on its left
            parts, _ = ndimage.label(b, structure=_CROSS)
            part = parts.ravel()[lefts]
        else:
            part = np.zeros(kinds.size, np.int64)
        geom = MultiPolygon([Polygon(rings[s], [rings[i] for i in holes if part[i] == part[s]]) for s in shells])
    return geom if geom.is_valid else shapely.make_valid(geom)
