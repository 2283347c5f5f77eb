"""Geodesic distances on the body surface: the provider interface the evaluator calls and the
official per-part normalisation. Implementations: :class:`amanet.engine.evaluate.SMPLGeodesics`
(the official SMPL lookup) and :class:`amanet.data.synthetic.SyntheticGeodesics`.
"""
from __future__ import annotations

import numpy as np

from .densepose_coco import NUM_PARTS

#: Per-point normalisation ``k`` (metres): the official "mean geodesic distances" of 8 part
#: groups (torso, hands, feet, upper legs, lower legs, upper arms, lower arms, head).
MEAN_GEODESIC_DISTANCES = np.array([0, 0.351, 0.107, 0.126, 0.237, 0.173, 0.142, 0.128, 0.150])
#: fine part 0..24 -> group 0..8 used for ``k``
COARSE_GROUP = np.array([0, 1, 1, 2, 2, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 6, 6, 6, 6, 7, 7, 7, 7,
                         8, 8], dtype=np.int64)
PART_K = MEAN_GEODESIC_DISTANCES[COARSE_GROUP]          # [25], indexed by fine part


class GeodesicProvider:
    """Geodesic distances on a body surface between points given as (part, U, V).

    ``distance`` is elementwise over equally long arrays and returns float64 distances (in
    metres for the official normalisation): ``inf`` where the predicted part is 0 (background)
    or invalid, ``nan`` where the GT point itself cannot be placed (it is then left out of
    the person's mean, as the official code does).
    """

    def distance(self, i_gt, u_gt, v_gt, i_pred, u_pred, v_pred) -> np.ndarray:
        raise NotImplementedError

    def normalisation(self, i_gt) -> np.ndarray:
        """``k`` of each GT point (default: the official per-part table)."""
        return PART_K[np.clip(np.asarray(i_gt, dtype=np.int64), 0, NUM_PARTS)]
