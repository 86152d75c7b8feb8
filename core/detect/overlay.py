"""Drawing detected / lifted keypoints over an image (for checking results by eye)."""

from __future__ import annotations

import cv2
import numpy as np

from core.hand.joints import bones
from core.types import Camera, TwoHandKeypoints

SIDE_COLOURS_RGB = {"right": (230, 60, 40), "left": (40, 110, 240)}


def draw_keypoints(image_rgb: np.ndarray, keypoints: TwoHandKeypoints, camera: Camera,
                   thickness: int | None = None) -> np.ndarray:
    """A copy of ``image_rgb`` with each present hand's skeleton projected through
    ``camera`` (right hand red, left hand blue; the wrist circled)."""
    out = np.ascontiguousarray(np.array(image_rgb, dtype=np.uint8, copy=True))
    t = thickness or max(1, round(max(out.shape[:2]) / 400))
    for side in keypoints.present_sides():
        uv = camera.project(keypoints.hand(side))
        if not np.all(np.isfinite(uv)):
            continue
        colour = SIDE_COLOURS_RGB[side]
        pts = [tuple(int(round(c)) for c in p) for p in uv]
        for a, b in bones("mano"):
            cv2.line(out, pts[a], pts[b], colour, t, cv2.LINE_AA)
        for p in pts:
            cv2.circle(out, p, t + 1, colour, -1, cv2.LINE_AA)
        cv2.circle(out, pts[0], 3 * t + 2, colour, t, cv2.LINE_AA)
    return out
