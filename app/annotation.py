"""Per-frame annotation data (no Qt): the keypoint sets of a frame and joint visibility.

A frame holds up to three keypoint sets, all camera frame, metres, ``mano`` order:

* ``detected`` -- from the detector or a loaded keypoint file;
* ``edited``   -- the user's corrections (created on the first edit, from the active set);
* ``refined``  -- network K's output from the last reconstruction (derived, display only).

The *active* set, the one reconstructed and edited, is ``edited`` if present, else ``detected``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.hand.joints import HAND_SIDES, NUM_JOINTS
from core.types import Camera, TwoHandKeypoints

KEYPOINT_SETS = ("detected", "edited", "refined")


def _all_visible() -> np.ndarray:
    return np.ones((len(HAND_SIDES), NUM_JOINTS), dtype=bool)


@dataclass
class FrameAnnotation:
    detected: TwoHandKeypoints | None = None
    edited: TwoHandKeypoints | None = None
    refined: TwoHandKeypoints | None = None
    visible: np.ndarray = field(default_factory=_all_visible)  # (2, 21) bool, rows left, right

    def active(self) -> TwoHandKeypoints | None:
        return self.edited if self.edited is not None else self.detected

    def copy(self) -> FrameAnnotation:
        def dup(k: TwoHandKeypoints | None) -> TwoHandKeypoints | None:
            return None if k is None else k.copy()

        return FrameAnnotation(dup(self.detected), dup(self.edited), dup(self.refined), self.visible.copy())

    def is_empty(self) -> bool:
        return (
            self.detected is None
            and self.edited is None
            and self.refined is None
            and bool(self.visible.all())
        )


def side_row(side: str) -> int:
    if side not in HAND_SIDES:
        raise ValueError(f"side must be one of {HAND_SIDES}, got {side!r}")
    return HAND_SIDES.index(side)


def with_hand(
    keypoints: TwoHandKeypoints | None, side: str, joints_cam_m: np.ndarray | None
) -> TwoHandKeypoints:
    """A copy of ``keypoints`` with one hand replaced."""
    result = TwoHandKeypoints(None, None) if keypoints is None else keypoints.copy()
    value = None if joints_cam_m is None else np.array(joints_cam_m, dtype=np.float64).reshape(NUM_JOINTS, 3)
    if side == "left":
        result.left = value
    else:
        result.right = value
    return result


def swapped(keypoints: TwoHandKeypoints | None) -> TwoHandKeypoints | None:
    """Left and right labels exchanged (fixes a detector's handedness mistake)."""
    if keypoints is None:
        return None
    k = keypoints.copy()
    return TwoHandKeypoints(left=k.right, right=k.left)


# A rough open hand used when the user places a missing hand by hand: right hand, palm
# towards the camera, fingers up (-y), wrist at the origin, metres. Thumb on +x.
_FINGER_BASES = {  # mcp position, phalanx lengths (proximal, middle, distal)
    "index": ((0.024, -0.088), (0.040, 0.025, 0.022)),
    "middle": ((0.004, -0.092), (0.045, 0.028, 0.024)),
    "ring": ((-0.015, -0.086), (0.042, 0.027, 0.023)),
    "pinky": ((-0.032, -0.076), (0.032, 0.020, 0.020)),
}


def template_hand(side: str) -> np.ndarray:
    """(21, 3) template joints in the ``mano`` order, wrist at the origin, metres."""
    joints = np.zeros((NUM_JOINTS, 3))
    joints[1:5] = [(0.022, -0.022, -0.01), (0.042, -0.042, -0.015), (0.056, -0.062, -0.018),
                   (0.066, -0.082, -0.02)]  # fmt: skip
    for f, ((x, y), lengths) in enumerate(_FINGER_BASES.values()):
        base = 5 + 4 * f
        joints[base] = (x, y, 0.0)
        direction = np.array([x * 0.3, -1.0, -0.05])
        direction /= np.linalg.norm(direction)
        for k, length in enumerate(lengths):
            joints[base + k + 1] = joints[base + k] + direction * length
    if side == "left":
        joints[:, 0] *= -1.0
    return joints


def place_template_hand(side: str, camera: Camera, other_hand_cam_m: np.ndarray | None) -> np.ndarray:
    """A template hand placed beside the other hand, or at the image centre 0.6 m away."""
    if other_hand_cam_m is not None:
        other = np.asarray(other_hand_cam_m, dtype=np.float64)
        # Seen from the camera, a person's right hand is on the image's left.
        offset = np.array([-0.12 if side == "right" else 0.12, 0.0, 0.0])
        wrist = other[0] + offset
    else:
        centre = np.array([camera.width / 2.0, camera.height * 0.6])
        wrist = camera.backproject(centre, np.array(0.6))
    return template_hand(side) + wrist
