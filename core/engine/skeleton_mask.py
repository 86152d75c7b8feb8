"""Which lattice points are far enough from a hand's skeleton to skip evaluating.

The occupancy of a hand vanishes a few centimetres away from its bones, so points beyond
a margin from every bone (and from the palm's outline) are taken as outside. The skeleton
is given in the hand's canonical box coordinates, where the grid lives."""

from __future__ import annotations

import functools

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
    ((21, 3) mano order, box coordinates).

    Exact, but cheap: the distance to the skeleton is 1-Lipschitz, so the distance ``d_n``
    at the nearest node of a coarse lookup grid (spacing ``margin / 4``, filled on first use)
    decides every point farther than the node-to-point bound ``r`` from the margin
    (``d_n + r <= margin``: near; ``d_n - r > margin``: far); only points in that thin shell
    get the exact segment distance. Points on the finest MISE levels lie near the surface,
    well inside the margin, and are settled by the lookup alone."""
    seg = np.asarray(SEGMENTS_MANO)
    a = np.asarray(joints_box, dtype=np.float64)[seg[:, 0]]
    b = np.asarray(joints_box, dtype=np.float64)[seg[:, 1]]
    lo = np.minimum(a, b).min(0) - margin_box
    hi = np.maximum(a, b).max(0) + margin_box
    step = margin_box / 4.0 if margin_box > 0 else 0.0
    radius = 0.5 * np.sqrt(3.0) * step  # farthest a point is from its nearest node
    @functools.cache
    def node_distances() -> np.ndarray:  # built on first use only
        counts = np.ceil((hi - lo) / step).astype(int) + 1
        axes = [lo[i] + step * np.arange(counts[i]) for i in range(3)]
        nodes = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
        return distance_to_segments(nodes, a, b).reshape(tuple(counts))

    def predicate(points_box: np.ndarray) -> np.ndarray:
        p = np.asarray(points_box, dtype=np.float64)
        far = np.any((p < lo) | (p > hi), axis=1)  # cheap bounding-box rejection first
        inside = np.flatnonzero(~far)
        if len(inside) == 0:
            return far
        if step > 0:
            d = node_distances()
            idx = np.rint((p[inside] - lo) / step).astype(np.int64)
            idx = np.minimum(np.maximum(idx, 0), np.array(d.shape) - 1)
            d_node = d[idx[:, 0], idx[:, 1], idx[:, 2]]
            certain_far = d_node - radius > margin_box
            unsure = ~certain_far & (d_node + radius > margin_box)
            far[inside[certain_far]] = True
            inside = inside[unsure]
        if len(inside):
            far[inside] = distance_to_segments(p[inside], a, b) > margin_box
        return far

    return predicate
