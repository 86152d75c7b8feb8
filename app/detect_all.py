""""Detect all frames": the detector over a whole video or image folder, off the GUI thread.

The thread opens its own frame source (an OpenCV capture must not be shared between
threads), runs MediaPipe in video mode (tracking from frame to frame) for videos, re-assigns
sides from the tracks and smooths (:class:`core.detect.smoothing.TwoHandSmoother`, no
carry-over: a frame without a detection stays without hands). Progress leaves the thread at
most every :data:`PROGRESS_INTERVAL_S`; the results leave once, at the end (also when
cancelled: what was detected so far), so the document takes them as one undoable step.
"""

from __future__ import annotations

import contextlib
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PySide6.QtCore import QThread, Signal

from app.worker import _lower_this_thread_priority
from core.types import Camera, TwoHandKeypoints

PROGRESS_INTERVAL_S = 0.1


@dataclass(frozen=True)
class DetectProgress:
    done: int
    total: int
    elapsed_s: float

    @property
    def eta_s(self) -> float | None:
        if self.done == 0:
            return None
        return self.elapsed_s / self.done * (self.total - self.done)

    def text(self) -> str:
        eta = self.eta_s
        rate = self.done / self.elapsed_s if self.elapsed_s > 0 else 0.0
        return f"detecting {self.done}/{self.total}, {rate:.1f} frames/s" + (
            "" if eta is None else f", {eta:.0f} s left"
        )


@dataclass
class DetectAllResult:
    keypoints: dict[int, TwoHandKeypoints] = field(default_factory=dict)  # frame -> hands (maybe none)
    confidence: dict[int, np.ndarray | None] = field(default_factory=dict)  # frame -> (2, 21) or None
    frames_total: int = 0
    elapsed_s: float = 0.0
    cancelled: bool = False
    error: str | None = None
    details: str = ""

    @property
    def frames_per_s(self) -> float:
        return len(self.keypoints) / self.elapsed_s if self.elapsed_s > 0 else 0.0


class DetectAllWorker(QThread):
    progressed = Signal(object)  # DetectProgress
    finishedDetecting = Signal(object)  # DetectAllResult

    def __init__(self, media_path: Path, camera: Camera, every: int = 1, video_detector=None, parent=None):
        """``video_detector``: a warm video-mode MediaPipeHandDetector to use (and reset) for
        videos; its first frame costs ~0.2-0.8 s of model start-up otherwise, part of it
        holding the GIL."""
        super().__init__(parent)
        self.video_detector = video_detector
        if every < 1:
            raise ValueError("every must be >= 1")
        self.media_path = Path(media_path)
        self.camera = camera
        self.every = every
        self._cancel = threading.Event()

    def cancel(self) -> None:
        self._cancel.set()

    def cancelled(self) -> bool:
        return self._cancel.is_set()

    def run(self) -> None:  # noqa: D401 - QThread entry point
        _lower_this_thread_priority()
        result = DetectAllResult()
        start = time.perf_counter()
        try:
            self._detect(result, start)
        except Exception as exc:  # a bad frame or a missing detector: report, keep the rest
            result.error = str(exc) or type(exc).__name__
            result.details = traceback.format_exc()
        result.elapsed_s = time.perf_counter() - start
        result.cancelled = self.cancelled()
        self.finishedDetecting.emit(result)

    def _detect(self, result: DetectAllResult, start: float) -> None:
        from app.detection import detect_frame
        from app.media import open_media
        from core.detect.detector import MediaPipeHandDetector
        from core.detect.smoothing import TwoHandSmoother

        source = open_media(self.media_path)
        try:
            indices = list(range(0, len(source), self.every))
            result.frames_total = len(indices)
            video = source.kind == "video"
            fps = getattr(source, "fps", 0.0) or 30.0
            smoother = TwoHandSmoother(max_carry_frames=0)
            last_report = 0.0
            if video and self.video_detector is not None:  # warm, tracking nothing (see below)
                detector = contextlib.nullcontext(self.video_detector)
            else:
                detector = MediaPipeHandDetector(video_mode=video, retries=not video)
            with detector as detector:
                for done, index in enumerate(indices, start=1):
                    if self.cancelled():
                        return
                    found = detect_frame(source.frame_rgb(index), self.camera, detector)
                    detected = found.keypoints
                    result.keypoints[index] = smoother(detected, index / fps) if video else detected
                    result.confidence[index] = found.confidence
                    now = time.perf_counter()
                    if now - last_report >= PROGRESS_INTERVAL_S or done == len(indices):
                        last_report = now
                        self.progressed.emit(DetectProgress(done, len(indices), now - start))
                if video and self.video_detector is not None:
                    self.video_detector.forget_tracks()  # ready for the next video
        finally:
            source.close()
