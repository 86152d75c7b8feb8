"""Frame sources the application opens: one image, a folder of images, or a video.

Pure data access (OpenCV decoding, no Qt). Every source yields RGB ``uint8`` arrays of
shape (H, W, 3) by frame index and decodes lazily, keeping a few recent frames cached.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict
from pathlib import Path

import cv2  # noqa: E402,I001  (after core imports so the env fix below sits next to it)
import numpy as np

from core.errors import InputError
from core.io.images import load_image_rgb

# OpenCV's GUI build points Qt at its own plugins on import; PySide6 must use its own.
for _var in ("QT_QPA_PLATFORM_PLUGIN_PATH", "QT_QPA_FONTDIR"):
    if "cv2" in os.environ.get(_var, ""):
        os.environ.pop(_var, None)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg")


class MediaError(InputError):
    """A file or folder that cannot be opened as an image, image folder or video."""


def _natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", path.name)]


def read_image_rgb(path: str | Path) -> np.ndarray:
    """Decode an image file into RGB uint8 (H, W, 3); raises :class:`ImageError`."""
    return load_image_rgb(path)


class FrameSource:
    """Base class: ``kind`` is "image", "folder" or "video"; ``path`` what was opened."""

    kind = "none"

    def __init__(self, path: Path, cache_size: int = 8):
        self.path = Path(path)
        self._cache: OrderedDict[int, np.ndarray] = OrderedDict()
        self._cache_size = cache_size

    def __len__(self) -> int:
        raise NotImplementedError

    def frame_name(self, index: int) -> str:
        return f"{self.path.name} [{index}]"

    def frame_path(self, index: int) -> Path | None:
        """The image file behind a frame, or ``None`` for video frames."""
        return None

    def frame_rgb(self, index: int) -> np.ndarray:
        if not 0 <= index < len(self):
            raise MediaError(f"frame {index} out of range (0..{len(self) - 1})")
        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        image = self._decode(index)
        image.setflags(write=False)  # shared with the worker thread: keep it immutable
        self._cache[index] = image
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return image

    def _decode(self, index: int) -> np.ndarray:
        raise NotImplementedError

    def close(self) -> None:
        self._cache.clear()


class ImageFileSource(FrameSource):
    kind = "image"

    def __init__(self, path: Path):
        super().__init__(path)
        self.frame_rgb(0)  # fail early on an unreadable file

    def __len__(self) -> int:
        return 1

    def frame_name(self, index: int) -> str:
        return self.path.name

    def frame_path(self, index: int) -> Path | None:
        return self.path

    def _decode(self, index: int) -> np.ndarray:
        return read_image_rgb(self.path)


class ImageFolderSource(FrameSource):
    kind = "folder"

    def __init__(self, path: Path):
        super().__init__(path)
        self.files = sorted(
            (p for p in self.path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES),
            key=_natural_key,
        )
        if not self.files:
            raise MediaError(f"folder {self.path} holds no images ({', '.join(IMAGE_SUFFIXES)})")

    def __len__(self) -> int:
        return len(self.files)

    def frame_name(self, index: int) -> str:
        return self.files[index].name

    def frame_path(self, index: int) -> Path | None:
        return self.files[index]

    def _decode(self, index: int) -> np.ndarray:
        return read_image_rgb(self.files[index])


_MAX_GRAB_AHEAD = 16  # a seek decodes from the previous key frame: dearer than a few grabs


class VideoSource(FrameSource):
    kind = "video"

    def __init__(self, path: Path):
        super().__init__(path)
        self._capture = cv2.VideoCapture(str(self.path))
        count = int(self._capture.get(cv2.CAP_PROP_FRAME_COUNT)) if self._capture.isOpened() else 0
        if count <= 0:
            self._capture.release()
            raise MediaError(f"cannot read {self.path.name} as a video (no frames decoded)")
        self._count = count
        self._next_index = 0  # sequential reads are much cheaper than seeks
        self.fps = float(self._capture.get(cv2.CAP_PROP_FPS) or 0.0)

    def __len__(self) -> int:
        return self._count

    def frame_name(self, index: int) -> str:
        return f"{self.path.name} frame {index}"

    def _decode(self, index: int) -> np.ndarray:
        if self._next_index < index <= self._next_index + _MAX_GRAB_AHEAD:
            while self._next_index < index:  # a short skip forward: decoding beats seeking
                self._capture.grab()
                self._next_index += 1
        elif index != self._next_index:
            self._capture.set(cv2.CAP_PROP_POS_FRAMES, index)
        ok, bgr = self._capture.read()
        if not ok or bgr is None:
            # A truncated file: its header promises more frames than its data holds.
            raise MediaError(
                f"cannot decode frame {index} of {self.path.name}: the video is truncated or damaged "
                f"(its header declares {self._count} frames)"
            )
        self._next_index = index + 1
        return np.ascontiguousarray(bgr[:, :, ::-1])

    def close(self) -> None:
        super().close()
        self._capture.release()


def open_media(path: str | Path) -> FrameSource:
    """Open an image file, a folder of images or a video file by its path."""
    path = Path(path).expanduser()
    if path.is_dir():
        return ImageFolderSource(path)
    if not path.exists():
        raise MediaError(f"not found: {path}")
    suffix = path.suffix.lower()
    if suffix in VIDEO_SUFFIXES:
        return VideoSource(path)
    if suffix in IMAGE_SUFFIXES:
        return ImageFileSource(path)
    raise MediaError(
        f"{path.name}: unknown file type {suffix!r}; open an image ({', '.join(IMAGE_SUFFIXES)}), "
        f"a video ({', '.join(VIDEO_SUFFIXES)}) or a folder of images"
    )
