"""Frame changes and projections in the networks' camera conventions (pure torch).

Per hand, network query points ``p`` live in the hand's HALO canonical frame in
normalised units (canonical metres / ``global_scale`` = 0.4). The official chain back to
the camera frame (../shared/reference/official_code.md §2.3 step 5) is::

    x = p * 0.4                      canonical metres
    x = x @ root_rot_mat[:3, :3]     inverse root rotation (row vectors x M = M^T x)
    x = x + root_xyz                 root_xyz: wrist in metres, x negated for left hands
    left hand: x[..., 0] *= -1       un-mirror
    x_cam = R x + T                  world -> camera (metres)

The first four steps are :func:`core.geometry.canonical.canon_norm_to_posed_m` (reused here);
this module adds the networks' conventions: ``root_xyz`` mirrored for left hands, the
world -> camera map, depth references and pixel projection.

Every function takes batched tensors: points (B, N, 3), matrices (B, 3, 3) or (B, 4, 4),
vectors (B, 3), and keeps the input dtype (float32 in the networks).
"""

from __future__ import annotations

import torch

from core.geometry.canonical import GLOBAL_SCALE, canon_norm_to_posed_m
from core.hand.mirror import mirror_if_left


def root_xyz_to_wrist_m(root_xyz: torch.Tensor, side: str) -> torch.Tensor:
    """The networks' ``root_xyz`` (x negated for left hands) -> the wrist position (B, 3)."""
    return mirror_if_left(root_xyz, side)


def world_to_camera(points_world_m: torch.Tensor, cam_R: torch.Tensor, cam_T: torch.Tensor) -> torch.Tensor:
    """x_cam = R x + T for row vectors: (B, N, 3) with R (B, 3, 3), T (B, 3)."""
    R = cam_R.to(points_world_m.dtype)
    return torch.matmul(points_world_m, R.transpose(-1, -2)) + cam_T.to(points_world_m.dtype).unsqueeze(-2)


def canonical_to_camera(
    points_canon_norm: torch.Tensor,
    root_rot_mat: torch.Tensor,
    root_xyz: torch.Tensor,
    cam_R: torch.Tensor,
    cam_T: torch.Tensor,
    side: str,
    global_scale: float = GLOBAL_SCALE,
) -> torch.Tensor:
    """Canonical normalised query points (B, N, 3) -> camera frame metres (B, N, 3), in the
    points' dtype. The canonical -> posed part is :func:`core.geometry.canonical.canon_norm_to_posed_m`
    (float64); ``root_xyz`` follows the networks' convention (x negated for left hands).
    ``global_scale`` (metres per normalised unit) other than 0.4 is for experiments only."""
    wrist_m = root_xyz_to_wrist_m(root_xyz, side)
    p = (
        points_canon_norm
        if global_scale == GLOBAL_SCALE
        else points_canon_norm * (global_scale / GLOBAL_SCALE)
    )
    posed_m = canon_norm_to_posed_m(p, root_rot_mat, wrist_m, side)
    return world_to_camera(posed_m.to(points_canon_norm.dtype), cam_R, cam_T)


def wrist_to_camera(
    root_xyz: torch.Tensor, cam_R: torch.Tensor, cam_T: torch.Tensor, side: str
) -> torch.Tensor:
    """The wrist itself in the camera frame: (B, 3) -> (B, 3) metres."""
    wrist_m = root_xyz_to_wrist_m(root_xyz, side)
    return world_to_camera(wrist_m.unsqueeze(-2), cam_R, cam_T)[..., 0, :]


def subtract_depth(points_cam_m: torch.Tensor, depth_m: torch.Tensor) -> torch.Tensor:
    """Subtract a per-batch depth (B,) or (B, 1) from the z of every point (x, y kept)."""
    offset = torch.zeros_like(points_cam_m[:, :1, :])
    offset[..., 2] = depth_m.reshape(-1, 1).to(points_cam_m.dtype)
    return points_cam_m - offset


def project_to_pixels(points_cam_m: torch.Tensor, cam_K: torch.Tensor) -> torch.Tensor:
    """Pinhole projection (B, N, 3) camera metres -> (B, N, 2) pixels (u right, v down)."""
    K = cam_K.to(points_cam_m.dtype)
    uvw = torch.matmul(points_cam_m, K.transpose(-1, -2))
    return uvw[..., :2] / uvw[..., 2:3]


def pixels_to_grid(uv: torch.Tensor, image_size: int) -> torch.Tensor:
    """Pixels of an ``image_size`` square crop -> ``grid_sample`` coordinates in [-1, 1]
    (official: (u - size/2) / (size/2), used with align_corners=True)."""
    half = image_size / 2.0
    return (uv - half) / half


# --- network R's frames ------------------------------------------------------------------
ANCHOR_UNITS_PER_M = 1000.0  # anchor meshes are stored in millimetres


def camera_to_network_frame(points_cam_m: torch.Tensor) -> torch.Tensor:
    """Camera frame (x right, y down, z forward) -> R's frame: y and z negated."""
    return points_cam_m * points_cam_m.new_tensor([1.0, -1.0, -1.0])


def anchors_mm_to_camera(anchors_mm: torch.Tensor, hand, side: str) -> torch.Tensor:
    """Anchor points (B, N, 3), mm, wrist-relative posed frame (left hand un-mirrored)
    -> camera frame metres. ``hand.root_xyz`` follows the official convention (x negated
    for the left hand), so the true wrist is ``root_xyz * (-1, 1, 1)`` there."""
    wrist = mirror_if_left(hand.root_xyz.to(anchors_mm.dtype), side)
    world = anchors_mm / ANCHOR_UNITS_PER_M + wrist.unsqueeze(-2)
    return world_to_camera(world, hand.cam_R, hand.cam_T)


def camera_to_canonical(points_cam_m: torch.Tensor, hand, side: str, global_scale: float) -> torch.Tensor:
    """Inverse of :func:`canonical_to_camera`: camera metres (B, N, 3) -> the hand's
    canonical frame in normalised units (``hand``: network I/R inputs, ``HandInputs``)."""
    R = hand.cam_R.to(points_cam_m.dtype)
    world = torch.matmul(points_cam_m - hand.cam_T.to(points_cam_m.dtype).unsqueeze(-2), R)  # R^T (x - T)
    world = mirror_if_left(world, side)
    rel = world - hand.root_xyz.to(points_cam_m.dtype).unsqueeze(-2)
    rot = hand.root_rot_mat[..., :3, :3].to(points_cam_m.dtype)
    return torch.matmul(rel, rot.transpose(-1, -2)) / global_scale


def bbox_centre(*point_sets: torch.Tensor) -> torch.Tensor:
    """Centre (B, 3) of the axis-aligned box around all given (B, N_i, 3) point sets."""
    points = torch.cat(point_sets, dim=1)
    return 0.5 * (points.amax(dim=1) + points.amin(dim=1))
