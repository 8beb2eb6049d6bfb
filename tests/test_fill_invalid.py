"""engine.raster.fill_invalid is the one no-data fill (indexer, query images, training): True
in the mask means valid, per pixel (H,W) or per band (C,H,W); the dtype is kept."""

import numpy as np

from engine.raster import fill_invalid


def test_pixel_mask_fills_every_band_with_its_median_and_copies():
    arr = np.array([[[1, 2], [3, 100]], [[10, 20], [30, 40]]], np.uint16)
    valid = np.array([[True, True], [True, False]])
    out = fill_invalid(arr, valid)
    assert out.dtype == np.uint16
    assert out[0, 1, 1] == 2 and out[1, 1, 1] == 20      # medians of (1,2,3) and (10,20,30)
    assert arr[0, 1, 1] == 100                            # the input is untouched
    same = fill_invalid(arr, np.ones((2, 2), bool))
    assert (same == arr).all() and same is not arr


def test_band_mask_rounds_integers_and_empty_bands_become_zero():
    arr = np.array([[[1, 2], [5, 9]], [[7, 7], [7, 7]]], np.int16)
    valid = np.array([[[True, True], [False, False]], [[False, False], [False, False]]])
    out = fill_invalid(arr, valid)
    assert out[0, 1, 0] == 2 and out[0, 1, 1] == 2        # median 1.5 rounds to 2
    assert (out[1] == 0).all()


def test_float_nan_filled():
    arr = np.array([[[np.nan, 1.0], [2.0, 3.0]]], np.float32)
    out = fill_invalid(arr, np.isfinite(arr))
    assert out[0, 0, 0] == 2.0 and np.isfinite(out).all()
