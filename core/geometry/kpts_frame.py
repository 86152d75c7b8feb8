"""Network K's frame (official convention): ``halo`` joint order, **millimetres**, camera frame,
both hands relative to the **left hand's middle MCP** (``halo`` joint 4). Pure conversions
(numpy, float64) between that and our public keypoints (``mano`` order, camera frame, metres):

* :func:`keypoints_to_kpts_ref_input` / :func:`kpts_ref_output_to_keypoints` -- our pipeline;
* :func:`official_kpts_ref_input` / :func:`official_generate_world` -- the official dataset
  preprocessing and ``kpts_ref_generate.py`` post-processing, kept only to check against
  the golden vectors (the latter never subtracts T, quirk Q9);
* :func:`camera_to_world` -- the correct inverse of ``x_cam = R x_world + T``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.errors import KeypointError
from core.hand.joints import HALO_MIDDLE_MCP, NUM_JOINTS, convert_joints
from core.hand.mirror import mirror_if_left

MM_PER_M = 1000.0


@dataclass
class KptsRefInput:
    """K's input for a batch: ``halo`` order, mm, camera frame, relative to ``origin_cam_m``
    (the left hand's middle MCP in camera-frame metres)."""

    left_mm: np.ndarray  # (B, 21, 3)
    right_mm: np.ndarray  # (B, 21, 3)
    origin_cam_m: np.ndarray  # (B, 1, 3)


def _check_hand(name: str, joints: np.ndarray) -> np.ndarray:
    joints = np.asarray(joints, dtype=np.float64)
    if joints.shape[-2:] != (NUM_JOINTS, 3):
        raise KeypointError(f"{name} keypoints must have shape (..., 21, 3), got {joints.shape}")
    if not np.all(np.isfinite(joints)):
        raise KeypointError(f"{name} keypoints contain NaN or infinite values")
    return joints


def keypoints_to_kpts_ref_input(left_cam_m: np.ndarray, right_cam_m: np.ndarray) -> KptsRefInput:
    """Both hands, ``mano`` order, camera frame, metres ((21, 3) or (B, 21, 3)) -> K input."""
    left = convert_joints(_check_hand("left", left_cam_m), "mano", "halo")
    right = convert_joints(_check_hand("right", right_cam_m), "mano", "halo")
    if left.shape != right.shape:
        raise KeypointError(f"left and right keypoints differ in shape: {left.shape} vs {right.shape}")
    if left.ndim == 2:
        left, right = left[None], right[None]
    origin = left[:, HALO_MIDDLE_MCP : HALO_MIDDLE_MCP + 1, :]
    return KptsRefInput(
        left_mm=(left - origin) * MM_PER_M,
        right_mm=(right - origin) * MM_PER_M,
        origin_cam_m=origin.copy(),
    )


def kpts_ref_output_to_keypoints(joints_mm: np.ndarray, origin_cam_m: np.ndarray) -> np.ndarray:
    """K output of one hand ((B, 21, 3), ``halo`` order, mm relative to ``origin_cam_m``)
    -> ``mano`` order, camera frame, metres."""
    joints_m = np.asarray(joints_mm, dtype=np.float64) / MM_PER_M + np.asarray(origin_cam_m, dtype=np.float64)
    return convert_joints(joints_m, "halo", "mano")


def camera_to_world(points_cam_m: np.ndarray, R: np.ndarray, T: np.ndarray) -> np.ndarray:
    """Inverse of ``x_cam = R x_world + T`` for row-vector points (..., 3); batched R (B, 3, 3)
    and T (B, 3) apply to points (B, N, 3)."""
    p = np.asarray(points_cam_m, dtype=np.float64)
    R = np.asarray(R, dtype=np.float64)
    T = np.asarray(T, dtype=np.float64)
    if R.ndim == 3:
        return np.einsum("bnj,bji->bni", p - T[:, None, :], R)
    return (p - T) @ R


def official_kpts_ref_input(
    joints_dataset: dict[str, np.ndarray],
    root_xyz: dict[str, np.ndarray],
    cam_R: np.ndarray,
    cam_T: np.ndarray,
) -> KptsRefInput:
    """The official K preprocessing (golden check only).

    ``joints_dataset[side]`` (B, 21, 3): wrist-relative, ``halo`` order, left x-mirrored,
    world metres; ``root_xyz[side]`` (B, 3): wrist in world metres (left x-negated);
    ``cam_R`` (B, 3, 3), ``cam_T`` (B, 3): world -> camera."""
    R = np.asarray(cam_R, dtype=np.float64)
    T = np.asarray(cam_T, dtype=np.float64)
    cam = {}
    for side in ("left", "right"):
        world = np.asarray(joints_dataset[side], dtype=np.float64) + np.asarray(root_xyz[side])[:, None, :]
        world = mirror_if_left(world, side)
        cam[side] = np.einsum("bij,bnj->bni", R, world) + T[:, None, :]
    origin = cam["left"][:, HALO_MIDDLE_MCP : HALO_MIDDLE_MCP + 1, :]
    return KptsRefInput(
        left_mm=(cam["left"] - origin) * MM_PER_M,
        right_mm=(cam["right"] - origin) * MM_PER_M,
        origin_cam_m=origin,
    )


def official_generate_world(
    joints_mm: np.ndarray, origin_cam_m: np.ndarray, cam_R: np.ndarray, root_xyz: np.ndarray, side: str
) -> np.ndarray:
    """``kpts_ref_generate.py`` post-processing, **with its quirk Q9** (golden check only):
    ``(out / 1000 + origin) @ R + root_xyz`` (left: ``root_xyz * (-1, 1, 1)``). T is never
    subtracted and the order stays ``halo``; use :func:`kpts_ref_output_to_keypoints` and
    :func:`camera_to_world` for correct coordinates."""
    cam = np.asarray(joints_mm, dtype=np.float64) / MM_PER_M + np.asarray(origin_cam_m, dtype=np.float64)
    rotated = np.einsum("bnj,bji->bni", cam, np.asarray(cam_R, dtype=np.float64))
    root = np.asarray(root_xyz, dtype=np.float64)
    root = mirror_if_left(root, side)
    return rotated + root[:, None, :]
