"""Keypoint noise that resembles the errors of 3D hand keypoint detectors (input of network K).

Applied per hand, camera frame, metres, ``mano`` order:

* per-joint jitter, larger along the viewing direction (depth is the hardest coordinate);
* whole-finger errors: a finger bent about its base joint or lengthened/shortened;
* a global error of the hand: small rotation about its centre and scale about the wrist;
* a depth offset of the whole hand along its viewing ray;
* occasionally two neighbouring fingers swapped (a classic detector confusion).

Errors are about 8-20 mm MPJPE after middle-MCP alignment at ``level=1``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.types import TwoHandKeypoints

_FINGER_JOINTS = [list(range(1 + 4 * f, 5 + 4 * f)) for f in range(5)]  # mano order, thumb..pinky


@dataclass(frozen=True)
class KeypointNoise:
    """Strengths of the noise terms (``level`` scales all distances and angles)."""

    level: float = 1.0  # multiplies every distance, angle and swap chance below
    jitter_m: tuple[float, float] = (0.002, 0.007)  # per-joint std range (image-plane axes)
    depth_jitter_factor: float = 1.6  # the jitter's std along the viewing ray, relative
    # Whole-finger errors: chance per finger, then a bend about its base (std, degrees) and a
    # relative change of its length (std).
    finger_error_prob: float = 0.3
    finger_bend_deg: float = 20.0
    finger_scale: float = 0.12
    hand_rotation_deg: float = 8.0  # std of the whole hand's rotation about its centre
    hand_scale: float = 0.06  # std of the relative scale about the wrist
    depth_offset_m: float = 0.015  # std of the slide along the viewing ray
    swap_prob: float = 0.05  # chance per hand that two neighbouring fingers are swapped


def _rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    k = axis / np.linalg.norm(axis)
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * K + (1 - np.cos(angle)) * K @ K


def perturb_hand(
    joints_cam_m: np.ndarray, rng: np.random.Generator, noise: KeypointNoise | None = None
) -> np.ndarray:
    """(21, 3) camera-frame keypoints -> a noisy copy."""
    noise = noise or KeypointNoise()
    j = np.array(joints_cam_m, dtype=np.float64)
    s = noise.level
    # Swapped neighbouring fingers (index..pinky).
    if rng.random() < noise.swap_prob * s:
        f = int(rng.integers(1, 4))
        a, b = _FINGER_JOINTS[f], _FINGER_JOINTS[f + 1]
        j[a], j[b] = j[b].copy(), j[a].copy()
    # Whole-finger errors: bend about the base joint, change the length.
    for chain in _FINGER_JOINTS:
        if rng.random() < noise.finger_error_prob * min(s, 1.0):
            base = j[chain[0]].copy()
            rot = _rotation(rng.normal(size=3), np.deg2rad(rng.normal(0, noise.finger_bend_deg * s)))
            scale = 1.0 + rng.normal(0, noise.finger_scale * s)
            j[chain[1:]] = (j[chain[1:]] - base) @ rot.T * scale + base
    # Global rotation about the centre, scale about the wrist.
    centre = j.mean(0)
    rot = _rotation(rng.normal(size=3), np.deg2rad(rng.normal(0, noise.hand_rotation_deg * s)))
    j = (j - centre) @ rot.T + centre
    j = (j - j[0]) * (1.0 + rng.normal(0, noise.hand_scale * s)) + j[0]
    # Per-joint jitter, stronger along the viewing ray.
    sigma = rng.uniform(*noise.jitter_m) * s
    ray = centre / max(np.linalg.norm(centre), 1e-9)
    jitter = rng.normal(0, sigma, size=(21, 3))
    jitter += np.outer(jitter @ ray, ray) * (noise.depth_jitter_factor - 1.0)
    j = j + jitter
    # Depth offset of the whole hand along its viewing ray.
    j = j + ray * rng.normal(0, noise.depth_offset_m * s)
    return j


def perturb_keypoints(
    keypoints: TwoHandKeypoints, rng: np.random.Generator, noise: KeypointNoise | None = None
) -> TwoHandKeypoints:
    """Noisy copy of both hands (absent hands stay absent)."""
    out = keypoints.copy()
    for side in keypoints.present_sides():
        setattr(out, side, perturb_hand(keypoints.hand(side), rng, noise))
    return out


def mpjpe_middle_aligned_m(pred: np.ndarray, gt: np.ndarray) -> float:
    """Mean per-joint error (metres) after aligning both hands at the middle MCP (joint 9)."""
    p = np.asarray(pred) - np.asarray(pred)[9]
    g = np.asarray(gt) - np.asarray(gt)[9]
    return float(np.linalg.norm(p - g, axis=-1).mean())
