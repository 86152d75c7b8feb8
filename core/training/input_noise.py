"""Noisy input keypoints for network I's training (ours; off by default).

At inference I runs on network K's output, about 12 mm off on our benchmark, not on the truth.
Trained on ground-truth keypoints only, I has no reason to read the image: the keypoints
already fix where the surface is, up to the hand's thickness. Here a share of the training
items gives I jittered keypoints (``core.synth.noise``, scaled by ``level``) while the query
points and their labels stay the same *physical* points: they are moved from the ground-truth
hand's canonical frame into the jittered hand's frame. The surface then differs from what the
keypoints say, and only the image tells by how much.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from core.errors import TrainConfigError
from core.geometry import camera_ops
from core.geometry.camera_ops import camera_to_canonical
from core.hand.joints import HAND_SIDES
from core.models.init_occ import HandInputs
from core.synth.noise import KeypointNoise, perturb_keypoints
from core.training.datasets import _Addressed
from core.types import TwoHandKeypoints

_SALT = 7411  # keeps these draws apart from the item's own (point subsample, crop)


@dataclass(frozen=True)
class InputNoise:
    """``share`` (0..1) of the items get jittered input keypoints at noise ``level``
    (``KeypointNoise.level``: 1 is the benchmark's noisy keypoints, about 15 mm)."""

    share: float = 0.0
    level: float = 1.0

    def __post_init__(self) -> None:
        if not 0.0 <= self.share <= 1.0:
            raise TrainConfigError(f"input noise share must be within 0..1, got {self.share}")
        if self.level < 0.0:
            raise TrainConfigError(f"input noise level must be >= 0, got {self.level}")

    @property
    def enabled(self) -> bool:
        return self.share > 0.0


def move_canonical_points(
    points: torch.Tensor,
    hand_from: HandInputs,
    side_from: str,
    hand_to: HandInputs,
    side_to: str,
    global_scale: float,
) -> torch.Tensor:
    """Canonical points (B, M, 3) of hand ``side_from`` (inputs ``hand_from``) -> the same
    physical points in the canonical frame of hand ``side_to`` (inputs ``hand_to``), through
    the camera frame that both inputs share."""
    h = hand_from
    cam = camera_ops.canonical_to_camera(
        points, h.root_rot_mat, h.root_xyz, h.cam_R, h.cam_T, side_from, global_scale
    )
    return camera_to_canonical(cam, hand_to, side_to, global_scale)


class NoisyInputItems(_Addressed):
    """``base``'s items where, for ``noise.share`` of the (index, draw) pairs, ``joints_{side}``
    (I's input) are jittered keypoints and ``points_{side}`` the same physical query points in
    those hands' canonical frames; ``occ_{side}`` is unchanged. The truth stays in
    ``true_joints_{side}``. Deterministic in (seed, index, draw), like the base items."""

    def __init__(self, base: _Addressed, noise: InputNoise, global_scale: float):
        self.base, self.noise, self.global_scale, self.spec = base, noise, float(global_scale), base.spec

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, key) -> dict[str, torch.Tensor]:
        index, draw = self._split(key)
        item = self.base[(index, draw)]
        for s in HAND_SIDES:
            item[f"true_joints_{s}"] = item[f"joints_{s}"]
        rng = np.random.default_rng([int(self.spec.seed), index, draw, _SALT])
        if rng.random() >= self.noise.share:
            return item
        truth = TwoHandKeypoints(**{s: item[f"joints_{s}"].numpy() for s in HAND_SIDES})
        noisy = perturb_keypoints(truth, rng, KeypointNoise(level=self.noise.level))
        moved = points_into_keypoint_frames(
            {s: item[f"points_{s}"] for s in HAND_SIDES}, truth, noisy, self.global_scale
        )
        for s in HAND_SIDES:
            item[f"joints_{s}"] = torch.as_tensor(noisy.hand(s), dtype=torch.float64)
            item[f"points_{s}"] = moved[s]
        return item


def keypoint_hand_inputs(keypoints: TwoHandKeypoints) -> dict[str, HandInputs]:
    """Both hands' I/R inputs (CPU) from camera-frame keypoints, as training builds them."""
    from core.training.recipes.base import hand_inputs_from_joints

    j = {s: torch.as_tensor(keypoints.hand(s), dtype=torch.float64)[None] for s in HAND_SIDES}
    return hand_inputs_from_joints(j["left"], j["right"], "cpu")


def points_into_keypoint_frames(
    points: dict[str, torch.Tensor], truth: TwoHandKeypoints, other: TwoHandKeypoints, global_scale: float
) -> dict[str, torch.Tensor]:
    """Each hand's canonical points (M, 3) under ``truth`` -> under ``other`` (float32)."""
    src, dst = keypoint_hand_inputs(truth), keypoint_hand_inputs(other)
    return {
        s: move_canonical_points(points[s].float()[None], src[s], s, dst[s], s, global_scale)[0].float()
        for s in HAND_SIDES
    }
