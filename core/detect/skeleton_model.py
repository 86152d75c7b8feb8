"""A kinematic hand skeleton driven by a parameter vector, batched (pure geometry, numpy).

Parameters of one hand (:data:`NUM_PARAMS` = 48 floats):

* ``[0:3]``   global rotation, axis-angle, hand frame -> camera frame;
* ``[3:6]``   wrist position as ``(x/z, y/z, log z)``: the normalised image coordinates of the
  wrist ray and its log depth (depth and size then trade off along one coordinate each);
* ``[6]``     log of the hand length relative to the prior mean (:mod:`.hand_prior`);
* ``[7:27]``  log length factor of each of the 20 bones, indexed by child joint - 1 (``mano``
  order): wrist->thumb CMC, thumb metacarpal, proximal, distal; wrist->index MCP, index proximal,
  middle, distal phalanx; ...; the palm "bones" scale the base-joint position vectors;
* ``[27:47]`` joint angles, radians, (5, 4) row-major, thumb..little finger, each
  ``[base flexion, base abduction, middle flexion, distal flexion]`` (see :mod:`.hand_prior`);
* ``[47]``    palm cupping (ring/little metacarpal flexion), radians.

Fingers are planar chains: after abduction about the pad axis the three segments bend towards
the pad by the accumulated flexion. Left hands are the mirror image (x -> -x) of the right hand
in the hand frame, so the same parameters describe mirror-image poses.
"""

from __future__ import annotations

import numpy as np

from core.detect import hand_prior as P
from core.hand.mirror import mirror_if_left

NUM_PARAMS = 48
ROT, POS, SCALE, BONES, ANGLES, CUP = slice(0, 3), slice(3, 6), 6, slice(7, 27), slice(27, 47), 47
NUM_BONES = 20
BASE_JOINTS = (1, 5, 9, 13, 17)  # thumb CMC and the four MCPs (mano order)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v, axis=-1, keepdims=True)


def _rest_frames() -> tuple[np.ndarray, np.ndarray]:
    """(5, 3) distal and (5, 3) pad directions of each finger's base segment at rest."""
    r, p = np.deg2rad(P.THUMB_REST_RADIAL_DEG), np.deg2rad(P.THUMB_REST_PALMAR_DEG)
    distal = [np.array([np.sin(r) * np.cos(p), np.cos(r) * np.cos(p), np.sin(p)])]
    pads = [_unit(P.THUMB_PAD_DIRECTION - np.dot(P.THUMB_PAD_DIRECTION, distal[0]) * distal[0])]
    for splay in np.deg2rad(P.FINGER_REST_SPLAY_DEG):
        distal.append(np.array([np.sin(splay), np.cos(splay), 0.0]))
        pads.append(np.array([0.0, 0.0, 1.0]))
    return np.array(distal), np.array(pads)


REST_DISTAL, REST_PAD = _rest_frames()
REST_RADIAL = np.cross(REST_DISTAL, REST_PAD)  # abduction direction (+x for the long fingers)


def rest_base_positions() -> np.ndarray:
    """(5, 3) thumb CMC and MCP positions of the prior-mean right hand, in hand lengths."""
    breadth = P.HAND_BREADTH_TO_LENGTH
    mcps = np.stack([P.MCP_RADIAL_FRACTIONS * breadth, P.CARPAL_FRACTION + P.SEGMENT_FRACTIONS[1:, 0],
                     np.zeros(4)], axis=1)
    return np.vstack([P.THUMB_CMC_FRACTIONS, mcps])


REST_BASES = rest_base_positions()
# Segment lengths in hand lengths, (5, 3): the three moving segments of each finger
# (thumb: metacarpal, proximal, distal; long fingers: proximal, middle, distal phalanx).
CHAIN_FRACTIONS = np.vstack([P.SEGMENT_FRACTIONS[0, [0, 1, 3]], P.SEGMENT_FRACTIONS[1:, 1:]])
_REST_VECTORS = np.stack([REST_DISTAL, REST_PAD, REST_RADIAL], axis=1)  # (5, 3, 3)
JOINT_LIMITS_RAD = np.deg2rad(P.JOINT_LIMITS_DEG)
CUP_LIMITS_RAD = np.deg2rad(np.array(P.CUP_LIMITS_DEG))
_CUP_SHARE = np.array([0.0, 0.0, 0.0, 0.5, 1.0])  # thumb..little


def rotation_matrices(axis_angle: np.ndarray) -> np.ndarray:
    """(B, 3) axis-angle -> (B, 3, 3) rotation matrices (Rodrigues; stable at zero)."""
    w = np.asarray(axis_angle, dtype=np.float64)
    theta = np.linalg.norm(w, axis=-1)
    small = theta < 1e-8
    safe = np.where(small, 1.0, theta)
    k = w / safe[:, None]
    s = np.where(small, 0.0, np.sin(theta))[:, None, None]
    c1 = np.where(small, 0.0, 1.0 - np.cos(theta))[:, None, None]
    kx = np.zeros((len(w), 3, 3))
    kx[:, 0, 1], kx[:, 0, 2] = -k[:, 2], k[:, 1]
    kx[:, 1, 0], kx[:, 1, 2] = k[:, 2], -k[:, 0]
    kx[:, 2, 0], kx[:, 2, 1] = -k[:, 1], k[:, 0]
    return np.eye(3)[None] + s * kx + c1 * (kx @ kx)


def rotation_to_axis_angle(R: np.ndarray) -> np.ndarray:
    """(3, 3) rotation -> (3,) axis-angle."""
    c = np.clip((np.trace(R) - 1) / 2, -1.0, 1.0)
    theta = np.arccos(c)
    if theta < 1e-8:
        return np.zeros(3)
    if np.pi - theta < 1e-6:  # 180 degrees: the axis from the symmetric part
        M = (R + np.eye(3)) / 2
        axis = _unit(M[np.argmax(np.diag(M))])
        return axis * theta
    v = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])
    return v / (2 * np.sin(theta)) * theta


def local_joints(params: np.ndarray, side: str) -> np.ndarray:
    """(B, 48) parameters -> (B, 21, 3) joints in the hand frame, metres (``mano`` order)."""
    p = np.atleast_2d(np.asarray(params, dtype=np.float64))
    length = P.HAND_LENGTH_MEAN_M * np.exp(p[:, SCALE])[:, None]  # (B, 1)
    factors = np.exp(p[:, BONES])  # (B, 20), by child joint - 1
    base_idx = np.array(BASE_JOINTS) - 1
    chain_idx = np.array([[j, j + 1, j + 2] for j in BASE_JOINTS])  # (5, 3) child joint - 1 + 1
    bases = REST_BASES[None] * (length * factors[:, base_idx])[..., None]  # (B, 5, 3)
    seg = CHAIN_FRACTIONS[None] * length[..., None] * factors[:, chain_idx]  # (B, 5, 3)
    angles = p[:, ANGLES].reshape(-1, 5, 4)
    # Palm cupping: ring and little metacarpals turn about the distal (y) axis, palmar-wards;
    # one rotation for the base positions and the three frame vectors of every finger.
    alpha = p[:, CUP][:, None] * _CUP_SHARE[None]  # (B, 5)
    ca, sa = np.cos(alpha)[..., None], np.sin(alpha)[..., None]
    v = np.concatenate([bases[:, :, None], np.broadcast_to(_REST_VECTORS, (len(p), 5, 3, 3))], axis=2)
    x, z = v[..., 0].copy(), v[..., 2].copy()
    v[..., 0], v[..., 2] = x * ca + z * sa, z * ca - x * sa
    bases, distal, pad, radial = v[:, :, 0], v[:, :, 1], v[:, :, 2], v[:, :, 3]
    abd = angles[..., 1:2]
    distal = np.cos(abd) * distal + np.sin(abd) * radial
    bend = np.cumsum(angles[..., [0, 2, 3]], axis=-1)  # (B, 5, 3)
    dirs = np.cos(bend)[..., None] * distal[:, :, None] + np.sin(bend)[..., None] * pad[:, :, None]
    chain = bases[:, :, None] + np.cumsum(seg[..., None] * dirs, axis=2)  # (B, 5, 3, 3)
    joints = np.zeros((len(p), 21, 3))
    joints[:, 1::4] = bases
    for k in range(3):
        joints[:, 2 + k::4] = chain[:, :, k]
    return mirror_if_left(joints, side)


def camera_joints(params: np.ndarray, side: str) -> np.ndarray:
    """(B, 48) parameters -> (B, 21, 3) camera-frame joints, metres."""
    p = np.atleast_2d(np.asarray(params, dtype=np.float64))
    local = local_joints(p, side)
    R = rotation_matrices(p[:, ROT])
    z = np.exp(p[:, 5])
    wrist = np.stack([p[:, 3] * z, p[:, 4] * z, z], axis=1)
    return local @ R.transpose(0, 2, 1) + wrist[:, None]


def angles_from_directions(local_joints_m: np.ndarray, side: str) -> np.ndarray:
    """(21, 3) joints in the hand frame (any scale) -> (5, 4) joint angles (radians, no cupping)
    whose chains point along the same bone directions: the inverse of the finger chains,
    clipped to the joint limits. NaN joints leave that finger's angles at 0."""
    X = mirror_if_left(np.array(local_joints_m, dtype=np.float64), side)
    angles = np.zeros((5, 4))
    for f, base in enumerate(BASE_JOINTS):
        d = X[base + 1:base + 4] - X[base:base + 3]
        if np.isnan(d).any() or np.any(np.linalg.norm(d, axis=1) < 1e-9):
            continue
        d = d / np.linalg.norm(d, axis=1, keepdims=True)
        abd = np.arctan2(d[0] @ REST_RADIAL[f], d[0] @ REST_DISTAL[f])
        distal = np.cos(abd) * REST_DISTAL[f] + np.sin(abd) * REST_RADIAL[f]
        bend = np.arctan2(d @ REST_PAD[f], d @ distal)
        angles[f] = (bend[0], abd, bend[1] - bend[0], bend[2] - bend[1])
    angles = (angles + np.pi) % (2 * np.pi) - np.pi
    return np.clip(angles, JOINT_LIMITS_RAD[..., 0], JOINT_LIMITS_RAD[..., 1])


def hand_length_m(params: np.ndarray) -> float:
    """The hand length (wrist to straight middle fingertip) that ``params`` describe, metres."""
    return float(P.HAND_LENGTH_MEAN_M * np.exp(np.asarray(params)[SCALE]))
