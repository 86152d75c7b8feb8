"""Per-hand geometry of one reconstruction: keypoints -> canonical frame and network inputs.

Our keypoints are already in the camera frame, so the networks get camera ``R = I``,
``T = 0`` and ``root_xyz`` = the wrist (x negated for the left hand, the official
convention). Query points live in the hand's canonical box (normalised units); the maps
between box and camera frame come from :mod:`core.geometry.canonical`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.errors import KeypointError
from core.geometry.canonical import (
    GLOBAL_SCALE,
    HaloInputs,
    canonicalize_hand,
    halo_base_inputs,
    validate_hand_keypoints,
)
from core.hand.joints import MANO_WRIST
from core.hand.limits import check_hand_size
from core.models.init_occ import HandInputs
from core.types import TwoHandKeypoints


@dataclass
class HandFrame:
    side: str
    joints_cam_m: np.ndarray  # (21, 3) mano order
    halo: HaloInputs  # batch of one, float64

    @property
    def wrist_cam_m(self) -> np.ndarray:
        return self.joints_cam_m[MANO_WRIST]

    def cam_to_box(self, points_cam_m: np.ndarray) -> np.ndarray:
        """(M, 3) camera metres -> (M, 3) canonical box coordinates (left hand mirrored)."""
        p = torch.as_tensor(np.asarray(points_cam_m, dtype=np.float64)[None])
        return self.halo.posed_m_to_canon_norm(p)[0].numpy()

    def box_to_cam(self, points_box: np.ndarray) -> np.ndarray:
        p = torch.as_tensor(np.asarray(points_box, dtype=np.float64)[None])
        return self.halo.canon_norm_to_posed_m(p)[0].numpy()

    @property
    def flips_orientation(self) -> bool:
        """The box -> camera map mirrors the left hand, which reverses face winding."""
        return self.side == "left"

    def joints_box(self) -> np.ndarray:
        return self.cam_to_box(self.joints_cam_m)

    def network_inputs(self, device: torch.device) -> HandInputs:
        """Inputs of networks I / R for this hand (batch of one, float32)."""
        return HandInputs.from_camera_frame(self.halo, torch.as_tensor(self.wrist_cam_m[None]), device)

    def halo_base_inputs(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """(unpose matrices (1, 16, 4, 4) float64, bone lengths (1, 16) float32) of the HALO
        base model (HALO-repo convention: no extra S(0.4))."""
        base = halo_base_inputs(self.joints_cam_m[None], self.side, validate=False)
        return base.unpose_mats.to(device), base.bone_lengths.to(device=device, dtype=torch.float32)


def hand_frames(keypoints: TwoHandKeypoints) -> dict[str, HandFrame]:
    """Validate and canonicalise every present hand. Raises :class:`KeypointError` for
    NaN/inf, collapsed or implausibly sized keypoints, points behind the camera, or no hand."""
    frames = {}
    for side in keypoints.present_sides():
        joints = np.asarray(keypoints.hand(side), dtype=np.float64)
        validate_hand_keypoints(joints, side)
        check_hand_size(joints, side)  # before any grid: a hand in millimetres would need terabytes
        if np.any(joints[:, 2] <= 0):
            raise KeypointError(
                f"{side} hand keypoints must lie in front of the camera (z > 0 in metres); "
                f"got z from {joints[:, 2].min():.3g} m"
            )
        frames[side] = HandFrame(side, joints, canonicalize_hand(joints[None], side))
    if not frames:
        raise KeypointError("no hand keypoints given: at least one of left / right is needed")
    return frames


__all__ = ["GLOBAL_SCALE", "HandFrame", "hand_frames"]
