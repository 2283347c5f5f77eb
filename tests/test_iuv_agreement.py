"""The people-pixel IUV comparison the export, paste and C++ tests use catches what a
whole-image share of equal pixels misses."""
import numpy as np
import pytest

from iuv_agreement import assert_iuv_agree, iuv_agreement


def _person(h=100, w=100):
    iuv = np.zeros((3, h, w), np.uint8)
    iuv[0, 10:30, 10:30] = 2                     # 400 of 10,000 pixels
    iuv[1, 10:30, 10:30] = 100
    iuv[2, 10:30, 10:30] = 50
    return iuv


def test_half_the_person_wrong_fails_though_99_percent_of_the_image_is_equal():
    a, b = _person(), _person()
    b[0, 10:20, 10:30] = 3                       # 200 person pixels relabelled
    assert (a == b).all(axis=0).mean() >= 0.98   # what the old check measured
    r = iuv_agreement(a, b)
    assert r.people_px == 400 and r.labels_equal == pytest.approx(0.5)
    with pytest.raises(AssertionError, match="0.5000 of 400 people pixels"):
        assert_iuv_agree(a, b)


def test_uv_codes_and_background_are_checked():
    a, b = _person(), _person()
    b[1, 15, 15] += 1
    assert assert_iuv_agree(a, b).uv_max_diff == 1
    b[2, 16, 16] += 2
    with pytest.raises(AssertionError, match="U/V within 2"):
        assert_iuv_agree(a, b)
    c = _person()
    c[1, 50, 50] = 7                             # a U code where neither has a person
    with pytest.raises(AssertionError, match="background DIFFERS"):
        assert_iuv_agree(_person(), c)


def test_empty_results_agree_only_with_empty_ones():
    empty = np.zeros((3, 8, 8), np.uint8)
    assert assert_iuv_agree(empty, empty).people_px == 0
    one = empty.copy()
    one[0, 3, 3] = 1                             # one person pixel against none
    with pytest.raises(AssertionError, match="0.0000 of 1 people pixels"):
        assert_iuv_agree(empty, one)
