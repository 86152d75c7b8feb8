"""Plausibility limits of hand keypoints, checked before any grid is allocated.

The wrist-to-middle-MCP length of human hands is about 6 cm (small child) to 11 cm (large
adult); the accepted range leaves a margin on both sides. A length 100x or 1000x inside
that range points to centimetres or millimetres written as metres."""

from __future__ import annotations

import numpy as np

from core.errors import KeypointError
from core.hand.joints import MANO_MIDDLE_MCP, MANO_WRIST

PALM_LENGTH_RANGE_M = (0.035, 0.16)  # wrist -> middle MCP
MAX_DEPTH_M = 100.0  # keypoints farther than this from the camera are not a hand in a photo
MAX_EXTENT_M = 0.4  # largest joint-to-joint distance; an adult's span is about 0.25 m


def _units_hint(length_m: float) -> str:
    low, high = PALM_LENGTH_RANGE_M
    for factor, unit in ((1000.0, "millimetres"), (100.0, "centimetres")):
        if low * factor <= length_m <= high * factor:
            return f"; the values look like {unit}: keypoints must be in metres"
    return "; keypoints must be in metres, camera frame"


def check_hand_size(joints_mano_m: np.ndarray, side: str) -> None:
    """Raise :class:`KeypointError` unless the hand's wrist-to-middle-MCP length lies in
    :data:`PALM_LENGTH_RANGE_M`, no two joints are farther apart than :data:`MAX_EXTENT_M`
    and the hand lies within :data:`MAX_DEPTH_M` of the camera."""
    joints = np.asarray(joints_mano_m, dtype=np.float64)
    length = float(np.linalg.norm(joints[MANO_MIDDLE_MCP] - joints[MANO_WRIST]))
    low, high = PALM_LENGTH_RANGE_M
    if not low <= length <= high:
        raise KeypointError(
            f"{side} hand: wrist to middle-finger knuckle is {length:.4g} m, outside the human range "
            f"{low * 100:.1f}-{high * 100:.0f} cm{_units_hint(length)}"
        )
    extent = float(np.linalg.norm(joints[:, None] - joints[None], axis=-1).max())
    if extent > MAX_EXTENT_M:
        raise KeypointError(
            f"{side} hand: two joints lie {extent:.3g} m apart (a hand spans at most "
            f"{MAX_EXTENT_M * 100:.0f} cm){_units_hint(extent)}"
        )
    depth = float(np.abs(joints).max())
    if depth > MAX_DEPTH_M:
        raise KeypointError(
            f"{side} hand: keypoints reach {depth:.3g} m from the camera (limit {MAX_DEPTH_M:.0f} m)"
            f"{_units_hint(depth)}"
        )
