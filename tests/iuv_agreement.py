"""Agreement of two IUV results measured where the people are, not over the whole image.

A whole-image "equal on >= 99.5 % of the pixels" check is mostly background: on a photo where
the people cover 10 % of the pixels it passes with half of every person's labels wrong. These
helpers compare the people's pixels (label > 0 in either result) and, where both give the same
part, the U and V codes."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class IUVAgreement:
    people_px: int          # pixels with a body part in either result
    labels_equal: float     # share of them with the same part label in both
    uv_max_diff: int        # largest |U| or |V| code difference where both give the same part
    background_equal: bool  # outside the people, both are all zero

    def __str__(self) -> str:
        return (f"{self.labels_equal:.4f} of {self.people_px} people pixels with equal labels, "
                f"U/V within {self.uv_max_diff} where they agree, "
                f"background {'equal' if self.background_equal else 'DIFFERS'}")


def iuv_agreement(a: np.ndarray, b: np.ndarray) -> IUVAgreement:
    """``a``, ``b``: ``[3, ...]`` uint8 (I, U, V codes), the same shape."""
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape and a.shape[0] == 3, (a.shape, b.shape)
    people = (a[0] > 0) | (b[0] > 0)
    same = people & (a[0] == b[0])
    n = int(people.sum())
    uv = np.abs(a[1:].astype(np.int64) - b[1:].astype(np.int64))[:, same]
    return IUVAgreement(n, float(same.sum()) / max(n, 1), int(uv.max(initial=0)),
                        bool((a[:, ~people] == 0).all() and (b[:, ~people] == 0).all()))


def assert_iuv_agree(a: np.ndarray, b: np.ndarray, min_equal: float = 0.995, uv_tol: int = 1,
                     what: str = "") -> IUVAgreement:
    """Labels equal on ``>= min_equal`` of the people's pixels, U/V within ``uv_tol`` codes
    where the labels agree, zero elsewhere in both; an empty result is not agreement unless
    both are empty."""
    r = iuv_agreement(a, b)
    assert r.people_px > 0 or not (np.asarray(a).any() or np.asarray(b).any()), f"{what}: {r}"
    assert r.labels_equal >= min_equal or r.people_px == 0, f"{what}: {r}"
    assert r.uv_max_diff <= uv_tol, f"{what}: {r}"
    assert r.background_equal, f"{what}: {r}"
    return r
