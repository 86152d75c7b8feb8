"""Hand shapes and poses within anatomical joint limits, and forward kinematics to 21 keypoints.

A pose is 4 angles per finger (thumb..pinky), radians:
``[base flexion, base abduction, middle-joint flexion, distal-joint flexion]`` -- for the long
fingers MCP flex/abd, PIP, DIP; for the thumb CMC flex (opposition)/abd, MCP, IP. Flexion bends
a finger towards its pad side; positive abduction leans it radially (towards the thumb) for the
long fingers. Keypoints come out in the template hand frame (:mod:`.template`), metres, ``mano``
order; left hands are mirrored (x -> -x).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from core.hand.joints import FINGERS, NUM_JOINTS
from core.hand.mirror import mirror_if_left
from core.synth import template as T

# Joint limits, degrees: (finger, dof, [min, max]); dof order as in the module docstring.
JOINT_LIMITS_DEG = np.array(
    [
        [[-20, 50], [-25, 25], [-10, 60], [-15, 80]],  # thumb: CMC flex, CMC abd, MCP, IP
        [[-20, 90], [-15, 25], [0, 110], [-5, 80]],  # index
        [[-20, 90], [-15, 15], [0, 110], [-5, 80]],  # middle
        [[-20, 90], [-20, 12], [0, 110], [-5, 80]],  # ring
        [[-20, 90], [-30, 12], [0, 110], [-5, 80]],  # pinky
    ],
    dtype=np.float64,
)
JOINT_LIMITS_RAD = np.deg2rad(JOINT_LIMITS_DEG)

POSE_STYLES = ("relaxed", "flat", "spread", "fist", "grip", "point", "pinch", "claw", "random")


@dataclass(frozen=True)
class HandPose:
    """Joint angles (5, 4), radians, see the module docstring."""

    angles: np.ndarray

    def clipped(self) -> HandPose:
        return HandPose(np.clip(self.angles, JOINT_LIMITS_RAD[..., 0], JOINT_LIMITS_RAD[..., 1]))


def _rotate(v: np.ndarray, axis: np.ndarray, angle: float) -> np.ndarray:
    """Rodrigues: rotate vector(s) ``v`` about the unit ``axis`` by ``angle`` (right-handed)."""
    c, s = np.cos(angle), np.sin(angle)
    return v * c + np.cross(axis, v) * s + axis * np.dot(axis, v) * (1.0 - c)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def _finger_rest_frames() -> list[tuple[np.ndarray, np.ndarray]]:
    """(distal direction, pad direction) at the base joint of each finger, template frame."""
    frames = []
    r, p = np.deg2rad(T.THUMB_REST_RADIAL_DEG), np.deg2rad(T.THUMB_REST_PALMAR_DEG)
    thumb_dir = np.array([np.sin(r) * np.cos(p), np.cos(r) * np.cos(p), np.sin(p)])
    pad = T.THUMB_PAD_DIRECTION - np.dot(T.THUMB_PAD_DIRECTION, thumb_dir) * thumb_dir
    frames.append((thumb_dir, _unit(pad)))
    for splay in np.deg2rad(T.FINGER_REST_SPLAY_DEG):
        frames.append((np.array([np.sin(splay), np.cos(splay), 0.0]), np.array([0.0, 0.0, 1.0])))
    return frames


_REST_FRAMES = _finger_rest_frames()


def base_joint_positions_m(shape: T.HandShapeParams) -> np.ndarray:
    """(5, 3) thumb CMC and the four MCPs of a right hand, template frame, metres."""
    width = np.array([shape.palm_width, 1.0, 1.0])
    mcps = T.MCP_POSITIONS_M * width
    cmc = T.THUMB_CMC_M * width
    return np.vstack([cmc, mcps]) * shape.scale


def pose_keypoints(shape: T.HandShapeParams, pose: HandPose, side: str = "right") -> np.ndarray:
    """Forward kinematics: (21, 3) keypoints, ``mano`` order, template hand frame, metres.
    The left hand is the mirror image (x -> -x) of the right hand with the same parameters."""
    angles = np.asarray(pose.angles, dtype=np.float64)
    bases = base_joint_positions_m(shape)
    lengths = T.PHALANX_LENGTHS_M * shape.scale * np.asarray(shape.finger_length)[:, None]
    joints = np.zeros((NUM_JOINTS, 3))
    for f in range(len(FINGERS)):
        distal, pad = _REST_FRAMES[f]
        base_flex, base_abd, mid_flex, dist_flex = angles[f]
        # Abduction turns the finger about its pad axis (positive = radially for long fingers).
        distal = _rotate(distal, -pad, base_abd)
        flex_axis = _unit(np.cross(distal, pad))  # flexion turns distal towards pad
        chain = [bases[f]]
        bend = 0.0
        for k, theta in enumerate((base_flex, mid_flex, dist_flex)):
            bend += theta
            direction = _rotate(distal, flex_axis, bend)
            chain.append(chain[-1] + lengths[f, k] * direction)
        joints[1 + 4 * f : 5 + 4 * f] = chain
    return mirror_if_left(joints, side)


# ----------------------------------------------------------------------------------------
# Sampling
# ----------------------------------------------------------------------------------------
def sample_shape(rng: np.random.Generator) -> T.HandShapeParams:
    """A random adult hand: overall size +-12 %, per-finger length +-5 %, palm width +-8 %,
    finger thickness +-10 %, palm thickness 25-30 mm."""
    return T.HandShapeParams(
        scale=float(rng.uniform(0.88, 1.12)),
        finger_length=rng.uniform(0.95, 1.05, size=5),
        palm_width=float(rng.uniform(0.92, 1.08)),
        finger_thickness=float(rng.uniform(0.9, 1.1)),
        palm_thickness_m=float(rng.uniform(*T.PALM_THICKNESS_RANGE_M)),
    )


def _curl(rng, amount: np.ndarray, spread: float, jitter_deg: float) -> np.ndarray:
    """Long-finger angles (4, 4) from per-finger curl amounts in [0, 1] with the natural
    coupling (DIP ~ 2/3 PIP) and a shared spread in [-1, 1]."""
    lo, hi = JOINT_LIMITS_RAD[1:, :, 0], JOINT_LIMITS_RAD[1:, :, 1]
    out = np.zeros((4, 4))
    out[:, 0] = amount * np.deg2rad(85)
    out[:, 2] = amount * np.deg2rad(100)
    out[:, 3] = out[:, 2] * 0.66
    fan = np.array([1.0, 0.1, -0.8, -1.3])  # index leans radially, ring/pinky ulnarly
    out[:, 1] = spread * np.deg2rad(12) * fan * (1 - 0.6 * amount)
    out += np.deg2rad(jitter_deg) * rng.normal(size=(4, 4))
    return np.clip(out, lo, hi)


def sample_pose(rng: np.random.Generator, style: str = "random") -> HandPose:
    """A pose of a named ``style`` (one of :data:`POSE_STYLES`) with random variation,
    always inside :data:`JOINT_LIMITS_DEG`."""
    d = np.deg2rad
    thumb = np.array([rng.uniform(-5, 25), rng.uniform(-10, 15), rng.uniform(0, 30), rng.uniform(0, 35)])
    if style == "flat":
        fingers = _curl(rng, rng.uniform(0.0, 0.12, 4), rng.uniform(-0.5, 0.3), 3)
        thumb = np.array([rng.uniform(-10, 5), rng.uniform(-15, 5), rng.uniform(0, 10), rng.uniform(-5, 10)])
    elif style == "relaxed":
        fingers = _curl(
            rng, rng.uniform(0.1, 0.4, 4) + np.array([0, 0.03, 0.06, 0.1]), rng.uniform(-0.3, 0.5), 5
        )
    elif style == "spread":
        fingers = _curl(rng, rng.uniform(0.0, 0.15, 4), rng.uniform(0.8, 1.0), 3)
        thumb = np.array(
            [rng.uniform(-20, 0), rng.uniform(-25, -10), rng.uniform(0, 10), rng.uniform(-10, 10)]
        )
    elif style == "fist":
        fingers = _curl(rng, rng.uniform(0.85, 1.0, 4), 0.0, 4)
        thumb = np.array([rng.uniform(30, 50), rng.uniform(0, 20), rng.uniform(30, 55), rng.uniform(20, 60)])
    elif style == "grip":
        fingers = _curl(rng, rng.uniform(0.45, 0.7, 4), rng.uniform(-0.3, 0.2), 4)
        thumb = np.array([rng.uniform(20, 45), rng.uniform(5, 25), rng.uniform(5, 35), rng.uniform(5, 40)])
    elif style == "point":
        fingers = _curl(rng, np.array([rng.uniform(0, 0.15), *rng.uniform(0.8, 1.0, 3)]), 0.0, 4)
        thumb = np.array([rng.uniform(25, 45), rng.uniform(0, 20), rng.uniform(20, 50), rng.uniform(10, 50)])
    elif style == "pinch":
        fingers = _curl(rng, np.array([0.5, *rng.uniform(0.1, 0.6, 3)]) + rng.uniform(-0.1, 0.1), 0.0, 4)
        thumb = np.array([rng.uniform(30, 50), rng.uniform(10, 25), rng.uniform(10, 30), rng.uniform(5, 30)])
    elif style == "claw":
        fingers = _curl(rng, rng.uniform(0.3, 0.6, 4), rng.uniform(0, 0.8), 5)
        fingers[:, 0] = d(rng.uniform(-15, 10, 4))  # MCPs straight or hyperextended, PIP/DIP bent
    elif style == "random":
        fingers = _curl(rng, rng.uniform(0, 1, 4), rng.uniform(-1, 1), 12)
        thumb = rng.uniform(JOINT_LIMITS_DEG[0, :, 0], JOINT_LIMITS_DEG[0, :, 1])
    else:
        raise ValueError(f"unknown pose style {style!r}; known: {POSE_STYLES}")
    angles = np.vstack([d(thumb), fingers])
    return HandPose(angles).clipped()
