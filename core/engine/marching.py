"""Marching cubes on a :class:`~core.engine.mise.DenseGrid` (pymcubes)."""

from __future__ import annotations

import mcubes
import numpy as np

from core.engine.mise import DenseGrid


def extract_mesh_box(grid: DenseGrid, threshold: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Iso-surface of ``grid`` at ``threshold`` (default: the grid's). Returns vertices in
    box coordinates (V, 3) float32 and faces (F, 3) int32, outward-facing (positive
    volume) when values are larger inside."""
    thr = grid.threshold if threshold is None else float(threshold)
    vertices, faces = mcubes.marching_cubes(np.ascontiguousarray(grid.values, dtype=np.float64), thr)
    if len(faces) == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int32)
    lattice = vertices - 1.0 + grid.origin  # undo the padding layer and the crop
    return grid.lattice_to_box(lattice).astype(np.float32), faces.astype(np.int32)


def flip_faces(faces: np.ndarray) -> np.ndarray:
    """Reverse the winding (needed after a mirroring transform)."""
    return np.ascontiguousarray(faces[:, ::-1])
