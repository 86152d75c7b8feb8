"""Frame changes and projections in the networks' camera conventions (pure torch).

Per hand, network query points ``p`` live in the hand's HALO canonical frame in
normalised units (canonical metres / ``global_scale`` = 0.4). The official chain back to
the camera frame (official_code.md §2.3 step 5) is::

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

SIDES = ("left", "right")


def _check_side(side: str) -> None:
    if side not in SIDES:
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")


def mirror_x(points: torch.Tensor) -> torch.Tensor:
    """Negate x (left hands are mirrored into right hands and back)."""
    return points * points.new_tensor([-1.0, 1.0, 1.0])


def root_xyz_to_wrist_m(root_xyz: torch.Tensor, side: str) -> torch.Tensor:
    """The networks' ``root_xyz`` (x negated for left hands) -> the wrist position (B, 3)."""
    _check_side(side)
    return mirror_x(root_xyz) if side == "left" else root_xyz


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
