"""Interpenetration of two hands from their extracted occupancy grids (no network calls).

Each hand's occupancy is known on its MISE lattice in its own canonical box; a camera-frame
point is inside a hand when the trilinearly interpolated value there reaches the hand's
threshold (the same test marching cubes used to draw its surface). From that:

* per-vertex flags: the vertices of one mesh that lie inside the other hand;
* the penetration region: points inside both hands, sampled on a regular camera-frame
  grid over the overlap of the two meshes' bounding boxes; its surface is the zero level
  of ``min(occ_a - thr_a, occ_b - thr_b)`` (marching cubes) and its volume the enclosed
  volume of that closed surface.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mcubes
import numpy as np
from scipy.ndimage import binary_dilation

from core.engine.mise import DenseGrid

M3_TO_CM3 = 1e6


@dataclass
class HandField:
    """A hand's occupancy as a function of camera-frame metres."""

    grid: DenseGrid
    cam_to_box: Callable[[np.ndarray], np.ndarray]  # (M, 3) camera metres -> (M, 3) box coords

    @property
    def threshold(self) -> float:
        return self.grid.threshold

    def values(self, points_cam_m: np.ndarray) -> np.ndarray:
        pts = np.asarray(points_cam_m, dtype=np.float64).reshape(-1, 3)
        if len(pts) == 0:
            return np.zeros(0, np.float32)
        return self.grid.sample(self.cam_to_box(pts))

    def contains(self, points_cam_m: np.ndarray) -> np.ndarray:
        return self.values(points_cam_m) >= self.threshold


@dataclass
class PenetrationRegion:
    volume_cm3: float
    vertices_cam_m: np.ndarray  # (V, 3) float32
    faces: np.ndarray  # (F, 3) int32
    spacing_m: float


def empty_region(spacing_m: float = 0.0) -> PenetrationRegion:
    return PenetrationRegion(0.0, np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32), spacing_m)


def mesh_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Signed volume enclosed by a closed, outward-oriented triangle mesh."""
    if len(faces) == 0:
        return 0.0
    v = np.asarray(vertices, dtype=np.float64)[np.asarray(faces)]
    return float(np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() / 6.0)


def penetration_region(
    field_a: HandField,
    field_b: HandField,
    bounds_a: np.ndarray,
    bounds_b: np.ndarray,
    spacing_m: float = 1e-3,
    max_points: int = 4_000_000,
) -> PenetrationRegion:
    """The region inside both hands. ``bounds_*``: (2, 3) camera-frame min/max of each
    hand's mesh; the sampling grid covers their intersection (spacing grows when the
    overlap would need more than ``max_points`` samples)."""
    lo = np.maximum(bounds_a[0], bounds_b[0])
    hi = np.minimum(bounds_a[1], bounds_b[1])
    if np.any(hi <= lo):
        return empty_region(spacing_m)
    extent = hi - lo
    spacing = max(spacing_m, float(np.prod(extent) / max_points) ** (1 / 3))
    counts = np.ceil(extent / spacing).astype(int) + 1
    axes = [lo[i] + spacing * np.arange(counts[i]) for i in range(3)]
    points = np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3)
    # min(a, b) needs b only at the corners of cells where it can change sign: every such
    # cell has a corner inside a, so b is sampled in the one-sample dilation of "inside a"
    # (elsewhere min(a, b) is replaced by a, which is negative there: same surface, same volume).
    a_minus = (field_a.values(points) - field_a.threshold).reshape(tuple(counts))
    need_b = binary_dilation(a_minus >= 0, structure=np.ones((3, 3, 3), dtype=bool))
    both = a_minus.copy()
    if need_b.any():
        b_minus = field_b.values(points[need_b.reshape(-1)]) - field_b.threshold
        both[need_b] = np.minimum(a_minus[need_b], b_minus)
    if not np.any(both >= 0):
        return empty_region(spacing)
    padded = np.pad(both.astype(np.float64), 1, mode="constant", constant_values=-1.0)
    vertices, faces = mcubes.marching_cubes(padded, 0.0)
    if len(faces) == 0:
        return empty_region(spacing)
    vertices = (lo + (vertices - 1.0) * spacing).astype(np.float32)
    faces = faces.astype(np.int32)
    return PenetrationRegion(mesh_volume(vertices, faces) * M3_TO_CM3, vertices, faces, spacing)
