"""Agreement between two reconstructions of the same hands: volumetric IoU and Chamfer."""

from __future__ import annotations

import numpy as np
from scipy.spatial import cKDTree

from core.engine.penetration import HandField
from core.types import HandMesh


def chamfer_m(a: HandMesh, b: HandMesh) -> float:
    """Symmetric Chamfer-L1 (mean of both directions' mean nearest-vertex distance), metres;
    inf when exactly one mesh is empty."""
    if a.is_empty and b.is_empty:
        return 0.0
    if a.is_empty or b.is_empty:
        return float("inf")
    d_ab = cKDTree(b.vertices).query(a.vertices)[0]
    d_ba = cKDTree(a.vertices).query(b.vertices)[0]
    return float(0.5 * (d_ab.mean() + d_ba.mean()))


def volume_iou(
    a: HandField, b: HandField, bounds: np.ndarray, samples: int = 200_000, seed: int = 0
) -> float:
    """IoU of the regions inside ``a`` and ``b`` from uniform samples in ``bounds`` ((2, 3)
    camera metres, should enclose both)."""
    rng = np.random.default_rng(seed)
    points = rng.uniform(bounds[0], bounds[1], size=(samples, 3))
    ia, ib = a.contains(points), b.contains(points)
    union = np.count_nonzero(ia | ib)
    return 1.0 if union == 0 else float(np.count_nonzero(ia & ib) / union)


def mesh_bounds(*meshes: HandMesh, margin_m: float = 0.005) -> np.ndarray:
    v = np.concatenate([m.vertices for m in meshes if not m.is_empty])
    return np.stack([v.min(0) - margin_m, v.max(0) + margin_m])
