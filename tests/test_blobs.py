"""The compiled blob labeller against scipy.ndimage (labels, sizes, boxes) and a hand-made mask."""

import numpy as np
import pytest
from scipy import ndimage

from pipeline.flag._blobs import label_blobs

EIGHT = np.ones((3, 3), bool)


def test_hand_made_mask():
    m = np.zeros((6, 7), bool)
    m[0, 0] = True  # blob 1: a corner pixel (touches the border)
    m[2, 2:5] = True  # blob 2: a U joined at its bottom, 7 px
    m[3, 2] = m[3, 4] = True
    m[1, 2] = m[1, 4] = True
    m[4, 5] = True  # joins blob 2 diagonally (8-connectivity)
    m[5, 6] = True  # and so does this one, on the border
    b = label_blobs(m)
    assert b.n == 2
    assert b.labels[0, 0] == 1 and b.labels[1, 2] == 2 and b.labels[5, 6] == 2
    assert b.sizes.tolist() == [0, 1, 9]
    assert b.boxes[2].tolist() == [1, 6, 2, 7]
    assert b.edge.tolist() == [False, True, True]
    assert b.slices(2) == (slice(1, 6), slice(2, 7))


@pytest.mark.parametrize("density", [0.05, 0.3, 0.55, 0.8, 1.0])
def test_matches_scipy(density):
    rng = np.random.default_rng(int(density * 100))
    m = rng.random((211, 173)) < density
    labels, n = ndimage.label(m, structure=EIGHT)
    b = label_blobs(m)
    assert b.n == n
    assert np.array_equal(b.labels, labels)  # same numbering: raster order of each blob's first pixel
    assert np.array_equal(b.sizes[1:], np.bincount(labels.ravel(), minlength=n + 1)[1:])
    assert [b.slices(k) for k in range(1, n + 1)] == ndimage.find_objects(labels)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    assert set(np.flatnonzero(b.edge)) == set(border[border > 0])


def test_empty_and_bad_shape():
    b = label_blobs(np.zeros((4, 5), bool))
    assert b.n == 0 and b.labels.shape == (4, 5) and not b.labels.any()
    with pytest.raises(ValueError, match="2-D"):
        label_blobs(np.zeros((2, 3, 4), bool))


# ---------------------------------------------------------------------------------------------- tracing
def _gdal_trace(blob: np.ndarray, transform):
    """The reference: GDAL's polygonize (4-connectivity) of the blob's pixels, unioned."""
    import shapely
    from rasterio.features import shapes
    from shapely.geometry import shape

    geoms = [shape(g) for g, v in shapes(blob.astype(np.uint8), connectivity=4, transform=transform) if v == 1]
    return shapely.union_all(geoms)


def test_trace_square_with_hole_and_diagonal_neighbour():
    from affine import Affine

    from pipeline.flag._blobs import trace

    m = np.zeros((6, 7), bool)
    m[0:5, 0:5] = True
    m[2, 2] = False  # a one-pixel courtyard
    m[5, 5] = True  # touches the square only at a corner
    t = Affine(10.0, 0.0, 500_000.0, 0.0, -10.0, 4_000_000.0)
    g = trace(m, t)
    assert g.is_valid and g.geom_type == "MultiPolygon" and len(g.geoms) == 2
    assert g.area == pytest.approx((25 - 1 + 1) * 100.0)
    square = max(g.geoms, key=lambda p: p.area)
    assert len(square.interiors) == 1 and square.interiors[0].coords[0][0] in (500_020.0, 500_030.0)
    assert square.bounds == (500_000.0, 3_999_950.0, 500_050.0, 4_000_000.0)
    assert len(square.exterior.coords) == 5  # collinear pixel corners dropped: 4 corners + closing
    assert g.equals(_gdal_trace(m, t))


@pytest.mark.parametrize("seed", range(6))
def test_trace_matches_gdal_polygonize(seed):
    from affine import Affine

    from pipeline.flag._blobs import trace

    rng = np.random.default_rng(seed)
    m = rng.random((23, 31)) < 0.35 + 0.1 * seed  # lace of holes, corners and diagonal contacts
    b = label_blobs(m)
    t = Affine(10.0, 0.0, 300_000.0, 0.0, -10.0, 5_000_000.0)
    for k in range(1, b.n + 1):
        rows, cols = b.slices(k)
        blob = b.labels[rows, cols] == k
        tk = t * Affine.translation(cols.start, rows.start)
        g = trace(blob, tk)
        assert g.is_valid
        assert g.area == pytest.approx(b.sizes[k] * 100.0)
        assert g.equals(_gdal_trace(blob, tk))


def test_trace_of_nothing_is_empty():
    from affine import Affine

    from pipeline.flag._blobs import trace

    assert trace(np.zeros((3, 2), bool), Affine.identity()).is_empty
