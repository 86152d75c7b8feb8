"""A template two-hand pose for manual placement where detection failed.

Both hands are held up, palms towards the camera, fingers relaxed (each finger joint
flexed 12 degrees), thumbs pointing inwards: as a person facing the camera shows their
hands, so the right hand is on the image's left. Sizes are an average adult hand
(wrist to middle-finger tip 18.5 cm). :func:`template_in_box` scales and places it
so that its projection fills a pixel box, at the depth where its metric size fits.
"""

from __future__ import annotations

import numpy as np

from core.hand.mirror import mirror_if_left
from core.types import Camera, TwoHandKeypoints

# Right hand, hand-local metres: x towards the thumb, y from the fingertips to the wrist
# (image "up" is -y), z away from the camera; the palm faces -z (the camera).
_MCP_XY = {"index": (0.024, -0.086), "middle": (0.003, -0.090), "ring": (-0.017, -0.084),
           "pinky": (-0.034, -0.075)}
_PHALANGES_M = {"index": (0.040, 0.024, 0.021), "middle": (0.044, 0.028, 0.023),
                "ring": (0.041, 0.027, 0.023), "pinky": (0.032, 0.020, 0.020)}
_SPLAY_RAD = {"index": 0.12, "middle": 0.02, "ring": -0.08, "pinky": -0.18}
_THUMB_M = ((0.020, -0.026, -0.008), (0.043, -0.044, -0.016), (0.058, -0.066, -0.020),
            (0.068, -0.087, -0.022))
_FLEX_RAD = np.deg2rad(12.0)
TEMPLATE_HAND_GAP_M = 0.04  # between the two thumbs' outermost points


def template_right_hand() -> np.ndarray:
    """(21, 3) right hand, ``mano`` order, hand-local metres, wrist at the origin."""
    joints = np.zeros((21, 3))
    joints[1:5] = _THUMB_M
    for f, finger in enumerate(("index", "middle", "ring", "pinky")):
        base = 5 + 4 * f
        x, y = _MCP_XY[finger]
        joints[base] = (x, y, 0.0)
        direction = np.array([np.sin(_SPLAY_RAD[finger]), -np.cos(_SPLAY_RAD[finger]), 0.0])
        pos, flex = joints[base].copy(), 0.0
        for k, length in enumerate(_PHALANGES_M[finger]):
            flex += _FLEX_RAD  # each joint bends further towards the palm (-z)
            d = np.cos(flex) * direction + np.array([0.0, 0.0, -np.sin(flex)])
            pos = pos + length * d
            joints[base + k + 1] = pos
    return joints


def template_hand(side: str) -> np.ndarray:
    """(21, 3) template hand of ``side``, hand-local metres (left = right mirrored in x)."""
    return mirror_if_left(template_right_hand(), side)


def template_two_hands_local() -> TwoHandKeypoints:
    """Both template hands side by side (right hand at -x, i.e. image left), centred."""
    right, left = template_hand("right"), template_hand("left")
    half_gap = TEMPLATE_HAND_GAP_M / 2
    right = right - (right[:, 0].max() + half_gap, 0.0, 0.0)
    left = left - (left[:, 0].min() - half_gap, 0.0, 0.0)
    both = np.concatenate([right, left])
    centre = (both.min(axis=0) + both.max(axis=0)) / 2
    return TwoHandKeypoints(left=left - centre, right=right - centre)


def template_in_box(box_px: tuple[float, float, float, float], camera: Camera,
                    sides: tuple[str, ...] = ("left", "right")) -> TwoHandKeypoints:
    """The template (both hands, or one side only) placed in the camera frame so that its
    projection is centred in ``box_px`` = (x0, y0, x1, y1) and fits inside it."""
    x0, y0, x1, y1 = (float(v) for v in box_px)
    if not (x1 > x0 and y1 > y0):
        raise ValueError(f"box must have x1 > x0 and y1 > y0, got {box_px}")
    if set(sides) == {"left", "right"}:
        local = template_two_hands_local()
    elif len(sides) == 1:
        hand = template_hand(sides[0])
        hand = hand - (hand.min(axis=0) + hand.max(axis=0)) / 2
        local = TwoHandKeypoints(left=hand if sides[0] == "left" else None,
                                 right=hand if sides[0] == "right" else None)
    else:
        raise ValueError(f"sides must be one or both of 'left', 'right', got {sides}")
    pts = np.concatenate([local.hand(s) for s in local.present_sides()])
    extent = pts.max(axis=0) - pts.min(axis=0)
    K = np.asarray(camera.K, dtype=np.float64)
    # Depth at which the metric extent covers the box (the larger ratio keeps it inside).
    depth = max(K[0, 0] * extent[0] / (x1 - x0), K[1, 1] * extent[1] / (y1 - y0))
    centre = camera.backproject(np.array([(x0 + x1) / 2, (y0 + y1) / 2]), np.array(depth))
    return TwoHandKeypoints(
        left=None if local.left is None else local.left + centre,
        right=None if local.right is None else local.right + centre,
    )
