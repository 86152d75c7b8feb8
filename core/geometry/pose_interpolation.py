"""Keyframe interpolation of hand poses that keeps bone lengths (numpy, no torch).

A pose is 21 joints in the ``mano`` order (camera frame, metres). Between two keyframes
the wrist moves linearly in camera space and everything else is rotations: the palm's
orientation (a frame built from the wrist, index MCP and pinky MCP) is slerped, and each
bone's direction *in that palm frame* is slerped too; joints are then rebuilt from the
wrist outwards with the bone lengths interpolated linearly (equal lengths stay exactly
equal). A rigid motion of the whole hand is therefore interpolated as a rigid motion.
"""

from __future__ import annotations

import numpy as np

from core.hand.joints import MANO_PARENTS, NUM_JOINTS

_WRIST, _INDEX_MCP, _PINKY_MCP = 0, 5, 17
_EPS = 1e-12


def _unit(v: np.ndarray) -> np.ndarray:
    n = np.linalg.norm(v, axis=-1, keepdims=True)
    return v / np.maximum(n, _EPS)


def palm_frame(joints: np.ndarray) -> np.ndarray:
    """(3, 3) rotation whose columns are the palm's axes in camera coordinates: x from the
    pinky MCP to the index MCP, z the palm normal, y = z x x."""
    j = np.asarray(joints, dtype=np.float64)
    x = _unit(j[_INDEX_MCP] - j[_PINKY_MCP])
    toward_fingers = (j[_INDEX_MCP] + j[_PINKY_MCP]) / 2 - j[_WRIST]
    z = _unit(np.cross(x, toward_fingers))
    y = np.cross(z, x)
    return np.stack([x, y, z], axis=1)


def matrix_to_quaternion(m: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix (Shepperd's method)."""
    m = np.asarray(m, dtype=np.float64)
    trace = np.trace(m)
    if trace > 0:
        s = 2.0 * np.sqrt(trace + 1.0)
        q = [0.25 * s, (m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s]
    else:
        i = int(np.argmax(np.diag(m)))
        j, k = (i + 1) % 3, (i + 2) % 3
        s = 2.0 * np.sqrt(max(1.0 + m[i, i] - m[j, j] - m[k, k], _EPS))
        q = np.empty(4)
        q[0] = (m[k, j] - m[j, k]) / s
        q[1 + i] = 0.25 * s
        q[1 + j] = (m[j, i] + m[i, j]) / s
        q[1 + k] = (m[k, i] + m[i, k]) / s
    q = np.asarray(q, dtype=np.float64)
    return q / np.linalg.norm(q)


def quaternion_to_matrix(q: np.ndarray) -> np.ndarray:
    w, x, y, z = np.asarray(q, dtype=np.float64) / np.linalg.norm(q)
    return np.array([
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ])  # fmt: skip


def slerp_unit(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """Spherical interpolation between unit vectors (any length, last axis); antipodal
    pairs turn about an arbitrary perpendicular axis."""
    a, b = _unit(np.asarray(a, np.float64)), _unit(np.asarray(b, np.float64))
    dot = np.clip(np.sum(a * b, axis=-1, keepdims=True), -1.0, 1.0)
    omega = np.arccos(dot)
    sin_omega = np.sin(omega)
    near = sin_omega < 1e-9
    safe = np.where(near, 1.0, sin_omega)
    out = (np.sin((1 - t) * omega) * a + np.sin(t * omega) * b) / safe
    linear = _unit((1 - t) * a + t * b)
    return _unit(np.where(near, linear, out))


def slerp_quaternion(qa: np.ndarray, qb: np.ndarray, t: float) -> np.ndarray:
    qa, qb = np.asarray(qa, np.float64), np.asarray(qb, np.float64)
    if np.dot(qa, qb) < 0:  # the shorter way round
        qb = -qb
    return slerp_unit(qa, qb, t)


def interpolate_hand(a: np.ndarray, b: np.ndarray, t: float) -> np.ndarray:
    """(21, 3) pose at ``t`` in [0, 1] between keyframe poses ``a`` (t=0) and ``b`` (t=1)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape != (NUM_JOINTS, 3) or b.shape != (NUM_JOINTS, 3):
        raise ValueError(f"hand poses must be ({NUM_JOINTS}, 3), got {a.shape} and {b.shape}")
    if not 0.0 <= t <= 1.0:
        raise ValueError(f"t must be in [0, 1], got {t}")
    frame_a, frame_b = palm_frame(a), palm_frame(b)
    frame_t = quaternion_to_matrix(
        slerp_quaternion(matrix_to_quaternion(frame_a), matrix_to_quaternion(frame_b), t)
    )
    out = np.empty_like(a)
    out[_WRIST] = (1 - t) * a[_WRIST] + t * b[_WRIST]
    for child in range(1, NUM_JOINTS):  # parents come before children in the mano order
        parent = MANO_PARENTS[child]
        bone_a, bone_b = a[child] - a[parent], b[child] - b[parent]
        length = (1 - t) * np.linalg.norm(bone_a) + t * np.linalg.norm(bone_b)
        local = slerp_unit(frame_a.T @ bone_a, frame_b.T @ bone_b, t)
        out[child] = out[parent] + length * (frame_t @ local)
    return out


def bone_lengths(joints: np.ndarray) -> np.ndarray:
    """(20,) lengths of the bones child -> parent, in the joints' units."""
    j = np.asarray(joints, dtype=np.float64)
    return np.array([np.linalg.norm(j[c] - j[MANO_PARENTS[c]]) for c in range(1, NUM_JOINTS)])


def rigid_transform_hand(joints: np.ndarray, rotation: np.ndarray | None = None, scale: float = 1.0,
                         translation: np.ndarray | None = None, pivot: np.ndarray | None = None
                         ) -> np.ndarray:  # fmt: skip
    """Rotate and scale a hand about ``pivot`` (default: its wrist), then translate it."""
    j = np.asarray(joints, dtype=np.float64)
    pivot = j[_WRIST] if pivot is None else np.asarray(pivot, dtype=np.float64)
    r = np.eye(3) if rotation is None else np.asarray(rotation, dtype=np.float64)
    moved = (j - pivot) @ r.T * float(scale) + pivot
    return moved if translation is None else moved + np.asarray(translation, dtype=np.float64)


def rotation_about_axis(axis: np.ndarray, angle_rad: float) -> np.ndarray:
    """Rodrigues' rotation matrix."""
    k = _unit(np.asarray(axis, dtype=np.float64))
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle_rad) * kx + (1 - np.cos(angle_rad)) * kx @ kx
