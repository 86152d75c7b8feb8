"""Per-frame annotation data (no Qt): the keypoint sets of a frame and joint visibility.

A frame holds up to three keypoint sets, all camera frame, metres, ``mano`` order:

* ``detected`` -- from the detector or a loaded keypoint file;
* ``edited``   -- the user's corrections (created on the first edit, from the active set);
* ``refined``  -- network K's output from the last reconstruction (derived, display only).

The *active* set, the one reconstructed and edited, is ``edited`` if present, else ``detected``.

Review bookkeeping per frame: ``interpolated`` (``edited`` holds a pose interpolated between
keyframes, not the user's own), ``reviewed`` (the annotator signed the frame off) and
``no_hands`` (someone looked: there is no hand). :func:`frame_state` turns these into the
one state the timeline shows.

``confidence`` (2, 21), rows left, right, or None: the detector's per-joint confidence in [0, 1]
(the skeleton fit's residual x the detector's score, :mod:`core.detect.skeleton_fit`); NaN =
no confidence (a joint the user placed or moved: a person has looked at it). Joints below
:data:`WEAK_JOINT_CONFIDENCE` are *weak*: the views colour them so the annotator looks there first.

Joint visibility has three states with COCO's codes: 2 visible, 1 occluded (labelled, not
seen), 0 outside the image.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.hand.joints import HAND_SIDES, NUM_JOINTS
from core.hand.mirror import mirror_if_left
from core.types import Camera, TwoHandKeypoints

KEYPOINT_SETS = ("detected", "edited", "refined")

OUTSIDE, OCCLUDED, VISIBLE = 0, 1, 2  # COCO keypoint flags
VISIBILITY_NAMES = {VISIBLE: "visible", OCCLUDED: "occluded", OUTSIDE: "outside"}
VISIBILITY_CYCLE = (VISIBLE, OCCLUDED, OUTSIDE)

# Frame states, in the order the timeline legend lists them.
NOT_ANNOTATED, NO_HANDS, DETECTED, INTERPOLATED, EDITED, REVIEWED = (
    "not annotated", "no hands", "detected", "interpolated", "edited", "reviewed",
)  # fmt: skip
FRAME_STATES = (NOT_ANNOTATED, NO_HANDS, DETECTED, INTERPOLATED, EDITED, REVIEWED)

# A joint whose confidence is below this is flagged. 0.5 = a reprojection residual of about
# 2.5 noise sigmas with a confident detector (skeleton_fit.joint_confidence).
WEAK_JOINT_CONFIDENCE = 0.5


def _all_visible() -> np.ndarray:
    return np.full((len(HAND_SIDES), NUM_JOINTS), VISIBLE, dtype=np.int8)


def visibility_from_bools(rows) -> np.ndarray:
    """Older files stored visible / not visible: not visible was an occluded joint."""
    return np.where(np.asarray(rows, dtype=bool), VISIBLE, OCCLUDED).astype(np.int8)


@dataclass
class FrameAnnotation:
    detected: TwoHandKeypoints | None = None
    edited: TwoHandKeypoints | None = None
    refined: TwoHandKeypoints | None = None
    visibility: np.ndarray = field(default_factory=_all_visible)  # (2, 21) int8, rows left, right
    interpolated: bool = False
    reviewed: bool = False
    no_hands: bool = False
    confidence: np.ndarray | None = None  # (2, 21) float, NaN = none (see the module docstring)

    @property
    def visible(self) -> np.ndarray:
        """(2, 21) bool: the joints seen in the image (a copy)."""
        return self.visibility == VISIBLE

    def active(self) -> TwoHandKeypoints | None:
        return self.edited if self.edited is not None else self.detected

    def is_keyframe(self) -> bool:
        """Edited by the user (not interpolated): the poses interpolation starts from."""
        return self.edited is not None and not self.interpolated

    def weak_joints(self) -> np.ndarray:
        """(2, 21) bool: joints whose detector confidence is below :data:`WEAK_JOINT_CONFIDENCE`."""
        if self.confidence is None:
            return np.zeros((len(HAND_SIDES), NUM_JOINTS), dtype=bool)
        with np.errstate(invalid="ignore"):
            return np.asarray(self.confidence < WEAK_JOINT_CONFIDENCE)

    def copy(self) -> FrameAnnotation:
        def dup(k: TwoHandKeypoints | None) -> TwoHandKeypoints | None:
            return None if k is None else k.copy()

        return FrameAnnotation(
            dup(self.detected), dup(self.edited), dup(self.refined), self.visibility.copy(),
            self.interpolated, self.reviewed, self.no_hands,
            None if self.confidence is None else self.confidence.copy(),
        )  # fmt: skip

    def is_empty(self) -> bool:
        return (
            self.detected is None
            and self.edited is None
            and self.refined is None
            and bool((self.visibility == VISIBLE).all())
            and not (self.reviewed or self.no_hands)
        )


def frame_state(ann: FrameAnnotation | None) -> str:
    """The one state of a frame shown on the timeline (see the module docstring)."""
    if ann is None:
        return NOT_ANNOTATED
    if ann.reviewed:
        return REVIEWED
    if ann.is_keyframe():
        return EDITED
    if ann.interpolated:
        return INTERPOLATED
    active = ann.active()
    if active is not None and active.present_sides():
        return DETECTED
    if ann.no_hands or active is not None:
        return NO_HANDS
    return NOT_ANNOTATED


def confidence_rows(by_side: dict[str, np.ndarray] | None) -> np.ndarray | None:
    """{side: (21,) confidence} (sides not given: NaN) -> (2, 21) rows, or None if empty."""
    if not by_side:
        return None
    rows = np.full((len(HAND_SIDES), NUM_JOINTS), np.nan)
    for side, values in by_side.items():
        rows[side_row(side)] = np.asarray(values, dtype=np.float64).reshape(NUM_JOINTS)
    return rows


def confidence_after_edit(confidence: np.ndarray | None, side: str, before: np.ndarray | None,
                          after: np.ndarray | None, touched=None) -> np.ndarray | None:
    """The joints of ``side`` that an edit moved (or a hand added / removed) lose their
    detector confidence (NaN): the user has placed them. ``touched``: only these joints
    (an edit that refits the whole hand around the one joint the user dragged)."""
    if confidence is None:
        return None
    out = confidence.copy()
    row = side_row(side)
    if before is None or after is None:
        out[row] = np.nan
    elif touched is not None:
        out[row, list(touched)] = np.nan
    else:
        moved = np.linalg.norm(np.asarray(after) - np.asarray(before), axis=1) > 1e-9
        out[row, moved] = np.nan
    return None if np.isnan(out).all() else out


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
    return mirror_if_left(joints, side)


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


def fit_template_in_box(side: str, camera: Camera, box_px) -> np.ndarray:
    """The template hand placed so its image fits the box ``(u0, v0, u1, v1)`` the user
    dragged: depth from the box's size (the larger of the width and height fits), centre on
    the box's centre."""
    u0, v0, u1, v1 = (float(x) for x in box_px)
    width_px, height_px = abs(u1 - u0), abs(v1 - v0)
    if min(width_px, height_px) < 4:
        raise ValueError(f"the box is too small ({width_px:.0f} x {height_px:.0f} px): drag a larger one")
    joints = template_hand(side)
    lo, hi = joints[:, :2].min(axis=0), joints[:, :2].max(axis=0)
    K = np.asarray(camera.K, dtype=np.float64)
    depth = max(K[0, 0] * (hi[0] - lo[0]) / width_px, K[1, 1] * (hi[1] - lo[1]) / height_px)
    centre = camera.backproject(np.array([(u0 + u1) / 2, (v0 + v1) / 2]), np.array(depth))
    offset = np.array([(lo[0] + hi[0]) / 2, (lo[1] + hi[1]) / 2, 0.0])
    return joints - offset + centre
