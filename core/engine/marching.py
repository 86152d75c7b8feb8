"""Marching cubes on a :class:`~core.engine.mise.DenseGrid` (pymcubes)."""

from __future__ import annotations

import mcubes
import numpy as np

from core.engine.mise import DenseGrid

# pymcubes holds the GIL for a whole call (0.3-1.6 s on a 256^3 block under load), which
# freezes a GUI thread; slabs of this many planes bound each call to a few tens of ms.
SLAB_PLANES = 24


def marching_cubes_in_slabs(
    values: np.ndarray, threshold: float, slab_planes: int = SLAB_PLANES
) -> tuple[np.ndarray, np.ndarray]:
    """``mcubes.marching_cubes`` run on overlapping slabs along axis 0, then welded.

    Neighbouring slabs share one plane of samples; the vertices on that plane are
    interpolated from the same two samples in both slabs, so they coincide up to rounding
    (~1e-15 lattice units) and welding them gives the same surface as one call."""
    values = np.ascontiguousarray(values, dtype=np.float64)
    n = values.shape[0]
    if n <= slab_planes + 1:
        return mcubes.marching_cubes(values, threshold)
    verts, faces, offset = [], [], 0
    for start in range(0, n - 1, slab_planes):
        stop = min(start + slab_planes, n - 1)
        v, f = mcubes.marching_cubes(values[start : stop + 1], threshold)
        if len(f):
            v[:, 0] += start
            verts.append(v)
            faces.append(f + offset)
            offset += len(v)
    if not faces:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64)
    merged = np.concatenate(verts)
    _, first, inverse = np.unique(np.round(merged, 9), axis=0, return_index=True, return_inverse=True)
    return merged[first], inverse.reshape(-1)[np.concatenate(faces)]


def extract_mesh_box(grid: DenseGrid, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Iso-surface of ``grid`` at ``threshold`` (default: the grid's). Returns vertices in
    box coordinates (V, 3) float32 and faces (F, 3) int32, outward-facing (positive
    volume) when values are larger inside."""
    thr = grid.threshold if threshold is None else float(threshold)
    vertices, faces = marching_cubes_in_slabs(grid.values, thr)
    if len(faces) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    return grid.block_to_box(vertices).astype(np.float32), faces.astype(np.int32)


def flip_faces(faces: np.ndarray) -> np.ndarray:
    """Reverse the winding (needed after a mirroring transform)."""
    return np.ascontiguousarray(faces[:, ::-1])
