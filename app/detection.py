"""The "Detect" hook: image -> 3D keypoints through :mod:`core.detect` (no Qt).

Uses ``core.detect.detect_image(image_rgb, camera)`` when the detector package offers it,
else MediaPipe + lifting from its modules. Runs in a background thread, one at a time.
"""

from __future__ import annotations

import threading

import numpy as np

from core.errors import InputError
from core.types import Camera, TwoHandKeypoints

_lock = threading.Lock()
_detector = None  # MediaPipe graph: slow to build, so built once


class NoHandsFound(InputError):
    """The detector found no hand in the frame."""


def _coerce(result) -> TwoHandKeypoints:
    if isinstance(result, TwoHandKeypoints):
        return result
    for name in ("keypoints", "keypoints_cam_m"):
        value = getattr(result, name, None)
        if isinstance(value, TwoHandKeypoints):
            return value
    if isinstance(result, tuple) and result and isinstance(result[0], TwoHandKeypoints):
        return result[0]
    raise TypeError(f"the detector returned {type(result).__name__}, not two-hand keypoints")


def detect_keypoints(image_rgb: np.ndarray, camera: Camera) -> TwoHandKeypoints:
    global _detector
    with _lock:
        try:
            from core.detect import detect_image
        except ImportError:
            detect_image = None
        if detect_image is not None:
            keypoints = _coerce(detect_image(image_rgb, camera))
        else:
            from core.detect.detector import MediaPipeHandDetector
            from core.detect.lifting import lift_detection

            if _detector is None:
                _detector = MediaPipeHandDetector()
            keypoints = lift_detection(_detector.detect(image_rgb), camera)
    if not keypoints.present_sides():
        raise NoHandsFound(
            "no hand found in this frame; place the hands by hand (Edit > Add left/right hand)"
        )
    return keypoints
