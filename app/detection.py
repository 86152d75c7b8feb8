"""The "Detect" hook: image -> camera-frame 3D keypoints through :func:`core.detect.detect_image`
(no Qt). The app runs it in a background thread; core.detect shares one MediaPipe graph.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from app.annotation import confidence_rows
from core.errors import InputError
from core.types import Camera, TwoHandKeypoints


class NoHandsFound(InputError):
    """The detector found no hand in the frame."""


@dataclass
class DetectedFrame:
    """Both hands' keypoints and the (2, 21) per-joint confidence (rows left, right; NaN where
    the lifting gives none), or None when the lifting gives no confidence at all."""

    keypoints: TwoHandKeypoints
    confidence: np.ndarray | None


def detect_frame(image_rgb: np.ndarray, camera: Camera, detector=None) -> DetectedFrame:
    """The hands of one image with their per-joint confidence (an empty result when there is
    none; ``detector``: a MediaPipe detector to use, default the shared one)."""
    from core.detect import detect_image  # MediaPipe loads on first use, off the GUI thread

    found = detect_image(image_rgb, camera) if detector is None else detect_image(image_rgb, camera, detector)
    return DetectedFrame(found.keypoints, confidence_rows(found.joint_confidence))


def detect_keypoints(image_rgb: np.ndarray, camera: Camera) -> TwoHandKeypoints:
    """Both hands' 21 joints (metres, ``camera``'s frame; a hand not found is ``None``).
    Raises :class:`NoHandsFound` when there is no hand, ``ImageError`` for a bad image."""
    return detect_hands(image_rgb, camera).keypoints


def detect_hands(image_rgb: np.ndarray, camera: Camera) -> DetectedFrame:
    """:func:`detect_frame` that raises :class:`NoHandsFound` when there is no hand."""
    found = detect_frame(image_rgb, camera)
    if not found.keypoints.present_sides():
        raise NoHandsFound("no hand found in this frame; place them by hand (Edit > Add left/right hand)")
    return found
