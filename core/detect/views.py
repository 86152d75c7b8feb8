"""Image *views* for detection retries: an axis-aligned window of the image (possibly
reaching outside it: padding), optionally mirrored, resampled to a chosen size, and the
exact map of landmarks found in the view back to the full image.

Pixel convention as in :mod:`core.types` (origin at the top-left pixel corner). A view
maps image pixels to view pixels by ``u_view = s * (u - x0)`` (mirrored:
``u_view = W_view - s * (u - x0)``), ``v_view = s * (v - y0)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

# Views are resampled so their longer side is at most this many pixels (MediaPipe works at
# 192/224 px internally; more only costs time), and at least this many (zoom small crops).
MAX_VIEW_SIDE = 960
MIN_VIEW_SIDE = 384


@dataclass(frozen=True)
class View:
    """A window of the image (``x0``, ``y0``, ``width``, ``height`` in image pixels) resampled
    by ``scale`` and optionally mirrored, shown to MediaPipe as an image of its own."""

    name: str
    x0: float
    y0: float
    width: float  # window size in image pixels
    height: float
    scale: float = 1.0  # view pixels per image pixel
    flip: bool = False
    transform: Callable[[np.ndarray], np.ndarray] | None = None  # pixel-wise, e.g. contrast

    @property
    def out_size(self) -> tuple[int, int]:
        return max(1, round(self.width * self.scale)), max(1, round(self.height * self.scale))

    def render(self, image_rgb: np.ndarray) -> np.ndarray:
        """The view's pixels (contiguous uint8 RGB); outside the image is black."""
        img = image_rgb if self.transform is None else self.transform(image_rgb)
        out_w, out_h = self.out_size
        sx, sy = out_w / self.width, out_h / self.height
        if self.flip:
            A = np.array([[-sx, 0.0, out_w + sx * self.x0], [0.0, sy, -sy * self.y0], [0.0, 0.0, 1.0]])
        else:
            A = np.array([[sx, 0.0, -sx * self.x0], [0.0, sy, -sy * self.y0], [0.0, 0.0, 1.0]])
        if max(sx, sy) < 1:
            # warpAffine has no area filter: shrink the whole image first (corner-aligned),
            # then the remaining warp is close to a pure shift.
            h, w = img.shape[:2]
            small_w, small_h = max(1, round(w * sx)), max(1, round(h * sy))
            img = cv2.resize(img, (small_w, small_h), interpolation=cv2.INTER_AREA)
            A = A @ np.diag([w / small_w, h / small_h, 1.0])
        # OpenCV indexes pixel centres: index = corner coordinate - 0.5 on both sides.
        M = A[:2].copy()
        M[:, 2] += 0.5 * (M[:, 0] + M[:, 1]) - 0.5
        out = cv2.warpAffine(img, M, (out_w, out_h), flags=cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))
        return np.ascontiguousarray(out)

    def to_image(self, uv_view: np.ndarray, depth_view: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Landmarks (N, 2) and relative depths (N,) in view pixels -> full-image pixels."""
        out_w, out_h = self.out_size
        sx, sy = out_w / self.width, out_h / self.height
        uv = np.array(uv_view, dtype=np.float64)
        u = (out_w - uv[:, 0]) if self.flip else uv[:, 0]
        image_uv = np.stack([u / sx + self.x0, uv[:, 1] / sy + self.y0], axis=1)
        return image_uv, np.asarray(depth_view, dtype=np.float64) / sx


def _fit_scale(width: float, height: float) -> float:
    longer = max(width, height)
    if longer > MAX_VIEW_SIDE:
        return MAX_VIEW_SIDE / longer
    if longer < MIN_VIEW_SIDE:
        return MIN_VIEW_SIDE / longer
    return 1.0


def full_views(w: int, h: int, with_retries: bool = True) -> list[View]:
    """The whole image; with retries also mirrored, and padded by a quarter on every
    side (hands cut by the border or filling the frame are found more easily)."""
    s = _fit_scale(w, h)
    views = [View("full", 0, 0, w, h, s)]
    if with_retries:
        views.append(View("full-mirrored", 0, 0, w, h, s, flip=True))
        pad = 0.25 * max(w, h)
        sp = _fit_scale(w + 2 * pad, h + 2 * pad)
        views.append(View("padded", -pad, -pad, w + 2 * pad, h + 2 * pad, sp))
        views.append(View("padded-mirrored", -pad, -pad, w + 2 * pad, h + 2 * pad, sp, flip=True))
    return views


def _stretch_contrast(image_rgb: np.ndarray) -> np.ndarray:
    """Local contrast equalisation of the lightness channel (dark studio frames)."""
    lab = cv2.cvtColor(image_rgb, cv2.COLOR_RGB2LAB)
    clahe = cv2.createCLAHE(clipLimit=3.0, tileGridSize=(8, 8))
    lab[..., 0] = clahe.apply(lab[..., 0])
    return cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)


def contrast_views(image_rgb: np.ndarray, dark_below: float = 90.0) -> list[View]:
    """Contrast-stretched whole image (and mirrored) for dark images only."""
    if float(image_rgb.mean()) >= dark_below:
        return []
    h, w = image_rgb.shape[:2]
    s = _fit_scale(w, h)
    return [
        View("contrast", 0, 0, w, h, s, transform=_stretch_contrast),
        View("contrast-mirrored", 0, 0, w, h, s, flip=True, transform=_stretch_contrast),
    ]


def _square(name: str, cx: float, cy: float, side: float, flip: bool = False) -> View:
    return View(name, cx - side / 2, cy - side / 2, side, side, _fit_scale(side, side), flip=flip)


def neighbour_views(w: int, h: int, landmarks_px: np.ndarray) -> list[View]:
    """Zoomed square windows on a found hand and beside it, where the other hand of an
    interacting pair is: centred on the hand (2.5x its size) and shifted half a window
    left, right, up and down; each also mirrored."""
    lo, hi = landmarks_px.min(axis=0), landmarks_px.max(axis=0)
    cx, cy = (lo + hi) / 2
    size = max(float(np.max(hi - lo)), 16.0)
    side = min(2.5 * size, 1.5 * max(w, h))
    offsets = [(0, 0), (-0.5, 0), (0.5, 0), (0, -0.5), (0, 0.5)]
    views = []
    for dx, dy in offsets:
        for flip in (False, True):
            tag = f"near({dx:+.1f},{dy:+.1f}){'-mirrored' if flip else ''}"
            views.append(_square(tag, cx + dx * side, cy + dy * side, side, flip))
    return views


def tile_views(w: int, h: int) -> list[View]:
    """When nothing was found: zoomed overlapping tiles, a 2 x 2 grid of 60 % windows and
    a centre window (each also mirrored), then a 3 x 3 grid of 50 % windows."""
    views = []
    side = 0.6 * max(w, h)
    for fx, fy in [(0.3, 0.3), (0.7, 0.3), (0.3, 0.7), (0.7, 0.7), (0.5, 0.5)]:
        for flip in (False, True):
            tag = f"tile60({fx},{fy}){'-mirrored' if flip else ''}"
            views.append(_square(tag, fx * w, fy * h, side, flip))
    side = 0.5 * max(w, h)
    for cy in np.linspace(side / 2, max(h - side / 2, side / 2), 3):
        for cx in np.linspace(side / 2, max(w - side / 2, side / 2), 3):
            views.append(_square(f"tile50({cx:.0f},{cy:.0f})", cx, cy, side))
    return views
