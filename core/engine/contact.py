"""Contact resolution of two hands' occupancy lattices (ours; an engine setting, off by default).

Networks I and R predict each hand on its own, so their surfaces may interpenetrate. With
``ReconstructionSettings.resolve_contact`` each point inside both hands is given to the hand
it is deeper in, the rule the synthetic ground truth is built with
(:func:`core.synth.scenes.resolved_sdfs`: with signed distances ``d``, negative inside, a
point belongs to a hand when ``max(d_own, (d_own - d_other) / 2) < 0``).

Occupancies saturate (deep inside both hands both read ~1), so they cannot say which hand a
point is deeper in. The depth comes from each hand's inside set on its own lattice instead:
a Euclidean distance transform gives a signed distance in metres (to within half a lattice
step). Inside the other hand the margin ``m = value - threshold`` becomes

    m_own' = min(m_own, k (d_other - d_own) / 2),     k = 0.5 per lattice step of ``own``,

positive exactly where the point is deeper in this hand, so the two surfaces meet where the
depths are equal instead of crossing. Outside the other hand every value stays as the
network gave it, bit for bit. Pure numpy/scipy on :class:`~core.engine.mise.DenseGrid`
blocks: no network runs.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

import numpy as np
from scipy.ndimage import binary_dilation, distance_transform_edt

from core.engine.mise import DenseGrid

# (M, 3) float -> (M, 3) float: a hand's box coordinates <-> camera metres
PointMap = Callable[[np.ndarray], np.ndarray]
FAR_OUTSIDE_M = 1e3  # signed distance read off a block
MARGIN_PER_STEP = 0.5  # k: occupancy margin per lattice step in the resolved zone
TIE_MARGIN = 1e-6  # a point exactly as deep in both hands goes to neither (no overlap)


def metres_per_step(grid: DenseGrid, box_to_cam: PointMap) -> float:
    """Camera metres of one lattice step (the box -> camera map is a similarity)."""
    a = np.zeros((1, 3))
    b = np.array([[grid.box_size / grid.resolution, 0.0, 0.0]])
    return float(np.linalg.norm(box_to_cam(b) - box_to_cam(a)))


def signed_distance_m(grid: DenseGrid, step_m: float) -> np.ndarray:
    """Signed distance (metres, negative inside) at every block point, from the inside set
    ``values >= threshold`` by Euclidean distance transforms (the surface is taken half a step
    from the last inside point)."""
    inside = grid.values >= grid.threshold
    depth = distance_transform_edt(inside) - 0.5
    height = distance_transform_edt(~inside) - 0.5
    return (np.where(inside, -depth, height) * step_m).astype(np.float32)


def resolved_margin(own: np.ndarray, depth_own_m: np.ndarray, depth_other_m: np.ndarray, step_m: float):
    """Margins of ``own`` (positive inside) with the points inside the other hand
    (``depth_other_m < 0``) kept only where they are deeper in ``own``."""
    by_depth = MARGIN_PER_STEP * (depth_other_m - depth_own_m) / (2.0 * step_m) - TIE_MARGIN
    return np.where(depth_other_m < 0, np.minimum(own, by_depth), own)


def resolve_contact(
    grids: dict[str, DenseGrid],
    box_to_cam: dict[str, PointMap],
    cam_to_box: dict[str, PointMap],
) -> dict[str, DenseGrid]:
    """Both hands' lattices with their contact resolved (new grids; the inputs are kept).

    Only the points inside a hand or one lattice step from its inside are compared with the
    other hand (marching cubes reads nothing else of the new surface)."""
    if len(grids) != 2:
        return dict(grids)
    sides = list(grids)
    steps = {s: metres_per_step(grids[s], box_to_cam[s]) for s in sides}
    sdf = {s: signed_distance_m(grids[s], steps[s]) for s in sides}
    out = {}
    for side in sides:
        other = sides[1] if side == sides[0] else sides[0]
        grid, grid_o = grids[side], grids[other]
        near = binary_dilation(grid.values >= grid.threshold, iterations=1)
        if not near.any():
            out[side] = grid
            continue
        cam = box_to_cam[side](grid.block_to_box(np.argwhere(near)))
        depth_other = grid_o.sample_block_field(sdf[other], cam_to_box[other](cam), FAR_OUTSIDE_M)
        values = grid.values.copy()
        own = values[near] - grid.threshold  # np.argwhere and boolean indexing share C order
        values[near] = grid.threshold + resolved_margin(own, sdf[side][near], depth_other, steps[side])
        out[side] = replace(grid, values=values)
    return out
