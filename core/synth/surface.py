"""Marching cubes of a signed-distance bound, evaluated coarse to fine (torch + PyMCubes).

``sdf`` only needs to be 1-Lipschitz with the exact sign (as :class:`~core.synth.hand_model.HandModel`
is): a cell whose corners all satisfy ``|sdf| >= cell diagonal`` contains no surface, so only
the cells near the surface are refined; elsewhere the finer grid takes interpolated values,
which keep the correct sign. The result equals marching cubes of the exact field on the fine
grid, for a fraction of the evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import mcubes
import numpy as np
import torch
import torch.nn.functional as F

SdfFn = Callable[[torch.Tensor], torch.Tensor]  # (N, 3) float64 metres -> (N,) metres


def sample_grid_sdf(
    sdf: SdfFn, lo: np.ndarray, hi: np.ndarray, voxel_m: float, levels: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Values (nx, ny, nz) float32 of ``sdf`` on the grid ``lo + voxel_m * index`` covering
    [lo, hi] (grown to a multiple of ``2**levels`` voxels): exact where a cell may contain the
    surface, sign-correct elsewhere. Returns (values, grid origin)."""
    lo = np.asarray(lo, dtype=np.float64)
    stride = 2**levels
    cells = np.maximum(np.ceil((np.asarray(hi) - lo) / (voxel_m * stride)).astype(int), 1) * stride
    origin = lo - (cells * voxel_m - (np.asarray(hi) - lo)) / 2  # centre the padded grid
    origin_t = torch.as_tensor(origin)

    def points_at(index: torch.Tensor, step: int) -> torch.Tensor:
        return origin_t + index.to(torch.float64) * (voxel_m * step)

    shape = tuple(int(c) // stride + 1 for c in cells)
    grid = torch.stack(torch.meshgrid(*[torch.arange(n) for n in shape], indexing="ij"), -1).reshape(-1, 3)
    values = sdf(points_at(grid, stride)).to(torch.float32).reshape(shape)
    offsets = torch.stack(torch.meshgrid(*[torch.arange(3)] * 3, indexing="ij"), -1).reshape(-1, 3)
    for level in range(levels - 1, -1, -1):
        step = 2**level
        diagonal = 2 * step * voxel_m * math.sqrt(3.0)  # of the current (coarser) cells
        near = -F.max_pool3d(-values.abs()[None, None], kernel_size=2, stride=1)[0, 0]  # min |v| per cell
        active = torch.nonzero(near < diagonal)  # (A, 3) coarse cells that may hold surface
        values = F.interpolate(values[None, None], scale_factor=2, mode="trilinear", align_corners=True)[0, 0]
        if len(active) == 0:
            continue
        fine = (2 * active[:, None, :] + offsets[None]).reshape(-1, 3)
        mask = torch.zeros(values.shape, dtype=torch.bool)
        mask[fine[:, 0], fine[:, 1], fine[:, 2]] = True
        idx = torch.nonzero(mask)
        values[idx[:, 0], idx[:, 1], idx[:, 2]] = sdf(points_at(idx, step)).to(torch.float32)
    return values.numpy(), origin


def extract_surface(
    sdf: SdfFn, lo: np.ndarray, hi: np.ndarray, voxel_m: float = 0.0025, levels: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """Triangle mesh of ``{sdf = 0}`` inside [lo, hi]: vertices (V, 3) float32 metres in the
    frame of ``sdf``, faces (F, 3) int32 oriented with outward normals (counter-clockwise seen
    from outside). Leave a margin of a voxel around the shape so the mesh is closed."""
    values, origin = sample_grid_sdf(sdf, lo, hi, voxel_m, levels)
    verts, faces = mcubes.marching_cubes(-values, 0.0)  # PyMCubes: positive inside -> outward CCW
    verts = (origin + verts * voxel_m).astype(np.float32)
    return verts, faces.astype(np.int32)
