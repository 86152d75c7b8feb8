"""Which lattice points are far enough from a hand's skeleton to skip evaluating.

The occupancy of a hand vanishes a few centimetres away from its bones, so points beyond
a margin from every bone (and from the palm's outline) are taken as outside. The skeleton
is given in the hand's canonical box coordinates, where the grid lives."""

from __future__ import annotations

import numpy as np

from core.hand.joints import bones

# Palm outline: the finger roots joined to their neighbours (mano order: 1 thumb CMC,
# 5 index MCP, 9 middle, 13 ring, 17 pinky); with the wrist->root bones it encloses the palm.
_PALM_SEGMENTS = ((1, 5), (5, 9), (9, 13), (13, 17), (0, 17), (0, 5), (0, 9), (0, 13))
SEGMENTS_MANO = tuple(bones("mano")) + _PALM_SEGMENTS


def distance_to_segments(points: np.ndarray, a: np.ndarray, b: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """(M,) smallest distance from each of (M, 3) points to the segments a[k]-b[k] (S, 3)."""
    ab = b - a
    denom = np.maximum(np.einsum("sd,sd->s", ab, ab), 1e-18)
    out = np.empty(len(points), dtype=np.float64)
    for s in range(0, len(points), chunk):
        p = points[s : s + chunk, None, :] - a[None]  # (m, S, 3)
        t = np.clip(np.einsum("msd,sd->ms", p, ab) / denom, 0.0, 1.0)
        d = p - t[..., None] * ab[None]
        out[s : s + chunk] = np.sqrt(np.einsum("msd,msd->ms", d, d).min(axis=1))
    return out


def far_from_skeleton(joints_box: np.ndarray, margin_box: float):
    """A predicate for :class:`~core.engine.mise.MultiResolutionGrid`: True for (M, 3) box
    points farther than ``margin_box`` from every segment of the skeleton ``joints_box``
    ((21, 3) mano order, box coordinates)."""
    seg = np.asarray(SEGMENTS_MANO)
    a = np.asarray(joints_box, dtype=np.float64)[seg[:, 0]]
    b = np.asarray(joints_box, dtype=np.float64)[seg[:, 1]]
    lo = np.minimum(a, b).min(0) - margin_box
    hi = np.maximum(a, b).max(0) + margin_box

    def predicate(points_box: np.ndarray) -> np.ndarray:
        p = np.asarray(points_box, dtype=np.float64)
        far = np.any((p < lo) | (p > hi), axis=1)  # cheap bounding-box rejection first
        near_box = ~far
        if near_box.any():
            far[near_box] = distance_to_segments(p[near_box], a, b) > margin_box
        return far

    return predicate
