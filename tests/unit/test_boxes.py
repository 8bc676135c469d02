"""Exact unit tests of the box conversions."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cocoaug.boxes import (
    clip_xywh,
    xywh_pixels_to_xyxy_norm,
    xywh_to_xyxy,
    xyxy_norm_to_xywh_pixels,
    xyxy_to_xywh,
)


def test_known_values():
    np.testing.assert_array_equal(xywh_to_xyxy([10, 20, 30, 40]), [[10, 20, 40, 60]])
    np.testing.assert_array_equal(xyxy_to_xywh([[10, 20, 40, 60]]), [[10, 20, 30, 40]])
    np.testing.assert_allclose(xywh_pixels_to_xyxy_norm([[50, 25, 50, 25]], 200, 100), [[0.25, 0.25, 0.5, 0.5]])


def test_clipping_to_the_image():
    np.testing.assert_array_equal(clip_xywh([[-5, 90, 20, 30]], 100, 100), [[0, 90, 15, 10]])
    np.testing.assert_array_equal(clip_xywh([[120, 0, 10, 10]], 100, 100), [[100, 0, 0, 10]])
    np.testing.assert_array_equal(xywh_pixels_to_xyxy_norm([[-10, -10, 300, 50]], 200, 100), [[0, 0, 1, 0.4]])


def test_per_box_sizes_broadcast():
    norm = xywh_pixels_to_xyxy_norm([[0, 0, 10, 10], [0, 0, 10, 10]], [10, 20], [10, 40])
    np.testing.assert_allclose(norm, [[0, 0, 1, 1], [0, 0, 0.5, 0.25]])


sizes = st.integers(min_value=1, max_value=10_000)


@given(
    width=sizes,
    height=sizes,
    fractions=st.lists(st.floats(0, 1), min_size=4, max_size=4),
)
def test_round_trip_inside_the_image(width, height, fractions):
    x0, x1 = sorted(fractions[:2])
    y0, y1 = sorted(fractions[2:])
    bbox = np.array([[x0 * width, y0 * height, (x1 - x0) * width, (y1 - y0) * height]])
    norm = xywh_pixels_to_xyxy_norm(bbox, width, height)
    assert ((norm >= 0) & (norm <= 1)).all()
    np.testing.assert_allclose(xyxy_norm_to_xywh_pixels(norm, width, height), bbox, rtol=1e-12, atol=1e-9)
