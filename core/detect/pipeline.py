"""Image or video -> camera-frame 3D keypoints: detection, lifting, smoothing in one place.

:func:`detect_image` is what the engine, the app and the ``detect`` command call;
:func:`detect_video` runs it over video frames with temporal smoothing and carry-over.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from core.detect.detector import HandDetector, ImageDetection, MediaPipeHandDetector, check_rgb_image
from core.detect.lifting import DEFAULT_METHOD, lift_detection_with_fits
from core.detect.skeleton_fit import HandFit
from core.detect.smoothing import TwoHandSmoother
from core.detect.video import VideoReader
from core.types import Camera, TwoHandKeypoints

_shared_detector: MediaPipeHandDetector | None = None
_shared_lock = threading.Lock()


@dataclass
class DetectedHands:
    """What :func:`detect_image` returns: the lifted keypoints (a hand not found is
    ``None``), the 2D detection behind them and the camera used. With the skeleton lifting,
    ``fits`` holds each found hand's fit and ``joint_confidence`` its per-joint confidence
    ((21,) in [0, 1]: fit residual x detector score; low = look here first)."""

    keypoints: TwoHandKeypoints
    detection: ImageDetection
    camera: Camera
    fits: dict[str, HandFit] = field(default_factory=dict)

    @property
    def joint_confidence(self) -> dict[str, np.ndarray]:
        return {side: fit.confidence for side, fit in self.fits.items()}


def shared_detector() -> MediaPipeHandDetector:
    """One process-wide MediaPipe detector (building its graph takes ~0.1 s)."""
    global _shared_detector
    if _shared_detector is None:
        _shared_detector = MediaPipeHandDetector()
    return _shared_detector


def detect_image(image_rgb: np.ndarray, camera: Camera | None = None,
                 detector: HandDetector | None = None, snap_to_2d: bool | None = None,
                 lifting: str = DEFAULT_METHOD) -> DetectedHands:
    """Find up to two hands in an RGB image and lift them to the camera frame (metres).
    ``camera`` defaults to :meth:`Camera.default_for_image`; its size must match the image.
    ``lifting``: "skeleton" (default, the anthropometric skeleton fit) or "world" (the earlier
    translated MediaPipe world landmarks); ``snap_to_2d`` None = that method's default."""
    image = check_rgb_image(image_rgb)
    h, w = image.shape[:2]
    if camera is None:
        camera = Camera.default_for_image(w, h)
    elif (int(camera.width), int(camera.height)) != (w, h):
        sx, sy = w / camera.width, h / camera.height
        camera = Camera(K=np.diag([sx, sy, 1.0]) @ np.asarray(camera.K, dtype=np.float64), width=w, height=h,
                        R=camera.R, T=camera.T)
    if detector is None:
        with _shared_lock:
            detection = shared_detector().detect(image)
    else:
        detection = detector.detect(image)
    lifted = lift_detection_with_fits(detection, camera, method=lifting, snap_to_2d=snap_to_2d)
    return DetectedHands(lifted.keypoints, detection, camera, lifted.fits)


@dataclass
class VideoFrameResult:
    index: int
    time_s: float
    keypoints: TwoHandKeypoints  # smoothed (carried-over hands included)
    raw: DetectedHands  # this frame's own detection and lifting
    carried: dict[str, bool]  # side -> the hand was carried over from earlier frames
    relabelled: bool = False  # the detector's sides were swapped to follow the tracks


def detect_video(path: str | Path, camera: Camera | None = None, every: int = 1,
                 max_frames: int | None = None, detector: HandDetector | None = None,
                 smoother: TwoHandSmoother | None = None) -> Iterator[VideoFrameResult]:
    """Detection on every ``every``-th frame (at most ``max_frames``) with One-Euro
    smoothing; a hand missing in a frame is carried over for a few frames, and sides follow
    the tracks when the detector swaps them (see :class:`TwoHandSmoother`)."""
    smoother = smoother if smoother is not None else TwoHandSmoother()
    with VideoReader(path) as video:
        for index, frame in video.frames(every=every, max_frames=max_frames):
            raw = detect_image(frame, camera, detector)
            t = video.time_of(index)
            smoothed = smoother(raw.keypoints, t)
            yield VideoFrameResult(index, t, smoothed, raw, dict(smoother.carried), smoother.relabelled)
