"""The "Detect" hook: image -> camera-frame 3D keypoints through :func:`core.detect.detect_image`
(no Qt). The app runs it in a background thread; core.detect shares one MediaPipe graph.
"""

from __future__ import annotations

import numpy as np

from core.errors import InputError
from core.types import Camera, TwoHandKeypoints


class NoHandsFound(InputError):
    """The detector found no hand in the frame."""


def detect_keypoints(image_rgb: np.ndarray, camera: Camera) -> TwoHandKeypoints:
    """Both hands' 21 joints (metres, ``camera``'s frame; a hand not found is ``None``).
    Raises :class:`NoHandsFound` when there is no hand, ``ImageError`` for a bad image."""
    from core.detect import detect_image  # MediaPipe loads on first use, off the GUI thread

    keypoints = detect_image(image_rgb, camera).keypoints
    if not keypoints.present_sides():
        raise NoHandsFound("no hand found in this frame; place them by hand (Edit > Add left/right hand)")
    return keypoints
