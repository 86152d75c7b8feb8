"""2D/3D hand landmark detection: a detector interface and its MediaPipe implementation.

:class:`MediaPipeHandDetector` wraps the legacy ``mediapipe.solutions.hands.Hands`` graph
(models inside the ``mediapipe==0.10.21`` wheel, fully offline). MediaPipe often misses
one of two interacting hands, so with ``retries=True`` the image is looked at again
through a few *views* until two distinct hands are found (see :mod:`core.detect.views`):
the mirrored image, a padded image, a contrast-stretched image for dark frames, zoomed
crops around and beside a hand already found, and a grid of zoomed tiles when nothing
was found. Every view result is mapped back to the full image, duplicates are merged,
at most two hands are kept and their sides resolved (:mod:`core.detect.handedness`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from core.detect.handedness import assign_sides, chirality_score, label_to_side, side_evidence
from core.detect.views import View, contrast_views, full_views, neighbour_views, tile_views
from core.errors import ImageError
from core.hand.joints import MANO_WRIST
from core.hand.mirror import mirror_x


@dataclass
class HandDetection:
    """One detected hand, everything in the coordinates of the full input image.

    ``landmarks_px``: (21, 2) pixel coordinates (``mano`` order = MediaPipe order).
    ``depth_px``: (21,) MediaPipe's relative depth (wrist ~ 0, smaller = closer), in the
    same pixel units as ``landmarks_px``. ``world_m``: (21, 3) MediaPipe "world"
    landmarks, metres, centred on the hand, axes along the camera's (x right, y down,
    z forward). ``side`` is the resolved side; ``evidence`` is in [-1, 1] (> 0: right).
    """

    landmarks_px: np.ndarray
    depth_px: np.ndarray
    world_m: np.ndarray
    side: str
    evidence: float
    label_score: float
    source: str = "full"

    @property
    def box_px(self) -> tuple[float, float, float, float]:
        lo = self.landmarks_px.min(axis=0)
        hi = self.landmarks_px.max(axis=0)
        return float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])

    @property
    def size_px(self) -> float:
        x0, y0, x1, y1 = self.box_px
        return max(x1 - x0, y1 - y0, 1.0)


@dataclass
class ImageDetection:
    """The hands found in one image (at most one left and one right)."""

    hands: list[HandDetection]
    width: int
    height: int
    views_tried: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def hand(self, side: str) -> HandDetection | None:
        for h in self.hands:
            if h.side == side:
                return h
        return None


class HandDetector(Protocol):
    """Anything that finds up to two hands in an RGB uint8 (H, W, 3) image."""

    def detect(self, image_rgb: np.ndarray) -> ImageDetection: ...


@dataclass
class _Candidate:
    landmarks_px: np.ndarray
    depth_px: np.ndarray
    world_m: np.ndarray
    label_side: str
    label_score: float
    source: str

    @property
    def size_px(self) -> float:
        ext = self.landmarks_px.max(axis=0) - self.landmarks_px.min(axis=0)
        return float(max(ext.max(), 1.0))


def check_rgb_image(image: np.ndarray) -> np.ndarray:
    """A contiguous uint8 (H, W, 3) array, or :class:`ImageError` saying what is wrong."""
    img = np.asarray(image)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    if img.ndim != 3 or img.shape[2] not in (3, 4):
        raise ImageError(f"expected an RGB image of shape (H, W, 3), got shape {img.shape}")
    if img.shape[0] < 16 or img.shape[1] < 16:
        raise ImageError(f"image of {img.shape[1]}x{img.shape[0]} pixels is too small to find hands in")
    if img.dtype != np.uint8:
        if np.issubdtype(img.dtype, np.floating) and img.size and float(np.nanmax(img)) <= 1.0:
            img = img * 255.0
        img = np.clip(np.nan_to_num(img), 0, 255).astype(np.uint8)
    return np.ascontiguousarray(img[..., :3])


def same_hand(a_px: np.ndarray, b_px: np.ndarray, size_px: float) -> bool:
    """Whether two (21, 2) landmark sets describe the same hand. Either the joints agree
    one by one (mean distance < 0.25 x hand size), or the point sets overlap while the
    finger labels differ (another view may fit the skeleton the other way round): the
    symmetric mean nearest-point distance ("chamfer") is < 0.10 x size, or < 0.15 x size
    with the wrists within 0.45 x size. Thresholds measured on the sample photos and video:
    duplicates had chamfer 0.08-0.13 (wrists 0.40-0.51 apart), distinct touching hands
    0.135-0.16 with wrists 0.24-0.94 apart (the closest call, two thumbs-up hands side by
    side: chamfer 0.159, wrists 0.47). Wrists closer than 0.15 x size: one hand, whatever
    the fingers say (a thumb taken for a second hand sharing the wrist)."""
    a = np.asarray(a_px, dtype=np.float64)
    b = np.asarray(b_px, dtype=np.float64)
    if float(np.mean(np.linalg.norm(a - b, axis=1))) < 0.25 * size_px:
        return True
    wrist_gap = float(np.linalg.norm(a[MANO_WRIST] - b[MANO_WRIST]))
    d = np.linalg.norm(a[:, None, :] - b[None, :, :], axis=-1)
    chamfer = 0.5 * (d.min(axis=1).mean() + d.min(axis=0).mean())
    if wrist_gap < 0.15 * size_px:  # one wrist, two skeleton guesses (distinct pairs: >= 0.24)
        return True
    return chamfer < 0.10 * size_px or (wrist_gap < 0.45 * size_px and chamfer < 0.15 * size_px)


def nested_in(small_px: np.ndarray, big_px: np.ndarray, size_ratio: float = 0.6) -> bool:
    """A false positive typical of zoomed retry views: a much smaller "hand" (< 0.6 x the
    size) lying mostly (>= 80 % of its landmarks) inside another hand's box, e.g. a
    thumb taken for a hand."""
    lo, hi = big_px.min(axis=0), big_px.max(axis=0)
    small_size = float(np.max(small_px.max(axis=0) - small_px.min(axis=0)))
    if small_size >= size_ratio * float(np.max(hi - lo)):
        return False
    inside = np.all((small_px >= lo) & (small_px <= hi), axis=1)
    return float(inside.mean()) >= 0.8


class MediaPipeHandDetector:
    """MediaPipe Hands with recall-raising retries. Use as a context manager or call
    :meth:`close`. ``image_is_mirrored``: the input is a selfie preview (labels as is).
    ``video_mode``: consecutive frames of one video; MediaPipe tracks the hands from the
    previous frame's landmarks instead of running its palm detector every frame (several
    times faster), and the retries are off (they would feed the tracker unrelated views)."""

    def __init__(
        self,
        retries: bool = True,
        model_complexity: int = 1,
        min_detection_confidence: float = 0.5,
        image_is_mirrored: bool = False,
        video_mode: bool = False,
    ):
        try:
            import mediapipe as mp
        except ImportError as exc:  # pragma: no cover - mediapipe is a pinned requirement
            raise ImportError("hand detection needs the 'mediapipe==0.10.21' package") from exc
        self.retries = retries and not video_mode
        self.video_mode = video_mode
        self.image_is_mirrored = image_is_mirrored
        self._hands = mp.solutions.hands.Hands(
            static_image_mode=not video_mode,
            max_num_hands=2,
            model_complexity=model_complexity,
            min_detection_confidence=min_detection_confidence,
        )

    def close(self) -> None:
        if self._hands is not None:
            self._hands.close()
            self._hands = None

    def forget_tracks(self) -> None:
        """Video mode: forget the tracked hands, so the next frame starts a new sequence.
        A blank frame does it in ~10 ms and keeps the graph warm; MediaPipe's own reset
        restarts the graph and makes the next frame pay ~0.15 s of model start-up."""
        self.detect(np.zeros((64, 64, 3), np.uint8))

    def __enter__(self) -> MediaPipeHandDetector:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- one view ------------------------------------------------------------------
    def _run_view(self, image_rgb: np.ndarray, view: View) -> list[_Candidate]:
        if self._hands is None:
            raise RuntimeError("detector is closed")
        pixels = view.render(image_rgb)
        result = self._hands.process(pixels)
        if not result.multi_hand_landmarks:
            return []
        view_h, view_w = pixels.shape[:2]
        out = []
        for lm, world, handed in zip(
            result.multi_hand_landmarks, result.multi_hand_world_landmarks, result.multi_handedness,
            strict=True,
        ):
            norm = np.array([[p.x, p.y, p.z] for p in lm.landmark], dtype=np.float64)
            uv_view = norm[:, :2] * (view_w, view_h)
            depth_view = norm[:, 2] * view_w  # MediaPipe scales z like x
            world_m = np.array([[p.x, p.y, p.z] for p in world.landmark], dtype=np.float64)
            label = handed.classification[0]
            label_side = label_to_side(label.label, self.image_is_mirrored)
            uv, depth = view.to_image(uv_view, depth_view)
            if view.flip:  # a mirrored view sees the other hand and a mirrored world
                label_side = "left" if label_side == "right" else "right"
                world_m = mirror_x(world_m)
            out.append(_Candidate(uv, depth, world_m, label_side, float(label.score), view.name))
        return out

    # -- the whole image -------------------------------------------------------------
    def detect(self, image_rgb: np.ndarray) -> ImageDetection:
        image = check_rgb_image(image_rgb)
        t0 = time.perf_counter()
        h, w = image.shape[:2]
        found: list[_Candidate] = []
        tried: list[str] = []

        def run(views: list[View]) -> None:
            for view in views:
                if _distinct_count(found) >= 2:
                    return
                tried.append(view.name)
                for cand in self._run_view(image, view):
                    _merge(found, cand)

        run(full_views(w, h, with_retries=False))
        if self.retries:
            run(full_views(w, h, with_retries=True)[1:])
            if _distinct_count(found) < 2:
                run(contrast_views(image))
            if 0 < _distinct_count(found) < 2:
                for cand in list(found):
                    run(neighbour_views(w, h, cand.landmarks_px))
            if not found:
                run(tile_views(w, h))
                for cand in list(found):
                    run(neighbour_views(w, h, cand.landmarks_px))

        hands = _finalise(found[:2])
        return ImageDetection(hands=hands, width=w, height=h, views_tried=tried,
                              seconds=time.perf_counter() - t0)


def _distinct_count(found: list[_Candidate]) -> int:
    return len(found)


def _merge(found: list[_Candidate], cand: _Candidate) -> None:
    """Add ``cand`` unless it duplicates a hand already found; keep found sorted by score.
    On a duplicate the first finding stays (earlier views see the whole context)."""
    for other in found:
        if same_hand(other.landmarks_px, cand.landmarks_px, max(other.size_px, cand.size_px)):
            return
        if nested_in(cand.landmarks_px, other.landmarks_px):
            return
    found.append(cand)
    found.sort(key=lambda c: -c.label_score)


def _finalise(cands: list[_Candidate]) -> list[HandDetection]:
    evidence = [
        side_evidence(
            chirality_score(np.concatenate([c.landmarks_px, c.depth_px[:, None]], axis=1)),
            c.label_side,
            c.label_score,
        )
        for c in cands
    ]
    sides = assign_sides(evidence)
    hands = [
        HandDetection(c.landmarks_px, c.depth_px, c.world_m, s, e, c.label_score, c.source)
        for c, s, e in zip(cands, sides, evidence, strict=True)
    ]
    hands.sort(key=lambda hd: hd.side != "right")  # right first, then left
    return hands
