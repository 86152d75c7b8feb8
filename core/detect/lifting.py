"""Lifting detected hands to 3D keypoints in the camera frame (metres).

Default (``method="skeleton"``): the anthropometric skeleton fit of :mod:`.skeleton_fit`,
both hands together, with a weak depth-direction cue from MediaPipe (``depth_cue``): its world
landmarks, its image landmarks' relative depth, or by default the mean of the two.

The earlier lifting (``method="world"``), per hand: MediaPipe's world landmarks give the
hand's metric shape (hand-centred, axes along the camera's). Because the landmark network
sees the hand in a crop, that shape is as seen *along the ray through the hand*; it is first
rotated from the optical axis onto that ray. The hand's translation ``t`` is then the
least-squares fit of the projection of ``shape + t`` to the 2D landmarks: a closed-form
linear solve (each landmark gives two equations linear in ``t`` after multiplying out the
depth) refined by Gauss-Newton on the pixel reprojection error. With ``snap_to_2d`` each
joint is finally moved along its own camera ray to the fitted depth, so the keypoints
project exactly onto the detected landmarks (the overlay and the pixel-aligned image
features then agree with the photo) while keeping the metric depth of the fit.

Camera intrinsics come from :mod:`core.detect.intrinsics` (a file, EXIF, or the
documented default).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.detect.detector import HandDetection, ImageDetection
from core.detect.handedness import chirality_score
from core.detect.skeleton_fit import FitOptions, HandFit, HandObservation, fit_hands
from core.hand.joints import MANO_JOINT_NAMES
from core.types import Camera, TwoHandKeypoints

# Joints of the (nearly rigid) palm. ``finger_weight`` < 1 lets the fit trust the palm more
# than the fingers; on the InterHand2.6M samples weighting made no difference (MediaPipe's
# world hands there are 0.5-0.8x the true size overall, palm included in the fit), so the
# default weights all joints equally. See docs/detection.md.
PALM_JOINTS = tuple(MANO_JOINT_NAMES.index(n) for n in
                    ("wrist", "thumb_cmc", "index_mcp", "middle_mcp", "ring_mcp", "pinky_mcp"))
FINGER_WEIGHT = 1.0
LIFTING_METHODS = ("skeleton", "world")
DEFAULT_METHOD = "skeleton"
# MediaPipe gives a hand's relief twice: its "world" landmarks (a metric 3D hand from their own
# regression head) and the relative depth ``z`` of its image landmarks. The two err
# differently, and their mean (each scaled to unit RMS size) gave the skeleton fit better
# poses than either alone on the synthetic renders (84 frames, 113 hands; chosen there, not on
# the real frames): MPJPE mean 66.5 -> 63.3 mm, median 39.8 -> 39.0, root-vector median
# 136 -> 122 mm against the world landmarks alone (docs/detection.md; see depth_hint).
DEPTH_CUES = ("both", "world", "landmarks")
DEFAULT_DEPTH_CUE = "both"


def _ray_rotation(direction: np.ndarray) -> np.ndarray:
    """Rotation taking the optical axis (0, 0, 1) onto unit ``direction`` (smallest angle)."""
    z = np.array([0.0, 0.0, 1.0])
    d = direction / np.linalg.norm(direction)
    axis = np.cross(z, d)
    s, c = np.linalg.norm(axis), float(np.dot(z, d))
    if s < 1e-12:
        return np.eye(3)
    k = axis / s
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + s * kx + (1 - c) * kx @ kx


def fit_translation(points_m: np.ndarray, uv_px: np.ndarray, K: np.ndarray,
                    weights: np.ndarray | None = None, iterations: int = 10) -> np.ndarray:
    """The translation ``t`` (3,) minimising the squared pixel error between the
    projection of ``points_m + t`` ((N, 3) metres, camera axes) and ``uv_px`` (N, 2).

    Linear start: ``u (Z + tz) = fx (X + tx) + cx (Z + tz)`` (and the same for v) is
    linear in ``t``; then Gauss-Newton on the true reprojection error. Exact (to float
    precision) when the points are an exact rigid translate of the observed ones."""
    P = np.asarray(points_m, dtype=np.float64)
    uv = np.asarray(uv_px, dtype=np.float64)
    K = np.asarray(K, dtype=np.float64)
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    w = np.ones(len(P)) if weights is None else np.asarray(weights, dtype=np.float64)
    sw = np.sqrt(w)
    du, dv = uv[:, 0] - cx, uv[:, 1] - cy
    A = np.concatenate([
        np.stack([np.full(len(P), fx), np.zeros(len(P)), -du], axis=1),
        np.stack([np.zeros(len(P)), np.full(len(P), fy), -dv], axis=1),
    ])
    b = np.concatenate([du * P[:, 2] - fx * P[:, 0], dv * P[:, 2] - fy * P[:, 1]])
    sw2 = np.concatenate([sw, sw])
    t = np.linalg.lstsq(A * sw2[:, None], b * sw2, rcond=None)[0]
    for _ in range(iterations):
        X = P + t
        z = X[:, 2]
        if np.any(z <= 1e-6):
            break
        pred = np.stack([fx * X[:, 0] / z + cx, fy * X[:, 1] / z + cy], axis=1)
        r = (pred - uv).reshape(-1)  # u0, v0, u1, v1, ...
        J = np.zeros((len(P), 2, 3))
        J[:, 0, 0] = fx / z
        J[:, 0, 2] = -fx * X[:, 0] / z**2
        J[:, 1, 1] = fy / z
        J[:, 1, 2] = -fy * X[:, 1] / z**2
        J = J.reshape(-1, 3)
        wr = np.repeat(w, 2)
        H = J.T @ (J * wr[:, None])
        step = np.linalg.solve(H + 1e-12 * np.eye(3), J.T @ (wr * r))
        t = t - step
        if np.linalg.norm(step) < 1e-12:
            break
    return t


def world_shape_in_camera(hand: HandDetection, camera: Camera, ray_correction: bool = True) -> np.ndarray:
    """MediaPipe's world landmarks of ``hand`` (21, 3), centred, with the chirality of the
    resolved side and (``ray_correction``) turned from the optical axis onto the hand's ray."""
    K = np.asarray(camera.K, dtype=np.float64)
    shape = _with_side_chirality(np.asarray(hand.world_m, dtype=np.float64), hand.side)
    if ray_correction:
        centre_px = hand.landmarks_px.mean(axis=0)
        ray = np.linalg.solve(K, np.array([centre_px[0], centre_px[1], 1.0]))
        shape = shape @ _ray_rotation(ray).T
    return shape


def landmark_shape_in_camera(hand: HandDetection, camera: Camera) -> np.ndarray:
    """MediaPipe's image landmarks of ``hand`` with their relative depth as a centred (21, 3)
    shape in camera axes, in units of the wrist's depth: MediaPipe scales its z like x and
    measures it from the wrist, so a landmark lies at ``d = 1 + depth_px / fx`` wrist depths,
    and at ``(x d, y d, d)`` with ``x = (u - cx) / fx``, ``y = (v - cy) / fy`` (its pixel ray).
    Its chirality is MediaPipe's."""
    K = np.asarray(camera.K, dtype=np.float64)
    uv = np.asarray(hand.landmarks_px, dtype=np.float64)
    d = 1.0 + np.asarray(hand.depth_px, dtype=np.float64) / K[0, 0]
    shape = np.stack([(uv[:, 0] - K[0, 2]) / K[0, 0] * d, (uv[:, 1] - K[1, 2]) / K[1, 1] * d, d], axis=1)
    return shape - shape.mean(axis=0)


def depth_hint(hand: HandDetection, camera: Camera, ray_correction: bool = True,
               depth_cue: str = DEFAULT_DEPTH_CUE) -> np.ndarray:
    """The relative 3D shape whose bones' depth directions the skeleton fit is pulled towards:
    ``"world"`` (:func:`world_shape_in_camera`), ``"landmarks"``
    (:func:`landmark_shape_in_camera`, mirrored in depth if its chirality is not the side's) or
    ``"both"``: their mean, each scaled to unit RMS size first (only directions matter to the
    fit). In "both" the world shape stands alone where the landmarks' relief is flat (a
    detector without depth, e.g. the encoder's second opinion) or has the other side's
    chirality (the side was decided against it: 18 of 113 hands on the renders, 1 of 4 on the
    real frames). On the renders, leaving such a relief out beat averaging it in and mirroring
    it: MPJPE mean 63.0 vs 63.5 and 63.2 mm, wrist error 299 vs 319 and 304 mm (measured with
    a weak-perspective version of the landmark shape)."""
    return _hint_from(world_shape_in_camera(hand, camera, ray_correction), hand, camera, depth_cue)


def _hint_from(world: np.ndarray, hand: HandDetection, camera: Camera, depth_cue: str) -> np.ndarray:
    """:func:`depth_hint` given the hand's world shape (computed once by its callers)."""
    if depth_cue not in DEPTH_CUES:
        raise ValueError(f"depth cue must be one of {DEPTH_CUES}, got {depth_cue!r}")
    if depth_cue == "landmarks":
        return _with_side_chirality(landmark_shape_in_camera(hand, camera), hand.side)
    landmarks = landmark_shape_in_camera(hand, camera)
    has_relief = bool(np.any(np.asarray(hand.depth_px)))  # a detector without depth gives zeros
    if depth_cue == "world" or not has_relief or not _has_side_chirality(landmarks, hand.side):
        return world
    return 0.5 * (_unit_size(world) + _unit_size(landmarks))


def _has_side_chirality(shape: np.ndarray, side: str) -> bool:
    return chirality_score(shape) * (1.0 if side == "right" else -1.0) >= 0


def _with_side_chirality(shape: np.ndarray, side: str) -> np.ndarray:
    """``shape`` centred and, where its chirality is not that of ``side`` (MediaPipe's 3D
    outputs sometimes disagree with its image landmarks), mirrored in depth: that keeps its
    projection and flips its chirality."""
    shape = shape - shape.mean(axis=0)
    if not _has_side_chirality(shape, side):
        shape[:, 2] = -shape[:, 2]
    return shape


def _unit_size(shape: np.ndarray) -> np.ndarray:
    centred = shape - shape.mean(axis=0)
    rms = float(np.sqrt(np.mean(np.sum(centred**2, axis=1))))
    return centred / max(rms, 1e-12)


def lift_hand(hand: HandDetection, camera: Camera, snap_to_2d: bool = True,
              ray_correction: bool = True, finger_weight: float = FINGER_WEIGHT) -> np.ndarray:
    """(21, 3) camera-frame keypoints in metres (``mano`` order) for one detected hand, by
    translating MediaPipe's world landmarks (the ``"world"`` lifting)."""
    K = np.asarray(camera.K, dtype=np.float64)
    shape = world_shape_in_camera(hand, camera, ray_correction)
    weights = np.full(len(shape), finger_weight)
    weights[list(PALM_JOINTS)] = 1.0
    t = fit_translation(shape, hand.landmarks_px, K, weights)
    points = shape + t
    if snap_to_2d:
        points = camera.backproject(hand.landmarks_px, points[:, 2])
    return points


def observation_of(hand: HandDetection, camera: Camera, ray_correction: bool = True,
                   depth_cue: str = DEFAULT_DEPTH_CUE) -> HandObservation:
    """What the skeleton fit sees of a detected hand: its 2D landmarks, a relative 3D shape for
    the bones' depth directions (:func:`depth_hint`), the detector's score, and the depth at
    which MediaPipe's metric world hand fits the landmarks (for the relative depth of two hands)."""
    world = world_shape_in_camera(hand, camera, ray_correction)
    hint = _hint_from(world, hand, camera, depth_cue)
    landmarks = np.asarray(hand.landmarks_px, dtype=np.float64)
    wrist = world[0] + fit_translation(world, landmarks, np.asarray(camera.K, dtype=np.float64))
    return HandObservation(hand.side, landmarks, hint, float(hand.label_score), float(wrist[2]))


@dataclass
class LiftedHands:
    """Lifted keypoints and, for the skeleton lifting, each hand's fit (per-joint confidence)."""

    keypoints: TwoHandKeypoints
    fits: dict[str, HandFit] = field(default_factory=dict)

    def confidence(self, side: str) -> np.ndarray | None:
        fit = self.fits.get(side)
        return None if fit is None else fit.confidence


def lift_detection_with_fits(detection: ImageDetection, camera: Camera, method: str = DEFAULT_METHOD,
                             snap_to_2d: bool | None = None, ray_correction: bool = True,
                             options: FitOptions | None = None,
                             depth_cue: str = DEFAULT_DEPTH_CUE) -> LiftedHands:
    """Both hands (or the one found) lifted by ``method``: ``"skeleton"`` (default; the
    anthropometric skeleton fit, both hands jointly, :mod:`.skeleton_fit`) or ``"world"``
    (MediaPipe's world landmarks translated to fit the 2D). ``snap_to_2d`` (default: on for
    "world", off for "skeleton") moves every joint along its pixel ray onto the landmark.
    ``depth_cue``: the skeleton fit's depth-direction cue (:func:`depth_hint`)."""
    if method not in LIFTING_METHODS:
        raise ValueError(f"lifting method must be one of {LIFTING_METHODS}, got {method!r}")
    if depth_cue not in DEPTH_CUES:
        raise ValueError(f"depth cue must be one of {DEPTH_CUES}, got {depth_cue!r}")
    snap = (method == "world") if snap_to_2d is None else snap_to_2d
    found = [h for h in (detection.hand("left"), detection.hand("right")) if h is not None]
    sides: dict[str, np.ndarray | None] = {"left": None, "right": None}
    fits: dict[str, HandFit] = {}
    if method == "world":
        for hand in found:
            sides[hand.side] = lift_hand(hand, camera, snap, ray_correction)
    elif found:
        for fit, hand in zip(fit_hands([observation_of(h, camera, ray_correction, depth_cue) for h in found],
                                       camera, options), found, strict=True):
            fits[hand.side] = fit
            points = fit.joints_m
            if snap:
                points = camera.backproject(hand.landmarks_px, points[:, 2])
            sides[hand.side] = points
    return LiftedHands(TwoHandKeypoints(left=sides["left"], right=sides["right"]), fits)


def lift_detection(detection: ImageDetection, camera: Camera, snap_to_2d: bool | None = None,
                   ray_correction: bool = True, method: str = DEFAULT_METHOD,
                   depth_cue: str = DEFAULT_DEPTH_CUE) -> TwoHandKeypoints:
    """Both hands (or the one found, the other ``None``) as :class:`TwoHandKeypoints`
    (see :func:`lift_detection_with_fits`)."""
    return lift_detection_with_fits(detection, camera, method, snap_to_2d, ray_correction,
                                    depth_cue=depth_cue).keypoints
