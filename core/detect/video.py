"""Video frames through OpenCV: frame count, fps, seek to a frame, step, iterate.

Frames are returned as RGB uint8 (H, W, 3). Seeking uses OpenCV's frame-accurate
``CAP_PROP_POS_FRAMES``; stepping forward from the current frame reads sequentially (fast).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from core.errors import InputError

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv")


class VideoError(InputError):
    """A video that cannot be opened or read."""


def is_video_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in VIDEO_SUFFIXES


class VideoReader:
    """Random and sequential access to the frames of a video file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_file():
            raise VideoError(f"video file not found: {self.path}")
        self._cap = cv2.VideoCapture(str(self.path))
        if not self._cap.isOpened():
            raise VideoError(f"OpenCV cannot open {self.path} as a video")
        self.width = int(self._cap.get(cv2.CAP_PROP_FRAME_WIDTH))
        self.height = int(self._cap.get(cv2.CAP_PROP_FRAME_HEIGHT))
        fps = float(self._cap.get(cv2.CAP_PROP_FPS))
        self.fps = fps if np.isfinite(fps) and fps > 0 else 30.0
        self.frame_count = max(int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)), 0)
        self._next_index = 0  # index of the frame the next sequential read returns
        # Set when the stream ends before the frame count of its header (a truncated file).
        self.truncated_at: int | None = None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

    def __enter__(self) -> VideoReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __len__(self) -> int:
        return self.frame_count

    @property
    def position(self) -> int:
        """Index of the frame :meth:`step` returns next."""
        return self._next_index

    def time_of(self, index: int) -> float:
        return index / self.fps

    @property
    def truncation_warning(self) -> str | None:
        """A user-facing line when the file ended before its declared frame count."""
        if self.truncated_at is None:
            return None
        return (
            f"warning: {self.path.name} is truncated: its header declares {self.frame_count} frames "
            f"but only {self.truncated_at} could be decoded"
        )

    def _ended(self) -> None:
        if self.frame_count and self._next_index < self.frame_count:
            self.truncated_at = self._next_index

    def step(self) -> np.ndarray | None:
        """The next frame (RGB), or ``None`` at the end (:attr:`truncated_at` is set when the
        end comes before the declared frame count)."""
        if self._cap is None:
            raise VideoError("video is closed")
        ok, bgr = self._cap.read()
        if not ok or bgr is None:
            self._ended()
            return None
        self._next_index += 1
        return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    def seek(self, index: int) -> None:
        if self._cap is None:
            raise VideoError("video is closed")
        if index < 0 or (self.frame_count and index >= self.frame_count):
            raise VideoError(f"frame {index} is outside the video's {self.frame_count} frames")
        if index != self._next_index:
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, index)
            self._next_index = index

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (RGB)."""
        self.seek(index)
        frame = self.step()
        if frame is None:
            raise VideoError(f"cannot read frame {index} of {self.path}")
        return frame

    def frames(self, every: int = 1, max_frames: int | None = None, start: int = 0
               ) -> Iterator[tuple[int, np.ndarray]]:
        """``(index, frame)`` for every ``every``-th frame from ``start``, at most
        ``max_frames``. Reads sequentially and skips by decoding (``grab``) when the gap
        is small, which is faster and more robust than seeking for short steps."""
        if every < 1:
            raise ValueError("every must be >= 1")
        self.seek(start)
        produced = 0
        index = start
        while max_frames is None or produced < max_frames:
            while self._next_index < index:
                if not self._cap.grab():
                    self._ended()
                    return
                self._next_index += 1
            frame = self.step()
            if frame is None:
                return
            yield index, frame
            produced += 1
            index += every
